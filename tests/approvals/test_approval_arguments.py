"""Argument binding: an approval covers the exact call, and only its digest is ever shown."""

from __future__ import annotations

import hashlib
import json
import math
from collections import OrderedDict
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otel_bounded.approvals import ApprovalLedger, ApprovalScope, arguments_digest
from otel_bounded.approvals.arguments import MAX_ARGUMENT_DEPTH, canonical_arguments
from otel_bounded.errors import ApprovalError, ApprovalReason
from tests.approvals.helpers import Telemetry, granted

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


def model_text(value: object) -> str:
    """The canonical form, as the standard library's JSON writer produces it."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    )


def typed(value: Any) -> object:
    """A structure where values equal only when the canonical form must be equal too."""
    if isinstance(value, bool) or value is None:
        return ("const", value)
    if isinstance(value, int):
        return ("int", value)
    if isinstance(value, float):
        return ("float", repr(value))  # 0.0 and -0.0 are different texts
    if isinstance(value, str):
        return ("str", value)
    if isinstance(value, list | tuple):
        return ("list", tuple(typed(item) for item in value))
    return ("dict", tuple(sorted((key, typed(item)) for key, item in value.items())))


@settings(max_examples=150, deadline=None)
@given(json_values)
def test_the_canonical_form_is_sorted_compact_json(value: object) -> None:
    assert canonical_arguments(value) == model_text(value)
    expected = hashlib.sha256(model_text(value).encode("ascii")).hexdigest()
    assert arguments_digest(value) == expected


@settings(max_examples=150, deadline=None)
@given(json_values, json_values)
def test_two_values_share_a_digest_exactly_when_they_are_the_same_value(
    first: object, second: object
) -> None:
    same = typed(first) == typed(second)
    assert (arguments_digest(first) == arguments_digest(second)) is same


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (1, 1.0),
        (0.0, -0.0),
        (True, 1),
        ("1", 1),
        ([1, 2], [2, 1]),
        ({"a": None}, {}),
        ({"v": "1.2.3"}, {"v": "1.2.3 "}),
        (None, "null"),
    ],
)
def test_values_a_loose_comparison_would_confuse_have_different_digests(
    first: object, second: object
) -> None:
    assert arguments_digest(first) != arguments_digest(second)


def test_key_order_tuples_and_subclasses_do_not_change_the_digest() -> None:
    class Text(str):
        def __eq__(self, other: object) -> bool:
            return True

        __hash__ = str.__hash__

    plain = {"b": [1, 2], "a": "x"}
    assert arguments_digest(plain) == arguments_digest(OrderedDict([("a", "x"), ("b", (1, 2))]))
    assert arguments_digest({"a": Text("x"), "b": [1, 2]}) == arguments_digest(plain)


@pytest.mark.parametrize(
    "value",
    [
        math.nan,
        math.inf,
        {1: "x"},
        {"a": object()},
        b"bytes",
        {"a"},
    ],
)
def test_what_has_no_canonical_form_is_a_value_error(value: object) -> None:
    with pytest.raises(ValueError, match=r"arguments|argument mapping"):
        arguments_digest(value)
    with pytest.raises(ValueError, match=r"arguments|argument mapping"):
        ApprovalScope("release", "deploy", arguments=value)


def test_a_cycle_or_deep_nesting_is_a_value_error_not_a_crash() -> None:
    cycle: list[object] = []
    cycle.append(cycle)
    with pytest.raises(ValueError, match="nest"):
        arguments_digest(cycle)
    deep: object = "leaf"
    for _ in range(MAX_ARGUMENT_DEPTH):
        deep = [deep]
    arguments_digest(deep)
    with pytest.raises(ValueError, match="nest"):
        arguments_digest([deep])


# -- in the ledger -------------------------------------------------------------

DEPLOY_V1 = ApprovalScope(
    "release", "deploy", "prod", {"version": "1.2.3", "flags": ["--canary"], "replicas": 3}
)


def refusal(ledger_call: Any) -> ApprovalError:
    with pytest.raises(ApprovalError) as caught:
        ledger_call()
    return caught.value


@pytest.mark.parametrize(
    "arguments",
    [
        {"version": "1.2.4", "flags": ["--canary"], "replicas": 3},
        {"version": "1.2.3", "flags": [], "replicas": 3},
        {"version": "1.2.3", "flags": ["--canary"], "replicas": 3.0},
        {"version": "1.2.3", "flags": ["--canary"], "replicas": 3, "force": True},
        None,
    ],
)
def test_an_approval_for_one_call_is_refused_for_another(
    ledger: ApprovalLedger, arguments: object
) -> None:
    token = granted(ledger, scope=DEPLOY_V1)
    other = ApprovalScope("release", "deploy", "prod", arguments)
    error = refusal(lambda: ledger.consume(token, other, "deploy-agent"))
    assert error.reason_code == ApprovalReason.SCOPE_MISMATCH
    assert "arguments differ" in str(error)
    # The exact call, with its keys in any order, is still covered.
    same = ApprovalScope(
        "release", "deploy", "prod", {"replicas": 3, "version": "1.2.3", "flags": ["--canary"]}
    )
    assert ledger.consume(token, same, "deploy-agent").uses == 1


def test_an_approval_without_arguments_does_not_cover_a_call_with_them(
    ledger: ApprovalLedger,
) -> None:
    token = granted(ledger, scope=ApprovalScope("release", "deploy", "prod"))
    error = refusal(lambda: ledger.verify(token, DEPLOY_V1, "deploy-agent"))
    assert error.reason_code == ApprovalReason.SCOPE_MISMATCH


def test_only_the_digest_of_the_arguments_reaches_telemetry_and_audits(
    ledger: ApprovalLedger, otel: Telemetry
) -> None:
    secret = "db-password-correct-horse"
    scope = ApprovalScope("release", "migrate", "prod", {"password": secret, "steps": 2})
    token = granted(ledger, scope=scope)
    audit = ledger.consume(token, scope, "deploy-agent")
    assert audit.scope.arguments_digest == arguments_digest({"password": secret, "steps": 2})
    recorded = [repr(dict(span.attributes or {})) for span in otel.spans.get_finished_spans()] + [
        repr(audit),
        repr(scope),
    ]
    assert all(secret not in text for text in recorded)
    attributes = dict(otel.spans.get_finished_spans()[-1].attributes or {})
    assert attributes["otel_bounded.approval.arguments_digest"] == scope.arguments_digest
