"""The multicast router of a SpiNNaker 2 chip (spec A1, A4.1, A4.4).

A packet is a 32-bit key and a 32-bit payload. The router holds up to 16,384 (key, mask)
entries; a packet goes where the first entry with ``packet_key & mask == key`` sends it (a set
of PEs, and the host port if the entry's host flag is set). A packet that matches no entry is
dropped and counted. Packets sent during tick t are delivered at tick t + 1 (one-tick synaptic
delay, py-spinnaker2's default ``conn_delay = 1``).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

ROUTER_ENTRIES = 16_384
"""Associative (key, mask) entries of the router (SpiNNaker 2 datasheet)."""
HOST = -1
"""The destination id of the host port in ``Router.deliver``'s bookkeeping."""


@dataclass(frozen=True)
class Packets:
    """A batch of packets: ``keys`` and ``payloads``, (n,) uint32 each, in sending order."""

    keys: np.ndarray
    payloads: np.ndarray

    @staticmethod
    def empty() -> Packets:
        return Packets(np.zeros(0, np.uint32), np.zeros(0, np.uint32))

    @staticmethod
    def concat(batches: list[Packets]) -> Packets:
        batches = [batch for batch in batches if len(batch)]
        if not batches:
            return Packets.empty()
        if len(batches) == 1:
            return batches[0]
        return Packets(np.concatenate([batch.keys for batch in batches]),
                       np.concatenate([batch.payloads for batch in batches]))

    def __len__(self) -> int:
        return int(self.keys.size)

    def select(self, mask: np.ndarray) -> Packets:
        return Packets(self.keys[mask], self.payloads[mask])


class RouterFullError(ValueError):
    """The router already holds its 16,384 entries."""


@dataclass(frozen=True)
class Route:
    """One router entry: packets whose ``key & mask == key`` go to ``destinations`` (PE ids)
    and, if ``host``, to the host port."""

    key: int
    mask: int
    destinations: frozenset[int]
    host: bool = False


@dataclass
class Router:
    """First-match multicast routing with a one-tick delivery delay.

    Attributes:
        capacity: entries the router can hold.
        dropped: packets that matched no entry, since construction or ``clear``.
    """

    capacity: int = ROUTER_ENTRIES
    routes: list[Route] = field(default_factory=list)
    dropped: int = 0
    _in_flight: dict[int, list[tuple[int, Packets]]] = field(default_factory=dict)

    def add(self, key: int, mask: int, destinations: set[int] | frozenset[int],
            host: bool = False) -> None:
        """Append an entry (it matches after every earlier one). Raises RouterFullError when
        the router holds ``capacity`` entries, ValueError for a key outside ``mask``."""
        if len(self.routes) >= self.capacity:
            raise RouterFullError(f"the router is full: it holds {self.capacity:,} entries; "
                                  "merge routes with wider masks")
        if key & ~mask & 0xFFFF_FFFF:
            raise ValueError(f"route key {key:#010x} has bits outside its mask {mask:#010x}")
        self.routes.append(Route(key, mask, frozenset(destinations), host))

    def send(self, tick: int, packets: Packets) -> None:
        """Route packets sent during ``tick``; they arrive at ``tick + 1``. Unmatched packets
        are counted in ``dropped``."""
        if not len(packets):
            return
        entry = self.match(packets.keys)
        self.dropped += int((entry < 0).sum())
        arrivals = self._in_flight.setdefault(tick + 1, [])
        for index in np.unique(entry[entry >= 0]):
            route = self.routes[int(index)]
            batch = packets.select(entry == index)
            arrivals.extend((pe, batch) for pe in sorted(route.destinations))
            if route.host:
                arrivals.append((HOST, batch))

    def match(self, keys: np.ndarray) -> np.ndarray:
        """The index (n,) of the first entry each key matches, −1 for none."""
        if not self.routes:
            return np.full(keys.size, -1, np.int64)
        route_keys = np.array([route.key for route in self.routes], np.uint32)
        masks = np.array([route.mask for route in self.routes], np.uint32)
        hits = (keys[:, None] & masks[None, :]) == route_keys[None, :]
        return np.where(hits.any(axis=1), hits.argmax(axis=1), -1)

    def deliver(self, tick: int) -> tuple[dict[int, Packets], Packets]:
        """The packets arriving at ``tick``: per destination PE, in sending order, and those for
        the host port."""
        grouped: dict[int, list[Packets]] = defaultdict(list)
        for destination, batch in self._in_flight.pop(tick, []):
            grouped[destination].append(batch)
        host = Packets.concat(grouped.pop(HOST, []))
        return {pe: Packets.concat(batches) for pe, batches in grouped.items()}, host

    def clear(self) -> None:
        """Forget packets in flight and the dropped count (the entries stay)."""
        self._in_flight.clear()
        self.dropped = 0
