"""Spans of one trace in waterfall order: each parent followed by its children, by start time.

Shared by the web view and the command line. Span data is attacker-controlled:
ids may repeat and parents may form cycles, so every span is placed exactly
once and nothing recurses.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["Placed", "waterfall"]

T = TypeVar("T")

MAX_DEPTH = 64
"""Deepest indentation shown; deeper spans are shown at this depth."""


@dataclass(frozen=True)
class Placed(Generic[T]):
    """A span in the waterfall: how deep it sits, and why it sits at the top if it does.

    `orphan` is set on a top-level span whose parent is not held here (still
    running, dropped, evicted, merged away, or in another process).
    """

    span: T
    depth: int
    orphan: bool


def waterfall(
    spans: Sequence[T],
    span_id: Callable[[T], int],
    parent_id: Callable[[T], int | None],
    start: Callable[[T], int],
) -> list[Placed[T]]:
    """Depth-first order; roots and orphans first by start time, then their subtrees."""
    first_of: dict[int, int] = {}
    for index, span in enumerate(spans):
        first_of.setdefault(span_id(span), index)
    children: dict[int, list[int]] = {}
    tops: list[int] = []
    orphans: set[int] = set()
    for index, span in enumerate(spans):
        parent = parent_id(span)
        owner = first_of.get(parent) if parent is not None else None
        if owner is None or owner == index:
            tops.append(index)
            if parent is not None:
                orphans.add(index)
        else:
            children.setdefault(owner, []).append(index)

    def by_start(index: int) -> tuple[int, int]:
        return (start(spans[index]), index)

    placed: list[Placed[T]] = []
    seen: set[int] = set()
    pending = sorted(tops, key=by_start)
    # Spans in a parent cycle are reachable from no top: each such cycle gets a top of its own.
    leftovers = iter(range(len(spans)))
    while True:
        stack = [(index, 0) for index in reversed(pending)]
        while stack:
            index, depth = stack.pop()
            if index in seen:
                continue
            seen.add(index)
            placed.append(Placed(spans[index], min(depth, MAX_DEPTH), index in orphans))
            for child in sorted(children.get(index, ()), key=by_start, reverse=True):
                if child not in seen:
                    stack.append((child, depth + 1))
        pending = []
        for index in leftovers:
            if index not in seen:
                orphans.add(index)
                pending = [index]
                break
        if not pending:
            return placed
