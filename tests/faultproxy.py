"""A test-only TCP proxy that damages a 0x00-delimited frame stream (SpiNNaker 2 link tests).

``FaultProxy(target_port, flip=0.01, drop=0.01)`` listens on 127.0.0.1 (a free port; its
``url`` is ``socket://127.0.0.1:PORT``) and forwards each connection to ``target_port`` on
127.0.0.1, both ways. On the way it flips bytes (each byte with probability ``flip``, XOR a
random non-zero value, delimiters included), drops, duplicates and delays whole frames (each
with its probability); delays hold the stream, so order is kept. Decisions come from
``random.Random(seed)`` per direction; ``counters`` counts what was done.
"""

from __future__ import annotations

import math
import random
import select
import socket
import threading
import time
from collections import Counter
from typing import Self


class _Direction:
    """Faults for one direction of a stream."""

    def __init__(self, proxy: FaultProxy, seed: int) -> None:
        self.proxy = proxy
        self.rng = random.Random(seed)
        self.buffer = bytearray()
        self.until_flip = self._gap()

    def _gap(self) -> int:
        """Bytes before the next flip: geometric with mean 1 / flip."""
        if self.proxy.flip <= 0:
            return 1 << 62
        return int(math.log(1.0 - self.rng.random()) / math.log(1.0 - self.proxy.flip))

    def process(self, data: bytes) -> bytes:
        """Bytes to forward for ``data`` received (whole frames only)."""
        self.buffer += data
        out = bytearray()
        while (end := self.buffer.find(0)) >= 0:
            frame = bytearray(self.buffer[:end + 1])
            del self.buffer[:end + 1]
            out += self._damage(frame)
        return bytes(out)

    def _damage(self, frame: bytearray) -> bytes:
        counters, rng = self.proxy.counters, self.rng
        counters["frames"] += 1
        flipped = position = 0
        while position + self.until_flip < len(frame):
            position += self.until_flip
            frame[position] ^= rng.randrange(1, 256)
            flipped += 1
            position += 1
            self.until_flip = self._gap()
        self.until_flip -= len(frame) - position
        if flipped:
            counters["flipped_bytes"] += flipped
            counters["corrupted_frames"] += 1
        if rng.random() < self.proxy.drop:
            counters["dropped"] += 1
            return b""
        if rng.random() < self.proxy.delay:
            counters["delayed"] += 1
            time.sleep(self.proxy.delay_s)
        if rng.random() < self.proxy.duplicate:
            counters["duplicated"] += 1
            return bytes(frame) * 2
        return bytes(frame)


class FaultProxy:
    """See the module docstring. Use as a context manager (or ``close()``)."""

    def __init__(self, target_port: int, flip: float = 0.0, drop: float = 0.0,
                 duplicate: float = 0.0, delay: float = 0.0, delay_s: float = 0.001,
                 seed: int = 0) -> None:
        self.target_port = target_port
        self.flip, self.drop, self.duplicate = flip, drop, duplicate
        self.delay, self.delay_s, self.seed = delay, delay_s, seed
        self.counters: Counter[str] = Counter()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"socket://127.0.0.1:{self._listener.getsockname()[1]}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        connections = 0
        while not self._stop.is_set():
            if not select.select([self._listener], [], [], 0.05)[0]:
                continue
            client, _ = self._listener.accept()
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            for each in (client, upstream):
                each.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            seed = self.seed * 1000 + 2 * connections
            connections += 1
            self._relay(client, upstream, _Direction(self, seed), _Direction(self, seed + 1))

    def _relay(self, client: socket.socket, upstream: socket.socket, to_device: _Direction,
               to_host: _Direction) -> None:
        """Forward until either side closes (one connection at a time)."""
        routes = {client: (upstream, to_device), upstream: (client, to_host)}
        try:
            while not self._stop.is_set():
                for source in select.select(list(routes), [], [], 0.05)[0]:
                    data = source.recv(1 << 16)
                    if not data:
                        return
                    sink, direction = routes[source]
                    sink.sendall(direction.process(data))
        except OSError:
            return
        finally:
            client.close()
            upstream.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._listener.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
