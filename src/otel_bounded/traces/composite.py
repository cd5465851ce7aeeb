"""What a composite span may say about its members, and nothing more.

A composite states nothing that is false of any member. Its plain attributes
are exactly those whose value (type and value: ``1``, ``True``, ``1.0`` and
``"1"`` all differ) is equal in every member. Every other key seen in a member
is listed in ``otel_bounded.composite.varied_keys``, with how many distinct
values it took in all (a member lacking the key counts as one more value) and
up to ``max_varied_samples`` of them as a JSON array (``null``: lacking), so a
reader knows how much was left out.

A composite keeps only a sample of a varied key's values, so two composites
whose samples were both cut cannot tell how many distinct values they hold
together. Normally such a group is not formed, and every count stays exact;
under memory pressure (a trace at its cap) it is, and the count becomes a
lower bound, flagged in ``otel_bounded.composite.varied_distinct_exact``
(the member count is always an upper bound).

This module owns the layout of a composite record's attributes: the
composite's own plain attributes, then a fixed tail per strategy.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Iterable, Sequence
from typing import Any, cast

from otel_bounded.telemetry import (
    COMPOSITE_COUNT,
    COMPOSITE_COUNTS,
    COMPOSITE_DURATION_SUM_NS,
    COMPOSITE_DURATION_SUMS_NS,
    COMPOSITE_MAX_NS,
    COMPOSITE_MAXES_NS,
    COMPOSITE_MIN_NS,
    COMPOSITE_MINS_NS,
    COMPOSITE_NAMES,
    COMPOSITE_STRATEGY,
    COMPOSITE_VARIED_DISTINCT,
    COMPOSITE_VARIED_DISTINCT_EXACT,
    COMPOSITE_VARIED_KEYS,
    COMPOSITE_VARIED_SAMPLES,
)

__all__ = [
    "EXACT_MATCH",
    "EXACT_TAIL",
    "SAME_KIND",
    "SAME_KIND_TAIL",
    "Group",
    "Values",
    "canon",
    "composite_view",
    "samples_of",
    "span_view",
]

EXACT_MATCH = "exact_match"
SAME_KIND = "same_kind"

EXACT_TAIL: tuple[str, ...] = (
    COMPOSITE_COUNT,
    COMPOSITE_DURATION_SUM_NS,
    COMPOSITE_MIN_NS,
    COMPOSITE_MAX_NS,
    COMPOSITE_STRATEGY,
    COMPOSITE_VARIED_KEYS,
    COMPOSITE_VARIED_DISTINCT,
    COMPOSITE_VARIED_DISTINCT_EXACT,
    COMPOSITE_VARIED_SAMPLES,
)
"""Attributes after an exact-match composite's plain ones, in this order."""
SAME_KIND_TAIL: tuple[str, ...] = (
    *EXACT_TAIL,
    COMPOSITE_NAMES,
    COMPOSITE_COUNTS,
    COMPOSITE_DURATION_SUMS_NS,
    COMPOSITE_MINS_NS,
    COMPOSITE_MAXES_NS,
)
"""Attributes after a same-kind composite's plain ones: the exact tail, then per-name arrays."""

# The canonical form of a lacking key; no attribute value canonicalizes to None.
_LACKING: None = None


def canon(value: Any) -> Hashable:
    """A hashable form equal only for equal values of the same type.

    Floats by their repr, so NaN equals NaN and 0.0 differs from -0.0, as a
    reader of the text would see them; sequences element by element.
    """
    cls = value.__class__
    if cls is str or cls is int:
        # The common case: no other type's form equals a str or an int.
        return cast(Hashable, value)
    if cls is float:
        return (float, repr(value))
    if cls is tuple or cls is list:
        return (tuple, tuple(canon(item) for item in value))
    return (cls, value)


class Values:
    """The distinct values one key took across some spans.

    `known` maps each canonical value to the value (`None` for "lacking"), in
    the order first seen. When `distinct` is larger than `len(known)`, `known`
    is only a sample (a composite's) and the rest is unknown. `distinct` is
    the exact count when `exact`, else a lower bound.
    """

    __slots__ = ("distinct", "exact", "known")

    def __init__(self, known: dict[Hashable, Any], distinct: int, exact: bool = True) -> None:
        self.known = known
        self.distinct = distinct
        self.exact = exact

    @property
    def complete(self) -> bool:
        return self.exact and self.distinct == len(self.known)


_LACKING_VALUES = ((_LACKING, None),)


def _lacking() -> Values:
    return Values(dict(_LACKING_VALUES), 1)


View = dict[str, Values]
"""Per key, the values a candidate (one span, or a composite's members) took."""


def span_view(keys: Sequence[str], values: Sequence[Any]) -> View:
    return {key: Values({canon(value): value}, 1) for key, value in zip(keys, values, strict=True)}


def composite_view(
    keys: Sequence[str],
    values: Sequence[Any],
    varied_keys: Sequence[str],
    varied_distinct: Sequence[int],
    varied_exact: Sequence[bool],
    varied_samples: Sequence[str],
) -> View:
    """The view of a composite made here: its plain attributes, then its varied keys."""
    view = span_view(keys, values)
    for key, distinct, exact, text in zip(
        varied_keys, varied_distinct, varied_exact, varied_samples, strict=True
    ):
        known = {canon_or_lacking(value): value for value in samples_of(text)}
        view[key] = Values(known, distinct, exact)
    return view


def canon_or_lacking(value: Any) -> Hashable:
    return _LACKING if value is None else canon(value)


class Group:
    """Members' attribute values merged so far; it owns (and updates) its value sets."""

    __slots__ = ("complete", "exact_only", "view")

    def __init__(self, view: View, exact_only: bool = True) -> None:
        self.view = {key: _copy(known) for key, known in view.items()}
        self.exact_only = exact_only
        self.complete = all(known.complete for known in self.view.values())
        """Every value set is complete: every span with the same keys can be added."""

    def add_span(self, keys: Sequence[str], values: Sequence[Any]) -> bool:
        """`add` for one span carrying exactly the group's keys, updating in place."""
        mine = self.view
        pairs = [
            (mine[key], value if value.__class__ is str or value.__class__ is int else canon(value))
            for key, value in zip(keys, values, strict=True)
        ]
        if self.exact_only and not self.complete:
            for entry, canonical in pairs:
                if canonical not in entry.known and not entry.complete:
                    return False  # a value the sample may or may not hide
        for (entry, canonical), value in zip(pairs, values, strict=True):
            known = entry.known
            if canonical in known:
                continue
            if entry.exact and entry.distinct == len(known):
                entry.distinct += 1
                known[canonical] = value
            else:
                known[canonical] = value
                entry.exact = False
                if len(known) > entry.distinct:
                    entry.distinct = len(known)
        return True

    def add(self, other: View) -> bool:
        """Take in one more member's view, or return False and change nothing.

        Two value sets can be united with an exact count when both are complete,
        or when the complete one holds nothing outside the other's (exactly
        counted) sample. Otherwise their unseen values may or may not overlap:
        with `exact_only` the member is refused; without, the count becomes the
        largest lower bound known, marked inexact.
        """
        mine = self.view
        keys = mine.keys() | other.keys()
        if self.exact_only:
            for key in keys:
                if _exact_union(mine.get(key) or _lacking(), other.get(key) or _lacking()) is None:
                    return False
        for key in keys:
            ours = mine.get(key) or _lacking()
            theirs = other.get(key) or _lacking()
            union = _exact_union(ours, theirs)
            if union is None:
                known = {**ours.known, **theirs.known}
                union = Values(known, max(ours.distinct, theirs.distinct, len(known)), False)
            mine[key] = union if union is ours else _copy(union)
        self.complete = all(known.complete for known in mine.values())
        return True

    def attributes(
        self, max_samples: int
    ) -> tuple[
        tuple[str, ...],
        tuple[Any, ...],
        tuple[tuple[str, ...], tuple[int, ...], tuple[bool, ...], tuple[str, ...]],
    ]:
        """(plain keys, plain values, (varied keys, distinct counts, exact flags, samples))."""
        plain_keys: list[str] = []
        plain_values: list[Any] = []
        varied_keys: list[str] = []
        distinct: list[int] = []
        exact: list[bool] = []
        samples: list[str] = []
        for key, values in self.view.items():
            if values.distinct == 1 and values.complete:
                ((canonical, value),) = values.known.items()
                if canonical is not _LACKING:
                    plain_keys.append(key)
                    plain_values.append(value)
                    continue
            varied_keys.append(key)
            distinct.append(values.distinct)
            exact.append(values.exact)
            samples.append(_samples_text(list(values.known.values())[:max_samples]))
        if not varied_keys:
            return tuple(plain_keys), tuple(plain_values), _NOTHING_VARIED
        return (
            tuple(plain_keys),
            tuple(plain_values),
            (tuple(varied_keys), tuple(distinct), tuple(exact), tuple(samples)),
        )


_NOTHING_VARIED: tuple[tuple[str, ...], tuple[int, ...], tuple[bool, ...], tuple[str, ...]] = (
    (),
    (),
    (),
    (),
)


def _copy(values: Values) -> Values:
    return Values(dict(values.known), values.distinct, values.exact)


def _exact_union(ours: Values, theirs: Values) -> Values | None:
    """The union of two value sets with its exact count, or None when it cannot be known.

    The result may be one of the arguments (not copied): callers replace, never mutate.
    """
    if ours.complete and theirs.complete:
        if theirs.known.keys() <= ours.known.keys():
            return ours
        known = {**ours.known, **theirs.known}
        return Values(known, len(known))
    if ours.complete and theirs.exact and ours.known.keys() <= theirs.known.keys():
        return theirs
    if theirs.complete and ours.exact and theirs.known.keys() <= ours.known.keys():
        return ours
    return None


def _samples_text(values: Iterable[Any]) -> str:
    # ASCII JSON: any string, lone surrogates included, survives every exporter.
    return json.dumps([_jsonable(value) for value in values], separators=(",", ":"), default=repr)


def _jsonable(value: Any) -> Any:
    if value.__class__ is tuple or value.__class__ is list:
        return [_jsonable(item) for item in value]
    return value


def samples_of(text: str) -> list[Any]:
    """The values of a ``varied_samples`` entry: JSON arrays as tuples, ``null`` as None."""
    return [_from_json(value) for value in json.loads(text)]


def _from_json(value: Any) -> Any:
    if value.__class__ is list:
        return tuple(_from_json(item) for item in value)
    return value
