"""Bypasses tried as an attacker would: invisible names, forged scopes, misplaced tokens."""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otel_bounded.approvals import ApprovalLedger, ApprovalScope
from otel_bounded.approvals.names import (
    DEFAULT_IGNORABLE_RANGES,
    MAX_NAME_LENGTH,
    check_name,
    is_default_ignorable,
    presented,
)
from otel_bounded.errors import ApprovalError, ApprovalReason
from tests.approvals.helpers import DEPLOY, Telemetry, granted
from tests.servers import REQUIRE_SERVERS_VARIABLE

UNICODE_DATA = Path("/usr/share/unicode/DerivedCoreProperties.txt")


def every_default_ignorable() -> list[int]:
    return [
        code_point
        for first, last in DEFAULT_IGNORABLE_RANGES
        for code_point in range(first, last + 1)
    ]


def refusal(call: Callable[[], object]) -> ApprovalError:
    with pytest.raises(ApprovalError) as caught:
        call()
    return caught.value


# -- invisible characters --------------------------------------------------------


def test_the_embedded_table_is_the_unicode_property_list() -> None:
    # Debian's unicode-data ships the file; CI installs it.
    if not UNICODE_DATA.exists():
        if os.environ.get(REQUIRE_SERVERS_VARIABLE) == "1":
            pytest.fail(f"{UNICODE_DATA} is missing: install the Debian package unicode-data")
        pytest.skip("install the Debian package unicode-data to compare with the Unicode file")
    listed: set[int] = set()
    for line in UNICODE_DATA.read_text().splitlines():
        match = re.match(
            r"([0-9A-F]+)(?:\.\.([0-9A-F]+))?\s*;\s*Default_Ignorable_Code_Point\b", line
        )
        if match:
            first = int(match.group(1), 16)
            last = int(match.group(2) or match.group(1), 16)
            listed.update(range(first, last + 1))
    assert listed == set(every_default_ignorable())


def test_the_table_has_the_size_unicode_states() -> None:
    # "Total code points: 4174" in DerivedCoreProperties.txt, Unicode 14.0 and 15.0.
    assert len(every_default_ignorable()) == 4174
    assert len(set(every_default_ignorable())) == 4174


@pytest.mark.parametrize("where", ["end", "middle", "start"])
def test_every_default_ignorable_code_point_is_refused_in_a_name(where: str) -> None:
    for code_point in every_default_ignorable():
        char = chr(code_point)
        name = {"end": f"release-bot{char}", "middle": f"release{char}-bot", "start": f"{char}bot"}
        with pytest.raises(ValueError, match=f"U\\+{code_point:04X}"):
            check_name("approver", name[where])
        assert is_default_ignorable(char)


def test_no_other_code_point_is_called_default_ignorable() -> None:
    ignorable = set(every_default_ignorable())
    for code_point in range(0x110000):
        if code_point not in ignorable and not 0xD800 <= code_point <= 0xDFFF:
            assert not is_default_ignorable(chr(code_point)), hex(code_point)


@pytest.mark.parametrize("suffix", ["\ufe0f", "\u034f", "\U000e0100", "\u17b4", "\u115f"])
def test_an_invisible_suffix_does_not_pass_four_eyes(ledger: ApprovalLedger, suffix: str) -> None:
    grant = ledger.request(
        DEPLOY, requested_by="release-bot", executor="release-bot", ttl_seconds=60
    )
    with pytest.raises(ValueError, match="default-ignorable"):
        ledger.approve(grant.token, approver="release-bot" + suffix)
    # The request is still pending: nothing was decided.
    assert refusal(lambda: ledger.verify(grant.token, DEPLOY, "release-bot")).reason_code == (
        ApprovalReason.PENDING
    )


@pytest.mark.parametrize("filler", ["\u3164", "\uffa0", "\u115f", "\u1160"])
def test_a_hangul_filler_does_not_pass_for_a_space(ledger: ApprovalLedger, filler: str) -> None:
    grant = ledger.request(
        DEPLOY, requested_by="release bot", executor="release bot", ttl_seconds=60
    )
    with pytest.raises(ValueError, match="default-ignorable"):
        ledger.approve(grant.token, approver=f"release{filler}bot")


def test_a_delegation_to_the_approver_with_a_variation_selector_is_refused(
    ledger: ApprovalLedger,
) -> None:
    token = granted(ledger, approver="repo-owner")
    with pytest.raises(ValueError, match="default-ignorable"):
        ledger.delegate(token, by="deploy-agent", to="repo-owner\ufe0f", reason="r")
    assert refusal(
        lambda: ledger.delegate(token, by="deploy-agent", to="Repo-Owner", reason="r")
    ).reason_code == (ApprovalReason.SELF_APPROVAL)


@pytest.mark.parametrize(
    "field", ["requested_by", "executor", "session_id", "policy", "action", "resource"]
)
def test_every_kind_of_name_refuses_invisible_characters(
    ledger: ApprovalLedger, field: str
) -> None:
    name = "bot\u2064"  # INVISIBLE PLUS, category Cf
    token = granted(ledger)
    calls: dict[str, Callable[[], object]] = {
        "policy": lambda: ApprovalScope(name, "a"),
        "action": lambda: ApprovalScope("p", name),
        "resource": lambda: ApprovalScope("p", "a", name),
        "session_id": lambda: ledger.delegate(
            token, by="deploy-agent", to="x", reason="r", session_id=name
        ),
        "requested_by": lambda: ledger.request(
            DEPLOY, requested_by=name, executor="b", ttl_seconds=60
        ),
        "executor": lambda: ledger.request(DEPLOY, requested_by="a", executor=name, ttl_seconds=60),
    }
    with pytest.raises(ValueError, match=f"{field} must not contain U\\+2064"):
        calls[field]()


# -- forged scopes -------------------------------------------------------------


@pytest.mark.parametrize("field", ["policy", "action", "resource", "arguments_digest"])
@pytest.mark.parametrize("forgery", ["any", "str_subclass", "bytes"])
def test_a_scope_with_an_overwritten_field_matches_nothing(
    ledger: ApprovalLedger, field: str, forgery: str
) -> None:
    class Agreeable(str):
        def __eq__(self, other: object) -> bool:
            return True

        __hash__ = str.__hash__

    value = {
        "any": mock.ANY,
        "str_subclass": Agreeable(getattr(DEPLOY, field) or "x"),
        "bytes": b"deploy",
    }[forgery]
    token = granted(ledger)
    forged = ApprovalScope("release", "deploy", "service-a")
    object.__setattr__(forged, field, value)
    for call in (ledger.verify, ledger.consume):
        error = refusal(lambda call=call: call(token, forged, "deploy-agent"))
        assert error.reason_code == ApprovalReason.SCOPE_MISMATCH
    with pytest.raises(ValueError, match="scope"):
        ledger.request(forged, requested_by="a", executor="b", ttl_seconds=60)
    # The grant was not spent by any of it.
    assert ledger.consume(token, DEPLOY, "deploy-agent").uses == 1


def test_a_scope_overwritten_with_an_invisible_name_is_refused_at_request(
    ledger: ApprovalLedger,
) -> None:
    forged = ApprovalScope("release", "deploy")
    object.__setattr__(forged, "action", "deploy\ufe0f")
    with pytest.raises(ValueError, match="default-ignorable"):
        ledger.request(forged, requested_by="a", executor="b", ttl_seconds=60)


# -- misplaced tokens ----------------------------------------------------------


def everything_recorded(otel: Telemetry, *extra: object) -> str:
    spans = otel.spans.get_finished_spans()
    texts = [repr(dict(span.attributes or {})) + str(span.status.description) for span in spans]
    texts += [repr(item) for item in extra]
    return "\n".join(texts)


@pytest.mark.parametrize(
    "misplace",
    [
        lambda t: ("scope", ApprovalScope("release", "deploy", t)),
        lambda t: ("scope", ApprovalScope("release", f"bearer-{t}")),
        lambda t: ("actor", f"bearer {t}"),
        lambda t: ("actor", f"Bearer{t}"),
        lambda t: ("actor", t),
    ],
)
def test_a_token_presented_in_the_wrong_place_never_reaches_a_span_or_message(
    ledger: ApprovalLedger, otel: Telemetry, misplace: Callable[[str], tuple[str, object]]
) -> None:
    token = granted(ledger)
    where, value = misplace(token)
    scope = value if where == "scope" else DEPLOY
    actor = value if where == "actor" else "deploy-agent"
    errors = [
        refusal(lambda: ledger.verify(token, scope, actor)),  # type: ignore[arg-type]
        refusal(lambda: ledger.consume(token, scope, actor)),  # type: ignore[arg-type]
    ]
    recorded = everything_recorded(otel, *errors, *(str(error) for error in errors))
    assert token not in recorded
    assert "<redacted: an approval token>" in recorded


@pytest.mark.parametrize(
    "operation",
    [
        lambda ledger, t: ledger.delegate(t, by="deploy-agent", to="x", reason=f"see {t}"),
        lambda ledger, t: ledger.delegate(
            t, by="deploy-agent", to="x", reason="r", session_id=f"s-{t}"
        ),
        lambda ledger, t: ledger.revoke(t, actor="bob", reason=f"leaked: {t}!"),
        lambda ledger, t: ledger.request(
            ApprovalScope("release", "deploy", t), requested_by="a", executor="b", ttl_seconds=9
        ),
        lambda ledger, t: ledger.request(
            DEPLOY, requested_by=f"token={t}", executor="b", ttl_seconds=9
        ),
    ],
)
def test_a_held_token_inside_a_reason_name_session_or_scope_is_refused(
    ledger: ApprovalLedger, otel: Telemetry, operation: Callable[[ApprovalLedger, str], object]
) -> None:
    token = granted(ledger)
    with pytest.raises(ValueError, match="approval token") as caught:
        operation(ledger, token)
    assert token not in str(caught.value)
    assert token not in everything_recorded(otel)
    # Nothing changed: the grant is still granted and unused.
    assert ledger.consume(token, DEPLOY, "deploy-agent").uses == 1


def test_a_long_actor_with_line_breaks_is_recorded_bounded_and_escaped(
    ledger: ApprovalLedger, otel: Telemetry
) -> None:
    token = granted(ledger)
    actor = "intruder\nforged log line\u202e" + "x" * 5_000_000
    refusal(lambda: ledger.consume(token, DEPLOY, actor))
    shown = dict(otel.spans.get_finished_spans()[-1].attributes or {})[
        "otel_bounded.approval.actor"
    ]
    assert isinstance(shown, str)
    assert shown.startswith("intruder\\nforged log line\\u202e")
    assert "\n" not in shown
    assert len(shown) < MAX_NAME_LENGTH + 64
    assert shown.endswith(f"...({len(actor)} characters in all)")


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=600))
def test_a_presented_value_is_shown_printable_bounded_and_unambiguous(text: str) -> None:
    shown = presented(text)
    cut = shown.rsplit("...(", 1)[0] if len(text) > MAX_NAME_LENGTH else shown
    assert shown.isprintable()
    assert not any(is_default_ignorable(char) for char in shown)
    assert len(cut) <= 10 * MAX_NAME_LENGTH
    if len(text) <= MAX_NAME_LENGTH:
        # Unambiguous: the escaping undoes exactly, so two texts never show alike.
        assert shown.encode("ascii", "backslashreplace").decode("unicode_escape") == (
            text.encode("utf-16", "surrogatepass").decode("utf-16", "surrogatepass")
        )


def test_the_name_check_still_allows_ordinary_names_in_any_script() -> None:
    for name in ("alice@example.com", "Zoë", "渡辺", "Дмитрий", "release bot", "deploy-agent/7"):
        assert check_name("actor", name) == name
        assert unicodedata.is_normalized("NFC", name)


def test_a_token_straddling_the_cut_of_a_long_actor_shows_not_even_its_start(
    ledger: ApprovalLedger, otel: Telemetry
) -> None:
    token = granted(ledger)
    actor = "a" * (MAX_NAME_LENGTH - 12) + " " + token + " and more"
    refusal(lambda: ledger.consume(token, DEPLOY, actor))
    shown = str(
        dict(otel.spans.get_finished_spans()[-1].attributes or {})["otel_bounded.approval.actor"]
    )
    assert token[:11] not in shown
    assert "<redacted" in shown
