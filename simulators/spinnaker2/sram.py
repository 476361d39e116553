"""The SRAM of one SpiNNaker 2 processing element and its allocator (spec A1, A4.2).

A PE has 128 KiB (131,072 B) of SRAM for code and data. Fixed reserves come off the top —
by default 32 KiB of code (ITCM), 4 KiB of stack and heap and 1 KiB for the runtime's
mailbox — leaving 93,184 B for model data. ``Sram.place`` places named regions one after
another (aligned), all or none, and raises ``SramOverflowError`` — whose message is the table
of every region and the shortfall — when they do not fit. Allocation happens when a network is
mapped, before any tick runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PE_SRAM_BYTES = 131_072
"""128 KiB of SRAM per PE (SpiNNaker 2 datasheet)."""
DEFAULT_RESERVES: dict[str, int] = {"code": 32_768, "stack and heap": 4_096, "runtime": 1_024}
"""Bytes kept from model data: the program (ITCM), stack and heap, the runtime's mailbox."""


class SramOverflowError(ValueError):
    """A region does not fit in a PE's SRAM; the message tables every region and the
    shortfall."""


@dataclass(frozen=True)
class Region:
    """A named block of a PE's SRAM: ``offset`` and ``size`` in bytes."""

    name: str
    offset: int
    size: int


@dataclass
class Sram:
    """The SRAM of one PE: the reserves first, then model regions in order of allocation.

    Args:
        pe: the PE's id (for messages).
        total: bytes of SRAM (131,072).
        reserves: name → bytes kept for the runtime (``DEFAULT_RESERVES``).
    """

    pe: int
    total: int = PE_SRAM_BYTES
    reserves: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_RESERVES))
    regions: list[Region] = field(default_factory=list)

    def __post_init__(self) -> None:
        if any(size < 0 for size in self.reserves.values()):
            raise ValueError(f"PE {self.pe}: reserves must be >= 0 bytes, got {self.reserves}")
        if sum(self.reserves.values()) > self.total:
            raise ValueError(f"PE {self.pe}: reserves of {sum(self.reserves.values()):,} B "
                             f"exceed its {self.total:,} B of SRAM")
        if not self.regions:
            offset = 0
            for name, size in self.reserves.items():
                self.regions.append(Region(name, offset, size))
                offset += size

    @property
    def used(self) -> int:
        """Bytes taken, reserves and alignment padding included."""
        last = self.regions[-1] if self.regions else None
        return 0 if last is None else last.offset + last.size

    @property
    def free(self) -> int:
        return self.total - self.used

    @property
    def model_bytes(self) -> int:
        """Bytes of model regions (the reserves excluded)."""
        return sum(region.size for region in self.regions[len(self.reserves):])

    def alloc(self, name: str, size: int, align: int = 4) -> int:
        """Place one region of ``size`` bytes at the next ``align``-byte boundary; returns its
        offset. Raises SramOverflowError (nothing placed) when it does not fit."""
        return self.place([(name, size)], align)[0]

    def place(self, regions: list[tuple[str, int]], align: int = 4) -> list[int]:
        """Place (name, bytes) regions one after another, all or none; returns their offsets.
        Raises SramOverflowError, whose message tables every region of the PE (those that do
        not fit marked) and the shortfall, and places nothing."""
        planned, end = [], self.used
        for name, size in regions:
            if size < 0 or align < 1:
                raise ValueError(f"PE {self.pe}: region {name!r} needs size >= 0, align >= 1")
            offset = -(-end // align) * align
            planned.append(Region(name, offset, size))
            end = offset + size
        if end > self.total:
            raise SramOverflowError(self.describe(planned))
        self.regions.extend(planned)
        return [region.offset for region in planned]

    def describe(self, planned: list[Region] = ()) -> str:  # type: ignore[assignment]
        """The layout as a table, with ``planned`` regions that were refused marked, and the
        bytes needed against the PE's SRAM (and the shortfall)."""
        rows = [*self.regions, *planned]
        width = max(len(region.name) for region in rows)
        lines = [f"PE {self.pe}: {'region':<{width}}  {'offset':>8}  {'bytes':>9}"]
        for region in rows:
            beyond = region.offset + region.size > self.total
            lines.append(f"       {region.name:<{width}}  {region.offset:>8}  "
                         f"{region.size:>9,}{'  beyond the SRAM' if beyond else ''}")
        needed = rows[-1].offset + rows[-1].size if rows else 0
        short = needed - self.total
        lines.append(f"       needs {needed:,} B of {self.total:,} B"
                     + (f": short by {short:,} B" if short > 0 else ""))
        return "\n".join(lines)
