"""A trace store's compaction state: when each trace is compacted, and where merged ids went.

`compaction.py` is a pure pass over one trace's records; this is what a store
keeps between passes. Every span id merged away is remembered, per trace, for
as long as the trace is held, so a child ending after its parent was merged
is re-parented to the composite and `TraceStore.resolve` can say which
composite stands for any id that entered. Remembering costs memory of its own,
bounded by `CompactionPolicy.max_remembered_ids` (not by the span caps, which
count held spans); an id forgotten to stay within it is counted by reason and
reported once, never silently.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Callable, Mapping

from otel_bounded.core import BoundedStore
from otel_bounded.telemetry import UnresolvedReason
from otel_bounded.traces.compaction import CompactionPolicy, compact_records
from otel_bounded.traces.records import HAS_PARENT, PARENT_IS_REMOTE, Record

__all__ = ["Compactor"]

# Per trace: merged-away ids sorted for bisect, a parallel array of slots into
# the trace's few composite ids (empty when there is one), and those ids. A
# dict would cost about 72 bytes a merged span and eat most of what
# compaction saves.
_MergedIds = tuple["array[int]", "array[int]", "array[int]"]


class Compactor:
    """A store's compaction state; used under the store's lock only.

    Per trace: the held count at which its next pass is due, whether it grew
    since its last pass, and the span ids it merged away.
    """

    __slots__ = (
        "_at_spans",
        "_dirty",
        "_due",
        "_last_pass",
        "_merged",
        "_on_unresolved",
        "_policy",
        "_remembered",
        "_remembered_budget",
        "_traces",
        "compactions",
        "spans_compacted",
        "unresolved",
    )

    def __init__(
        self,
        policy: CompactionPolicy,
        traces: BoundedStore[int, list[Record]],
        on_unresolved: Callable[[str], None],
    ) -> None:
        self._policy = policy
        self._traces = traces
        self._at_spans = policy.compact_at_spans
        self._due: dict[int, int] = {}
        self._last_pass: dict[int, int] = {}
        # Traces grown since their last pass, least recently active first.
        self._dirty: OrderedDict[int, None] = OrderedDict()
        # Least recently compacted trace first: its ids are forgotten first.
        self._merged: OrderedDict[int, _MergedIds] = OrderedDict()
        self._remembered = 0
        self._remembered_budget = policy.max_remembered_ids
        self._on_unresolved = on_unresolved
        self.compactions = 0
        self.spans_compacted = 0
        self.unresolved = {UnresolvedReason.MAX_REMEMBERED_IDS: 0}

    def resolve(self, trace_id: int, span_id: int) -> int | None:
        """The id of the composite now holding `span_id`, or None if it was not merged away."""
        merged = self._merged.get(trace_id)
        if merged is None:
            return None
        members, slots, composites = merged
        index = bisect_left(members, span_id)
        if index == len(members) or members[index] != span_id:
            return None
        return composites[slots[index]] if slots else composites[0]

    def adopt(self, trace_id: int, record: Record) -> Record:
        """`record`, re-parented to a composite if its parent was merged away."""
        if not self._merged or not record[4] & HAS_PARENT:
            return record
        composite = self.resolve(trace_id, record[1])
        if composite is None:
            return record
        return (record[0], composite, *record[2:])

    def recorded(self, trace_id: int, records: list[Record], record: Record) -> None:
        """After `record` was added: compact when due, and when the local root ends."""
        dirty = self._dirty
        dirty[trace_id] = None
        dirty.move_to_end(trace_id)
        meta = record[4]
        local_root = not meta & HAS_PARENT or meta & PARENT_IS_REMOTE
        if local_root or len(records) >= self._due.get(trace_id, self._at_spans):
            self.compact(trace_id, records)

    def relieve(self, target: int) -> None:
        """Compact least recently active traces until at most `target` spans are held.

        A pass costs what its trace holds, so a trace is compacted again only
        once it grew by a quarter since its last pass: amortized O(1) per span.
        A trace compacted here leaves the queue and joins it again with its
        next span; one skipped stays in it.
        """
        traces = self._traces
        dirty = self._dirty
        last_pass = self._last_pass
        waiting: list[int] = []
        while dirty and traces.weight > target:
            trace_id, _ = dirty.popitem(last=False)
            records = traces.get(trace_id)
            if records is None:
                continue
            last = last_pass.get(trace_id, 0)
            if len(records) - last >= max(1, last // 4):
                self.compact(trace_id, records)
            else:
                waiting.append(trace_id)
        # Not compacted yet: still grown since their last pass, in their old order.
        for trace_id in reversed(waiting):
            dirty[trace_id] = None
            dirty.move_to_end(trace_id, last=False)

    def compact_if_grown(self, trace_id: int, records: list[Record]) -> bool:
        """Compact a full trace before dropping a span of it, unless nothing changed since."""
        return trace_id in self._dirty and self.compact(trace_id, records)

    def compact(self, trace_id: int, records: list[Record]) -> bool:
        """Compact one held trace in place; True when it merged anything.

        A composite of an earlier pass keeps only a sample of a varied key's
        values, so when it absorbs values it may not have seen, the key's
        distinct count becomes a lower bound, flagged as such: the store keeps
        a trace small rather than keep a composite per pass.
        """
        self._dirty.pop(trace_id, None)
        result = compact_records(records, self._policy, exact_counts=False)
        held = len(result.records)
        self._due[trace_id] = held + self._at_spans
        self._last_pass[trace_id] = held
        if not result.merged_away:
            return False
        records[:] = result.records
        self._traces.set_weight(trace_id, held)
        self.compactions += 1
        self.spans_compacted += result.merged_away
        self._remember(trace_id, result.merged)
        return True

    def _remember(self, trace_id: int, merged: Mapping[int, int]) -> None:
        pairs: dict[int, int] = {}
        held = self._merged.pop(trace_id, None)
        if held is not None:
            members, slots, composites = held
            self._remembered -= len(members)
            # A composite merged into a larger one: its members now belong to that one.
            owners = (
                [composites[slot] for slot in slots] if slots else [composites[0]] * len(members)
            )
            pairs = {
                member: merged.get(owner, owner)
                for member, owner in zip(members, owners, strict=True)
            }
        # This pass's merges win: with the budget full, they are kept first.
        pairs = {**merged, **{m: c for m, c in pairs.items() if m not in merged}}
        budget = self._remembered_budget
        while self._merged and self._remembered + len(pairs) > budget:
            # Other traces' ids go first, least recently compacted first.
            _, (members, _, _) = self._merged.popitem(last=False)
            self._remembered -= len(members)
            self._forgot(len(members))
        if len(pairs) > budget:
            self._forgot(len(pairs) - budget)
            pairs = dict(list(pairs.items())[:budget])
        if not pairs:
            return
        # Sorted for bisect in `resolve`; a pass sorts anyway, this is part of it.
        ordered = sorted(pairs.items())
        # A trace has few composites: each merged id points at one by a slot of one
        # or two bytes, or by none when there is a single composite.
        composites_of: dict[int, int] = {}
        for _, composite in ordered:
            composites_of.setdefault(composite, len(composites_of))
        count = len(composites_of)
        self._merged[trace_id] = (
            array("Q", [member for member, _ in ordered]),
            array("B")
            if count == 1
            else array(
                "B" if count <= 0xFF else "H" if count <= 0xFFFF else "I",
                [composites_of[composite] for _, composite in ordered],
            ),
            array("Q", composites_of),
        )
        self._remembered += len(ordered)

    def _forgot(self, ids: int) -> None:
        if not ids:
            return
        reason = UnresolvedReason.MAX_REMEMBERED_IDS
        first = not self.unresolved[reason]
        self.unresolved[reason] += ids
        if first:
            self._on_unresolved(reason)

    def forget(self, trace_id: int) -> None:
        """The trace left the store: nothing of it needs resolving any more."""
        self._due.pop(trace_id, None)
        self._last_pass.pop(trace_id, None)
        self._dirty.pop(trace_id, None)
        held = self._merged.pop(trace_id, None)
        if held is not None:
            self._remembered -= len(held[0])

    def clear(self) -> None:
        self._due.clear()
        self._last_pass.clear()
        self._dirty.clear()
        self._merged.clear()
        self._remembered = 0
