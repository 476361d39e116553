"""Serve the SpiNNaker 2 emulator on a pseudo-terminal or a TCP socket, so a host reaches it
through pyserial exactly as it would reach a board on a serial port (spec A4.6).

``serve("pty")`` opens a pseudo-terminal pair in raw mode and announces the path to open
(``/dev/pts/N``); ``serve("socket://127.0.0.1:PORT")`` listens on that address (127.0.0.1
when the URL names none; port 0 picks a free one) and announces the URL to open. One client
at a time; a client may leave and another connect. Ctrl-C or SIGTERM stop the server cleanly.
``start_server`` runs ``serve`` in a child process (a fresh interpreter) that leads its own
process group and returns the URL to connect to; the child is stopped when the handle
closes, when this process exits, and on its own when this process is gone.
"""

from __future__ import annotations

import atexit
import functools
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import tty
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Self
from urllib.parse import urlsplit

from simulators.loihi2.isolation import kill_group
from simulators.spinnaker2.chip import Chip
from simulators.spinnaker2.port import DevicePort

POLL_S = 0.2
"""How often a waiting server checks whether it should stop (s)."""


def serve(port: str, numeric: str = "f32", n_pe: int = 152,
          announce: Callable[[str], None] = print,
          stop: Callable[[], bool] | None = None) -> None:
    """Serve a fresh ``Chip(n_pe, numeric)`` on ``port`` ("pty" or "socket://HOST:PORT")
    until Ctrl-C, SIGTERM or ``stop()`` returns True. ``announce`` gets one line that ends
    with the path or URL to connect to. ValueError for a port spec it cannot serve."""
    if port != "pty" and not port.startswith("socket://"):
        raise ValueError(f"cannot serve on {port!r}: use pty or socket://127.0.0.1:PORT")
    address = None if port == "pty" else _address(port)
    device = DevicePort(Chip(n_pe=n_pe, numeric=numeric))
    should_stop = stop or (lambda: False)
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        if address is None:
            _serve_pty(device, numeric, n_pe, announce, should_stop)
        else:
            _serve_socket(device, *address, numeric, n_pe, announce, should_stop)
    except KeyboardInterrupt:
        announce("stopped")
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    try:
        number = parts.port
    except ValueError:
        number = None
    if number is None or parts.path not in ("", "/"):
        raise ValueError(f"cannot serve on {url!r}: give socket://HOST:PORT, e.g. "
                         "socket://127.0.0.1:5000 (port 0 picks a free one)")
    return parts.hostname or "127.0.0.1", number


def _serve_pty(device: DevicePort, numeric: str, n_pe: int, announce: Callable[[str], None],
               stop: Callable[[], bool]) -> None:
    master, slave = os.openpty()
    try:
        tty.setraw(master)
        tty.setraw(slave)  # kept open: the pair lives on while hosts come and go
        announce(f"SpiNNaker 2 emulator ({n_pe} PEs, {numeric}) on the pseudo-terminal "
                 f"{os.ttyname(slave)}")
        _pump(master, lambda: os.read(master, 1 << 16), lambda data: _write_fd(master, data),
              device, stop)
    finally:
        os.close(master)
        os.close(slave)


def _write_fd(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _serve_socket(device: DevicePort, host: str, number: int, numeric: str, n_pe: int,
                  announce: Callable[[str], None], stop: Callable[[], bool]) -> None:
    with socket.create_server((host, number)) as server:
        host, number = server.getsockname()[:2]
        announce(f"SpiNNaker 2 emulator ({n_pe} PEs, {numeric}) listening on "
                 f"socket://{host}:{number}")
        while not stop():
            if not select.select([server], [], [], POLL_S)[0]:
                continue
            client, _ = server.accept()
            with client:
                client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                try:
                    _pump(client.fileno(), functools.partial(client.recv, 1 << 16),
                          client.sendall, device, stop)
                except OSError:
                    pass  # the client vanished (reset); wait for the next


def _pump(fd: int, read: Callable[[], bytes], write: Callable[[bytes], None],
          device: DevicePort, stop: Callable[[], bool]) -> None:
    """Frames from ``read`` to the device, its replies to ``write`` (those of one read
    together), until the other end closes (``read`` gives b"") or ``stop()``."""
    buffer = bytearray()
    while not stop():
        if not select.select([fd], [], [], POLL_S)[0]:
            continue
        data = read()
        if not data:
            return
        buffer += data
        if 0 not in buffer:
            continue
        *frames, rest = buffer.split(b"\x00")
        buffer = rest
        out = bytearray()
        for frame in frames:
            for reply in device.replies(bytes(frame)):
                out += reply
                if device.working:  # the request takes long: say so now
                    write(bytes(out))
                    out.clear()
        if out:
            write(bytes(out))


@dataclass
class ServerProcess:
    """A server in a child process; ``url`` is what a host connects to."""

    url: str
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        """SIGTERM to the child's process group, SIGKILL if it is still there after 2 s."""
        atexit.unregister(self.stop)
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=2)
            except (ProcessLookupError, PermissionError, subprocess.TimeoutExpired):
                pass
        kill_group(self.process.pid)
        self.process.kill()
        self.process.wait(timeout=5)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_server(port: str = "socket://127.0.0.1:0", numeric: str = "f32", n_pe: int = 152,
                 timeout: float = 60.0) -> ServerProcess:
    """``serve`` in a new child process that leads its own process group; returns once it
    listens. The child stops with the handle (``stop``, ``with``), at this process's exit,
    and on its own once this process is gone.

    Raises:
        RuntimeError: the child did not announce its port within ``timeout`` s, or died
            (its last error line is named); it is killed in either case.
    """
    command = [sys.executable, "-c", "from simulators.spinnaker2.server import _child; _child()",
               port, numeric, str(n_pe), str(os.getpid())]
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, sys.path))}
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, start_new_session=True, env=environment)
    server = ServerProcess("", process)
    atexit.register(server.stop)
    try:
        assert process.stdout is not None and process.stderr is not None
        if not select.select([process.stdout], [], [], timeout)[0]:
            raise RuntimeError(f"the device server on {port} did not start within "
                               f"{timeout:g} s; stopped it")
        line = process.stdout.readline().decode().strip()
        if not line:
            process.wait(timeout=5)
            error = process.stderr.read().decode().strip().splitlines() or ["no message"]
            raise RuntimeError(f"the device server on {port} failed to start: {error[-1]}")
    except BaseException:
        server.stop()
        raise
    server.url = line.rsplit(" ", 1)[-1]
    return server


def _child() -> None:
    """Entry of ``start_server``'s child: argv = port, numeric, n_pe, the parent's pid."""
    port, numeric, n_pe, parent = sys.argv[1:5]
    serve(port, numeric, int(n_pe), lambda line: print(line, flush=True),
          stop=lambda: os.getppid() != int(parent))
