"""The waterfall order over any parent links: every span once, children after their parent."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from otel_bounded.web.tree import MAX_DEPTH, waterfall

# (span id, parent id or None, start): ids repeat and parents may form cycles.
spans_strategy = st.lists(
    st.tuples(st.integers(1, 12), st.none() | st.integers(1, 14), st.integers(0, 5)), max_size=40
)


@settings(max_examples=300, deadline=None)
@given(spans=spans_strategy)
def test_every_span_is_placed_once_under_its_parent(
    spans: list[tuple[int, int | None, int]],
) -> None:
    placed = waterfall(spans, lambda s: s[0], lambda s: s[1], lambda s: s[2])
    assert sorted(map(id, (p.span for p in placed))) == sorted(map(id, spans))
    first_index = {}
    for index, span in enumerate(spans):
        first_index.setdefault(span[0], index)
    position = {id(p.span): (row, p) for row, p in enumerate(placed)}
    for row, entry in enumerate(placed):
        span = entry.span
        parent = first_index.get(span[1]) if span[1] is not None else None
        if entry.depth == 0:
            # At the top: no parent, or one that is not held, or a cycle broken here.
            assert entry.orphan == (span[1] is not None)
            continue
        assert parent is not None
        assert not entry.orphan
        parent_row, parent_entry = position[id(spans[parent])]
        assert parent_row < row
        assert entry.depth == min(parent_entry.depth + 1, MAX_DEPTH)
        # Between a parent and its child sit only the parent's other descendants.
        assert all(
            placed[between].depth > parent_entry.depth for between in range(parent_row + 1, row)
        )


def test_siblings_are_ordered_by_start() -> None:
    spans = [(1, None, 0), (2, 1, 30), (3, 1, 10), (4, 3, 20), (5, 1, 20)]
    order = [p.span[0] for p in waterfall(spans, lambda s: s[0], lambda s: s[1], lambda s: s[2])]
    assert order == [1, 3, 4, 5, 2]


def test_a_deep_chain_does_not_recurse() -> None:
    spans = [(i, i - 1 if i > 1 else None, i) for i in range(1, 5_000)]
    placed = waterfall(spans, lambda s: s[0], lambda s: s[1], lambda s: s[2])
    assert [p.span[0] for p in placed] == list(range(1, 5_000))
    assert placed[-1].depth == MAX_DEPTH
