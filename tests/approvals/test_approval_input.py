"""What callers hand the ledger: names compared as people read them, hostile objects refused.

Whatever is presented to be checked gets an `ApprovalError`; an invalid
argument gets a `ValueError` whose message never repeats a string it was given.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from otel_bounded.approvals import ApprovalLedger, ApprovalScope, ApprovalStatus
from otel_bounded.errors import ApprovalError, ApprovalReason
from tests.approvals.helpers import DEPLOY, granted
from tests.support import FakeClock


def reason_of(call: Callable[[], object]) -> str:
    with pytest.raises(ApprovalError) as caught:
        call()
    return caught.value.reason_code


def value_error(call: Callable[[], object]) -> str:
    with pytest.raises(ValueError) as caught:  # noqa: PT011 - callers check the message
        call()
    return str(caught.value)


class Booby(str):
    """A string whose methods all raise: only its characters are any use."""

    def encode(self, *args: Any, **kwargs: Any) -> bytes:
        raise RuntimeError("encode")

    def __len__(self) -> int:
        raise TypeError("len")

    def isascii(self) -> bool:
        raise RuntimeError("isascii")

    def strip(self, *args: Any) -> str:
        raise RuntimeError("strip")

    __hash__ = str.__hash__


class ForgedStr:
    """Not a string, but `isinstance(x, str)` believes its forged `__class__`."""

    __class__ = str  # type: ignore[assignment]

    def __len__(self) -> int:
        return 12


# -- whatever verify and consume are shown is refused, never raised past them ------


@pytest.mark.parametrize("use", ["verify", "consume"])
def test_a_str_subclass_token_whose_methods_raise_is_judged_by_its_characters(
    ledger: ApprovalLedger, use: str
) -> None:
    token = granted(ledger)
    check = getattr(ledger, use)
    assert reason_of(lambda: check(Booby("not-a-token"), DEPLOY, "deploy-agent")) == (
        ApprovalReason.NO_APPROVAL
    )
    assert check(Booby(token), DEPLOY, "deploy-agent").executing_actor == "deploy-agent"


def test_every_operation_reads_a_str_subclass_token_by_its_characters(
    ledger: ApprovalLedger,
) -> None:
    pending = ledger.request(DEPLOY, requested_by="agent", executor="agent", ttl_seconds=60)
    assert reason_of(lambda: ledger.approve(Booby("forged"), approver="alice")) == (
        ApprovalReason.NO_APPROVAL
    )
    ledger.approve(Booby(pending.token), approver="alice")
    ledger.delegate(Booby(pending.token), by="agent", to="runner", reason="hand-off")
    assert ledger.revoke(Booby(pending.token), actor="alice").status is ApprovalStatus.REVOKED
    other = ledger.request(DEPLOY, requested_by="agent", executor="agent", ttl_seconds=60)
    assert ledger.deny(Booby(other.token), approver="alice", reason="no").status is (
        ApprovalStatus.DENIED
    )


@pytest.mark.parametrize("use", ["verify", "consume"])
def test_an_object_forging_str_as_its_class_is_not_a_token_and_not_the_executor(
    ledger: ApprovalLedger, use: str
) -> None:
    token = granted(ledger)
    check = getattr(ledger, use)
    assert reason_of(lambda: check(ForgedStr(), DEPLOY, "deploy-agent")) == (
        ApprovalReason.NO_APPROVAL
    )
    assert reason_of(lambda: check(token, DEPLOY, ForgedStr())) == (
        ApprovalReason.UNAUTHORIZED_DELEGATE
    )
    assert ledger.consume(token, DEPLOY, "deploy-agent").uses == 1


@pytest.mark.parametrize("use", ["verify", "consume"])
def test_a_str_subclass_executing_actor_is_judged_by_its_characters(
    ledger: ApprovalLedger, use: str
) -> None:
    token = granted(ledger, max_uses=2)
    check = getattr(ledger, use)
    assert reason_of(lambda: check(token, DEPLOY, Booby("intruder"))) == (
        ApprovalReason.UNAUTHORIZED_DELEGATE
    )
    audit = check(token, DEPLOY, Booby("deploy-agent"))
    assert type(audit.actor) is str
    assert audit.actor == "deploy-agent"


@pytest.mark.parametrize("use", ["verify", "consume"])
def test_a_scope_subclass_presented_is_a_scope_mismatch(ledger: ApprovalLedger, use: str) -> None:
    class Unprintable(ApprovalScope):
        def __repr__(self) -> str:
            raise RuntimeError("repr")

    token = granted(ledger)
    presented = Unprintable(DEPLOY.policy, DEPLOY.action, DEPLOY.resource)
    assert reason_of(lambda: getattr(ledger, use)(token, presented, "deploy-agent")) == (
        ApprovalReason.SCOPE_MISMATCH
    )


def test_a_scope_subclass_cannot_be_requested_so_equality_cannot_widen_it(
    ledger: ApprovalLedger,
) -> None:
    @dataclass(frozen=True, eq=False)
    class MatchesAnything(ApprovalScope):
        def __eq__(self, other: object) -> bool:
            return True

        def __ne__(self, other: object) -> bool:
            return False

        __hash__ = ApprovalScope.__hash__

    message = value_error(
        lambda: ledger.request(
            MatchesAnything("release", "deploy", "service-a"),
            requested_by="agent",
            executor="agent",
            ttl_seconds=60,
        )
    )
    assert "ApprovalScope" in message
    assert ledger.telemetry_counts().live == 0


@pytest.mark.parametrize("operation", ["deny", "revoke", "delegate"])
def test_a_str_subclass_reason_whose_methods_raise_is_read_by_its_characters(
    ledger: ApprovalLedger, operation: str
) -> None:
    token = granted(ledger)
    if operation == "deny":
        token = ledger.request(DEPLOY, requested_by="a", executor="a", ttl_seconds=60).token
        audit = ledger.deny(token, approver="alice", reason=Booby("freeze"))
    elif operation == "revoke":
        audit = ledger.revoke(token, actor="alice", reason=Booby("freeze"))
    else:
        audit = ledger.delegate(token, by="deploy-agent", to="runner", reason=Booby("freeze"))
        assert type(audit.delegation_chain[-1].reason) is str
    assert type(audit.reason) is str
    assert audit.reason == "freeze"


# -- four eyes: one person, however their name is typed ---------------------------


LOOKALIKES_OF_BOT = [
    "Bot",
    "BOT",
    "\uff42\uff4f\uff54",
    "\uff22\uff2f\uff34",
    "\U0001d41b\U0001d428\U0001d42d",
]
"""'bot' in other case, full width, and mathematical bold: the same name to a reader."""


@pytest.mark.parametrize("approver", LOOKALIKES_OF_BOT)
def test_the_requester_may_not_approve_under_another_case_or_width(
    ledger: ApprovalLedger, approver: str
) -> None:
    grant = ledger.request(DEPLOY, requested_by="bot", executor="runner", ttl_seconds=60)
    assert reason_of(lambda: ledger.approve(grant.token, approver=approver)) == (
        ApprovalReason.SELF_APPROVAL
    )


@pytest.mark.parametrize("approver", LOOKALIKES_OF_BOT)
def test_the_executor_may_not_approve_under_another_case_or_width(
    ledger: ApprovalLedger, approver: str
) -> None:
    grant = ledger.request(DEPLOY, requested_by="planner", executor="bot", ttl_seconds=60)
    assert reason_of(lambda: ledger.approve(grant.token, approver=approver)) == (
        ApprovalReason.SELF_APPROVAL
    )


@pytest.mark.parametrize("delegate", ["Alice", "ALICE", "\uff41\uff4c\uff49\uff43\uff45"])
def test_delegating_to_the_approver_under_another_case_or_width_breaks_four_eyes(
    ledger: ApprovalLedger, delegate: str
) -> None:
    token = granted(ledger, approver="alice")
    assert reason_of(
        lambda: ledger.delegate(token, by="deploy-agent", to=delegate, reason="do it yourself")
    ) == (ApprovalReason.SELF_APPROVAL)


@pytest.mark.parametrize("delegate", ["Deploy-Agent", "\uff44eploy-agent"])
def test_delegating_to_oneself_under_another_case_or_width_is_refused(
    ledger: ApprovalLedger, delegate: str
) -> None:
    token = granted(ledger, executor="deploy-agent")
    assert reason_of(
        lambda: ledger.delegate(token, by="deploy-agent", to=delegate, reason="pad the chain")
    ) == (ApprovalReason.DELEGATION_NOT_ALLOWED)


@pytest.mark.parametrize(
    "name",
    [
        "bot ",
        " bot",
        "bot\t",
        "bot\n",
        "bot\u200b",  # zero width space (Cf)
        "b\u00adot",  # soft hyphen (Cf)
        "\ufeffbot",  # byte order mark (Cf)
        "b\u200dot",  # zero width joiner (Cf)
        "b\u202eot",  # right-to-left override (Cf)
        "b\x00ot",  # NUL (Cc)
        "b\x7fot",  # DEL (Cc)
        "b\u2028ot",  # line separator (Zl)
        "b\u2029ot",  # paragraph separator (Zp)
        "b\u00a0ot",  # no-break space (Zs)
        "b\u3000ot",  # ideographic space (Zs)
        "b\ud800ot",  # a lone surrogate: not a character, and no exporter can encode it
    ],
)
def test_a_name_with_edge_whitespace_or_an_invisible_character_is_invalid(
    ledger: ApprovalLedger, name: str
) -> None:
    grant = ledger.request(DEPLOY, requested_by="bot", executor="bot", ttl_seconds=60)
    assert "approver" in value_error(lambda: ledger.approve(grant.token, approver=name))
    assert "requested_by" in value_error(
        lambda: ledger.request(DEPLOY, requested_by=name, executor="bot", ttl_seconds=60)
    )
    assert ledger.approve(grant.token, approver="alice").approving_actor == "alice"


@pytest.mark.parametrize(
    "name", ["Alice Smith", "Jos\u00e9", "Zo\u00eb", "\u5c71\u7530", "release-bot \U0001f916"]
)
def test_a_plain_space_inside_a_name_and_any_script_are_fine(
    ledger: ApprovalLedger, name: str
) -> None:
    grant = ledger.request(DEPLOY, requested_by="bot", executor="bot", ttl_seconds=60)
    assert ledger.approve(grant.token, approver=name).approving_actor == name


def test_audits_keep_each_name_as_it_was_given(ledger: ApprovalLedger) -> None:
    grant = ledger.request(
        DEPLOY, requested_by="Deploy-Agent", executor="Deploy-Agent", ttl_seconds=60
    )
    audit = ledger.approve(grant.token, approver="\uff21lice")
    assert (audit.requested_by, audit.approving_actor) == ("Deploy-Agent", "\uff21lice")
    assert [hop.actor for hop in audit.delegation_chain] == ["\uff21lice", "Deploy-Agent"]


def test_the_executor_binding_stays_exact(ledger: ApprovalLedger) -> None:
    # Folding names may only refuse more: a use must name the executor as it was granted.
    token = granted(ledger, executor="Deploy-Agent")
    assert reason_of(lambda: ledger.verify(token, DEPLOY, "deploy-agent")) == (
        ApprovalReason.UNAUTHORIZED_DELEGATE
    )
    assert ledger.consume(token, DEPLOY, "Deploy-Agent").uses == 1


# -- error messages never repeat a string they were given ---------------------------


def test_a_token_given_as_a_number_is_not_repeated_in_the_error(ledger: ApprovalLedger) -> None:
    token = granted(ledger)
    calls: list[Callable[[], object]] = [
        lambda: ledger.delegate(token, by="deploy-agent", to="b", reason="r", ttl_seconds=token),  # type: ignore[arg-type]
        lambda: ledger.delegate(token, by="deploy-agent", to="b", reason="r", max_uses=token),  # type: ignore[arg-type]
        lambda: ledger.request(DEPLOY, requested_by="a", executor="a", ttl_seconds=token),  # type: ignore[arg-type]
        lambda: ledger.request(
            DEPLOY,
            requested_by="a",
            executor="a",
            ttl_seconds=60,
            max_uses=token,  # type: ignore[arg-type]
        ),
    ]
    for call in calls:
        message = value_error(call)
        assert token not in message
        assert "str" in message


def test_a_token_given_as_bytes_for_a_name_or_reason_is_not_repeated_in_the_error(
    ledger: ApprovalLedger,
) -> None:
    token = granted(ledger)
    calls: list[Callable[[], object]] = [
        lambda: ledger.revoke(token, actor=token.encode()),  # type: ignore[arg-type]
        lambda: ledger.revoke(token, actor="alice", reason=token.encode()),  # type: ignore[arg-type]
        lambda: ApprovalScope("release", token.encode()),  # type: ignore[arg-type]
    ]
    for call in calls:
        message = value_error(call)
        assert token not in message
        assert "bytes" in message


@pytest.mark.parametrize(
    ("arguments", "shown"),
    [({"ttl_seconds": -5}, "-5"), ({"ttl_seconds": 0.0}, "0.0"), ({"max_uses": 0}, "0")],
)
def test_an_invalid_plain_number_is_still_shown(
    ledger: ApprovalLedger, arguments: dict[str, Any], shown: str
) -> None:
    request = {"requested_by": "a", "executor": "a", "ttl_seconds": 60, **arguments}
    assert value_error(lambda: ledger.request(DEPLOY, **request)).endswith(f"got {shown}")


def test_a_number_subclass_is_shown_by_its_type_only(ledger: ApprovalLedger) -> None:
    class Secretive(int):
        def __repr__(self) -> str:
            return "a-secret-in-a-repr"

    message = value_error(
        lambda: ledger.request(
            DEPLOY, requested_by="a", executor="a", ttl_seconds=60, max_uses=Secretive(0)
        )
    )
    assert "a-secret-in-a-repr" not in message
    assert "Secretive" in message


# -- numbers that compare as they please -------------------------------------------


def test_an_int_subclass_cannot_add_uses_through_a_delegation(ledger: ApprovalLedger) -> None:
    class NeverMore(int):
        def __gt__(self, other: object) -> bool:
            return False

    token = granted(ledger, max_uses=1)
    assert reason_of(
        lambda: ledger.delegate(
            token, by="deploy-agent", to="runner", reason="r", max_uses=NeverMore(1000)
        )
    ) == (ApprovalReason.DELEGATION_NOT_ALLOWED)
    assert ledger.verify(token, DEPLOY, "deploy-agent").max_uses == 1


def test_a_float_subclass_cannot_extend_the_expiry_through_a_delegation(
    ledger: ApprovalLedger, clock: FakeClock
) -> None:
    class FarFuture(float):
        def __gt__(self, other: object) -> bool:
            return other == 0

        def __radd__(self, other: object) -> FarFuture:
            return FarFuture(float(other) + 10**6)  # type: ignore[arg-type]

    token = granted(ledger, ttl_seconds=600)
    audit = ledger.delegate(
        token, by="deploy-agent", to="runner", reason="r", ttl_seconds=FarFuture(60)
    )
    assert audit.expires_at == clock() + 60
    assert type(audit.expires_at) is float


@pytest.mark.parametrize("seconds_argument", ["retention_seconds", "request_ttl_seconds"])
def test_an_integer_too_large_for_a_float_is_a_value_error(seconds_argument: str) -> None:
    assert seconds_argument in value_error(
        lambda: ApprovalLedger(clock=FakeClock(), **{seconds_argument: 10**400})
    )


def test_a_ttl_too_large_for_a_float_is_a_value_error(ledger: ApprovalLedger) -> None:
    message = value_error(
        lambda: ledger.request(DEPLOY, requested_by="a", executor="a", ttl_seconds=10**400)
    )
    assert "ttl_seconds" in message
    assert ledger.telemetry_counts().live == 0
