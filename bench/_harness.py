"""Interleaved, paired-ratio timing shared by the scripts in bench/.

A machine drifts while a benchmark runs (frequency scaling, other processes,
a heap that grows), so timing each variant in a block of its own compares
different moments. Here every round times each variant once, in a shuffled
order, and a ratio is taken between two variants of the *same* round before
the median across rounds: drift cancels out of each pair, and a noisy round
moves the median little. `gc.collect()` runs before every timed loop so one
loop does not pay for the garbage of the loop before it.
"""

from __future__ import annotations

import gc
import random
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

__all__ = [
    "Goal",
    "Timings",
    "Variant",
    "format_goals",
    "format_table",
    "gc_paused",
    "run_interleaved",
]


@dataclass(frozen=True)
class Variant:
    """One thing to time: `loop` performs `units` operations (spans, calls, ...).

    `before` and `after` run untimed around every loop, e.g. to build the input
    of a loop or to clear what the loop left behind so memory cannot grow
    across rounds.
    """

    name: str
    loop: Callable[[], object]
    units: int
    before: Callable[[], object] | None = None
    after: Callable[[], object] | None = None


@dataclass
class Timings:
    """Nanoseconds per unit, one value per variant per round, in round order."""

    per_unit_ns: dict[str, list[float]] = field(default_factory=dict)

    @property
    def rounds(self) -> int:
        return min((len(values) for values in self.per_unit_ns.values()), default=0)

    def median_us(self, name: str) -> float:
        """The median cost of one unit of `name`, in microseconds."""
        return statistics.median(self.per_unit_ns[name]) / 1_000

    def ratios(self, name: str, baseline: str) -> list[float]:
        """`name` over `baseline`, one ratio per round (both timed in that round)."""
        return [
            value / base
            for value, base in zip(self.per_unit_ns[name], self.per_unit_ns[baseline], strict=True)
        ]

    def median_ratio(self, name: str, baseline: str) -> float:
        return statistics.median(self.ratios(name, baseline))

    def ratio_quartiles(self, name: str, baseline: str) -> tuple[float, float, float]:
        """25th, 50th and 75th percentiles of the per-round ratios: shows the spread."""
        ratios = self.ratios(name, baseline)
        if len(ratios) < 2:
            return ratios[0], ratios[0], ratios[0]
        low, middle, high = statistics.quantiles(ratios, n=4, method="inclusive")
        return low, middle, high


def run_interleaved(
    variants: Sequence[Variant],
    rounds: int,
    *,
    warmup_rounds: int = 1,
    seed: int = 0,
    progress: Callable[[int, int], object] | None = None,
) -> Timings:
    """Time every variant once per round, in a freshly shuffled order each round.

    Shuffling, rather than a fixed order, keeps any variant from always
    following the same neighbour (a background thread or a heap left behind
    would otherwise bias one pair). Warm-up rounds run the same way and are
    discarded. `progress(done, total)` is called after each round.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    names = [variant.name for variant in variants]
    if len(set(names)) != len(names):
        raise ValueError(f"variant names must be unique, got {names}")
    order = list(variants)
    shuffler = random.Random(seed)
    timings = Timings({name: [] for name in names})
    total = warmup_rounds + rounds
    for round_index in range(total):
        shuffler.shuffle(order)
        for variant in order:
            elapsed_ns = _time_once(variant)
            if round_index >= warmup_rounds:
                timings.per_unit_ns[variant.name].append(elapsed_ns / variant.units)
        if progress is not None:
            progress(round_index + 1, total)
    return timings


@contextmanager
def gc_paused() -> Iterator[None]:
    """Automatic collections off for untimed set-up that keeps many new objects alive.

    Each such object would otherwise be traversed again by every full
    collection the set-up itself triggers, which makes filling a large heap
    quadratic. The next timed loop's `gc.collect()` still finds any garbage.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _time_once(variant: Variant) -> int:
    if variant.before is not None:
        variant.before()
    gc.collect()
    start = time.perf_counter_ns()
    variant.loop()
    elapsed = time.perf_counter_ns() - start
    if variant.after is not None:
        variant.after()
    return elapsed


@dataclass(frozen=True)
class Goal:
    """A measured figure next to the limit it should meet (`value <= limit`, or `<` if strict)."""

    label: str
    value: float
    limit: float
    strict: bool = False
    unit: str = "x"

    @property
    def met(self) -> bool:
        return self.value < self.limit if self.strict else self.value <= self.limit

    @property
    def verdict(self) -> str:
        return "PASS" if self.met else "NOT MET"

    @property
    def requirement(self) -> str:
        return f"{'<' if self.strict else '<='} {self.limit:.2f}{self.unit}"


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain-text table: the first column left-aligned, the others right-aligned."""
    cells = [[str(cell) for cell in headers]] + [[str(cell) for cell in row] for row in rows]
    widths = [max(len(row[column]) for row in cells) for column in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        first = row[0].ljust(widths[0])
        rest = (cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True))
        return "  ".join([first, *rest]).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(cells[0]), rule, *(line(row) for row in cells[1:])])


def format_goals(goals: Sequence[Goal]) -> str:
    return format_table(
        ["goal", "measured", "limit", "verdict"],
        [
            (goal.label, f"{goal.value:.3f}{goal.unit}", goal.requirement, goal.verdict)
            for goal in goals
        ],
    )
