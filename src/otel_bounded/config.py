"""Every ``OTEL_BOUNDED_*`` variable, with its default, range and parser, in one place.

Values are read as the OpenTelemetry specification reads SDK variables: an
empty value means unset; an invalid numeric or boolean value logs a WARNING
naming the variable and the value, then the default is used. Variables whose
fallback would silently lose revocations or change keys (``strict``) raise
``ValueError`` naming the variable instead.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "REDACTED",
    "VARIABLES",
    "SafeReason",
    "Setting",
    "Variable",
    "read",
    "read_arguments",
    "redact_url",
    "resolve",
]

_logger = logging.getLogger("otel_bounded")


MIN_SECRET_BYTES = 32
"""Shortest HMAC secret accepted, in bytes (the output size of SHA-256)."""

MAX_TTL_CEILING_SECONDS = 10 * 365.25 * 86_400
"""Longest token lifetime a provider may be configured for: ten years."""

# ASCII digits only: int() and float() also take "1_000", "+7" and full-width digits.
_INTEGER = re.compile(r"-?[0-9]+")
_NUMBER = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def _positive_int(text: str) -> int:
    if not _INTEGER.fullmatch(text.strip()):
        raise ValueError("not an integer")
    value = int(text.strip())
    if value <= 0:
        raise ValueError("must be greater than 0")
    return value


def _number(text: str) -> float:
    if not _NUMBER.fullmatch(text.strip()):
        raise ValueError("not a number")
    value = float(text.strip())
    if value == float("inf"):
        raise ValueError("must be finite")
    return value


def _positive_number(text: str) -> float:
    value = _number(text)
    if not value > 0:
        raise ValueError("must be greater than 0")
    return value


def _non_negative_number(text: str) -> float:
    value = _number(text)
    if value < 0:
        raise ValueError("must be 0 or greater")
    return value


def _fraction(text: str) -> float:
    value = _number(text)
    if not 0 <= value < 1:
        raise ValueError("must be at least 0 and less than 1")
    return value


_EXPORT_TARGETS = ("otlp", "console", "none")


def _export_target(text: str) -> str:
    value = text.strip().lower()
    if value not in _EXPORT_TARGETS:
        raise ValueError("not otlp, console or none")
    return value


EXPORT_CONDITIONS = ("error", "slow", "security")
"""The trace conditions ``OTEL_BOUNDED_TRACE_EXPORT_WHEN`` may name, besides ``ratio:<r>``."""


def parse_export_when(text: str) -> tuple[frozenset[str], float]:
    """``error,slow,ratio:0.01`` as (conditions, ratio); ValueError naming what is wrong."""
    conditions: set[str] = set()
    ratio = 0.0
    for raw in text.split(","):
        term = raw.strip().lower()
        if not term:
            continue
        if term.startswith("ratio:"):
            ratio = _number(term[len("ratio:") :])
            if not 0 <= ratio <= 1:
                raise ValueError(f"ratio must be between 0 and 1, got {term!r}")
        elif term in EXPORT_CONDITIONS:
            conditions.add(term)
        else:
            raise ValueError(f"unknown condition {term!r}")
    return frozenset(conditions), ratio


def _export_when(text: str) -> str:
    parse_export_when(text)
    return text.strip()


def _lifetime(text: str) -> float:
    value = _positive_number(text)
    if value > MAX_TTL_CEILING_SECONDS:
        raise ValueError(f"must be at most {MAX_TTL_CEILING_SECONDS:.0f} (ten years)")
    return value


class SafeReason(ValueError):
    """A parser's refusal whose message never quotes the value, so it may be shown whole.

    A secret variable's parser raises it; any other `ValueError` from such a
    parser is shown only with the value cut out, or not at all (`resolve`).
    """


def _secret(text: str) -> str:
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise SafeReason("not valid UTF-8") from None
    if size < MIN_SECRET_BYTES:
        raise SafeReason(f"shorter than {MIN_SECRET_BYTES} bytes")
    return text


def _readable_file(text: str) -> str:
    if not os.access(os.path.expanduser(text), os.R_OK):
        raise ValueError("no readable file there")
    return text


_STORE_SCHEMES = ("memory", "sqlite", "redis", "rediss")


def _store_url(text: str) -> str:
    scheme = text.strip().split(":", 1)[0].lower()
    if scheme not in _STORE_SCHEMES or (scheme != "memory" and "://" not in text):
        raise ValueError("not memory, sqlite:///path or redis://host:port/db")
    return text


def _boolean(text: str) -> bool:
    # The specification: only a case-insensitive "true" is true; anything but
    # "false" is reported, and read as false.
    lowered = text.strip().lower()
    if lowered == "true":
        return True
    if lowered == "false":
        return False
    raise ValueError("not 'true' or 'false'")


def _loopback_endpoint(text: str) -> str:
    host, colon, port = text.strip().rpartition(":")
    if not colon or not host or not _INTEGER.fullmatch(port) or not 0 <= int(port) <= 65535:
        raise ValueError("not host:port with a port from 0 to 65535")
    if host.lower() != "localhost":
        try:
            loopback = ipaddress.ip_address(host.strip("[]")).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise ValueError(
                "not a loopback address: a view started from a variable has no auth, so it "
                "binds only 127.0.0.1, ::1 or localhost (serve(..., auth=) in code for others)"
            )
    return text.strip()


_CREDENTIAL_NAME = re.compile(r"pass|pwd|user|secret|token|auth|cred|key", re.IGNORECASE)
_QUERY_FIELD = re.compile(r"([^&;=]*)(=?)([^&;]*)")
# URL parsers (urllib, so redis-py) drop these before splitting: so must the redaction.
_IGNORED_BY_URL_PARSERS = str.maketrans("", "", "\t\r\n")


def redact_url(url: str) -> str:
    """`url` with every credential in it replaced by ``***``, for messages, reprs and output.

    Credentials hide in the userinfo (``user:password@``; both parts go, as
    a lone ``secret@`` is often a password) and in query parameters clients
    such as redis-py honour (``?password=``, ``?username=``). The userinfo
    runs to the last ``@``, so a password holding an unescaped ``#``, ``?``
    or ``/`` is hidden whole. The rest is kept as written, so an operator
    still sees which store is used.
    """
    text = url.translate(_IGNORED_BY_URL_PARSERS)
    scheme, separator, rest = text.partition("://")
    if not separator:
        scheme, rest = "", text
    userinfo, at = "", ""
    if not rest.startswith("/"):  # sqlite:///path has no authority, so no userinfo
        userinfo, at, remainder = rest.rpartition("@")
        if at:
            user, colon, _ = userinfo.partition(":")
            userinfo = ("***" if user else "") + (":***" if colon else "")
            rest = remainder
    body, hash_mark, fragment = rest.partition("#")
    location, question_mark, query = body.partition("?")
    if "=" in location:  # what a misplaced @ left of a query
        location = _QUERY_FIELD.sub(_redact_query_field, location)
    return "".join(
        (
            scheme + separator,
            userinfo,
            at,
            location,
            question_mark,
            _QUERY_FIELD.sub(_redact_query_field, query),
            hash_mark,
            "***" if fragment else "",
        )
    )


def _redact_query_field(field: re.Match[str]) -> str:
    name, equals, value = field.groups()
    if value and _CREDENTIAL_NAME.search(urllib.parse.unquote_plus(name)):
        value = "***"
    return f"{name}{equals}{value}"


@dataclass(frozen=True)
class Variable:
    """One ``OTEL_BOUNDED_*`` variable: what it sets, its default and how it is parsed."""

    name: str
    default: Any
    parse: Callable[[str], Any]
    range: str
    effect: str
    strict: bool = False
    secret: bool = False
    redact: Callable[[str], str] | None = None
    """Shows a value with its credentials hidden (a URL's password), for a non-secret variable."""


@dataclass(frozen=True)
class Setting:
    """A variable's effective value and where it came from (``environment`` or ``default``).

    For a secret variable, `reason` never holds the value (see `resolve`);
    `ignored` does, and is for the caller to hide.
    """

    variable: Variable
    value: Any
    source: str
    ignored: str | None = None
    reason: str | None = None


TRACE_MAX_TRACES = Variable(
    "OTEL_BOUNDED_TRACE_MAX_TRACES",
    10_000,
    _positive_int,
    "integer > 0",
    "Most traces a TraceStore holds; the least recently active are evicted first.",
)
TRACE_MAX_SPANS = Variable(
    "OTEL_BOUNDED_TRACE_MAX_SPANS",
    100_000,
    _positive_int,
    "integer > 0",
    "Most spans a TraceStore holds in all; whole oldest traces are evicted to make room.",
)
TRACE_MAX_SPANS_PER_TRACE = Variable(
    "OTEL_BOUNDED_TRACE_MAX_SPANS_PER_TRACE",
    1_000,
    _positive_int,
    "integer > 0",
    "Most spans held for one trace; further spans of that trace are dropped and counted.",
)
TRACE_TTL_SECONDS = Variable(
    "OTEL_BOUNDED_TRACE_TTL_SECONDS",
    None,
    _positive_number,
    "number > 0 (unset: no age limit)",
    "A trace idle this long (no span recorded) is expired and never returned again.",
)
TRACE_COMPACTION_ENABLED = Variable(
    "OTEL_BOUNDED_TRACE_COMPACTION_ENABLED",
    False,
    _boolean,
    "true | false",
    "Collapse repetitive fast sibling spans into composite spans before evicting anything.",
)
TRACE_COMPACTION_EXACT_MATCH_MAX_DURATION_MS = Variable(
    "OTEL_BOUNDED_TRACE_COMPACTION_EXACT_MATCH_MAX_DURATION_MS",
    50.0,
    _non_negative_number,
    "number >= 0 (0: off)",
    "Longest span, in milliseconds, that exact-match compaction may merge.",
)
TRACE_COMPACTION_SAME_KIND_MAX_DURATION_MS = Variable(
    "OTEL_BOUNDED_TRACE_COMPACTION_SAME_KIND_MAX_DURATION_MS",
    0.0,
    _non_negative_number,
    "number >= 0 (0: off)",
    "Longest span, in milliseconds, that same-kind compaction may merge.",
)
TRACE_COMPACTION_AT_SPANS = Variable(
    "OTEL_BOUNDED_TRACE_COMPACTION_AT_SPANS",
    64,
    _positive_int,
    "integer > 0",
    "A trace is compacted each time the spans held for it grow by this many.",
)
TRACE_MAX_BYTES = Variable(
    "OTEL_BOUNDED_TRACE_MAX_BYTES",
    256 * 1024 * 1024,
    _positive_int,
    "integer > 0 (bytes)",
    "Most bytes a TraceStore holds, estimated as each span is encoded; oldest traces go first.",
)
TRACE_MAX_ATTRIBUTE_LENGTH = Variable(
    "OTEL_BOUNDED_TRACE_MAX_ATTRIBUTE_LENGTH",
    None,
    _positive_int,
    "integer > 0 (unset: no truncation)",
    "Longer string values (and sequences) are cut to this length when held, the span marked.",
)
TRACE_PROTECTED_FRACTION = Variable(
    "OTEL_BOUNDED_TRACE_PROTECTED_FRACTION",
    0.25,
    _fraction,
    "number >= 0 and < 1",
    "Share of every cap reserved for error, slow and security traces; normal ones go first.",
)
TRACE_SLOW_THRESHOLD_MS = Variable(
    "OTEL_BOUNDED_TRACE_SLOW_THRESHOLD_MS",
    1_000.0,
    _positive_number,
    "number > 0",
    "A trace whose local root took at least this many milliseconds is a slow trace.",
)
TRACE_EXPORT = Variable(
    "OTEL_BOUNDED_TRACE_EXPORT",
    "none",
    _export_target,
    "otlp | console | none",
    "Tail export: where the store sends the traces OTEL_BOUNDED_TRACE_EXPORT_WHEN selects.",
)
TRACE_EXPORT_WHEN = Variable(
    "OTEL_BOUNDED_TRACE_EXPORT_WHEN",
    "error,slow,security",
    _export_when,
    "comma-separated error, slow, security, ratio:<0..1>",
    "Which traces the tail export sends, decided when a trace's local root ends.",
)
TOKEN_SECRET = Variable(
    "OTEL_BOUNDED_TOKEN_SECRET",
    None,
    _secret,
    "at least 32 bytes (unset: a random development secret)",
    "HMAC key for capability tokens; every replica that verifies must share it.",
    strict=True,
    secret=True,
)
TOKEN_SECRET_FILE = Variable(
    "OTEL_BOUNDED_TOKEN_SECRET_FILE",
    None,
    _readable_file,
    "path to a file holding the secret",
    "Read the HMAC key from this file instead of OTEL_BOUNDED_TOKEN_SECRET.",
    strict=True,
    # Never shown: a secret put here instead of its path would be echoed.
    secret=True,
)
TOKEN_MAX_TTL_SECONDS = Variable(
    "OTEL_BOUNDED_TOKEN_MAX_TTL_SECONDS",
    86_400.0,
    _lifetime,
    "number > 0, at most 315576000 (ten years)",
    "Longest token lifetime issued or accepted; also how long an unknown id's revocation is kept.",
)
TOKEN_SWEEP_INTERVAL_SECONDS = Variable(
    "OTEL_BOUNDED_TOKEN_SWEEP_INTERVAL_SECONDS",
    60.0,
    _positive_number,
    "number > 0",
    "Least time between two automatic sweeps of expired revocations.",
)
REVOCATION_STORE = Variable(
    "OTEL_BOUNDED_REVOCATION_STORE",
    "memory",
    _store_url,
    "memory | sqlite:///path | redis://host:port/db",
    "Where revocations are kept: this process, a SQLite file, or a Redis shared by every replica.",
    strict=True,
    redact=redact_url,
)
APPROVAL_STORE = Variable(
    "OTEL_BOUNDED_APPROVAL_STORE",
    "memory",
    _store_url,
    "memory | sqlite:///path | redis://host:port/db",
    "Where ApprovalLedger.from_env() keeps approvals: this process, a SQLite file, or a Redis "
    "shared by every replica.",
    strict=True,
    redact=redact_url,
)

HTTP_ENDPOINT = Variable(
    "OTEL_BOUNDED_HTTP_ENDPOINT",
    None,
    _loopback_endpoint,
    "host:port on loopback, e.g. 127.0.0.1:8765 (unset: no view)",
    "Zero-code registration also serves the trace store's read-only web view there.",
)


def _byte_cap(text: str) -> int:
    value = _positive_int(text)
    if value < 2 * MIN_AUDIT_SEGMENT_BYTES:
        raise ValueError(f"must be at least {2 * MIN_AUDIT_SEGMENT_BYTES}")
    return value


def _audit_key(text: str) -> str:
    # The reasons never quote the value: it is a secret.
    stripped = text.strip()
    if not (re.fullmatch(r"[0-9a-fA-F]{64}", stripped) or stripped.startswith("-----BEGIN")):
        raise ValueError("not 64 hex digits or a PEM private key")
    return text


MIN_AUDIT_SEGMENT_BYTES = 4096
"""Smallest audit segment accepted, in bytes."""

AUDIT_PATH = Variable(
    "OTEL_BOUNDED_AUDIT_PATH",
    None,
    str,
    "a directory (unset: no audit log)",
    "Directory of the hash-chained audit log that from_env() attaches to stores and providers.",
    strict=True,
)
AUDIT_MAX_BYTES = Variable(
    "OTEL_BOUNDED_AUDIT_MAX_BYTES",
    256 * 1024 * 1024,
    _byte_cap,
    f"integer >= {2 * MIN_AUDIT_SEGMENT_BYTES}",
    "Most bytes the audit log's segments hold; the oldest go first, after a retention record.",
)
AUDIT_KEY = Variable(
    "OTEL_BOUNDED_AUDIT_KEY",
    None,
    _audit_key,
    "Ed25519 private key: 64 hex digits or PEM (unset: checkpoints are not signed)",
    "Signs the audit log's checkpoints; verifiers need only its public key.",
    strict=True,
    secret=True,
)
AUDIT_KEY_FILE = Variable(
    "OTEL_BOUNDED_AUDIT_KEY_FILE",
    None,
    _readable_file,
    "path to a file holding the key",
    "Read the audit signing key from this file instead of OTEL_BOUNDED_AUDIT_KEY.",
    strict=True,
)

VARIABLES: tuple[Variable, ...] = (
    TRACE_MAX_TRACES,
    TRACE_MAX_SPANS,
    TRACE_MAX_SPANS_PER_TRACE,
    TRACE_TTL_SECONDS,
    TRACE_COMPACTION_ENABLED,
    TRACE_COMPACTION_EXACT_MATCH_MAX_DURATION_MS,
    TRACE_COMPACTION_SAME_KIND_MAX_DURATION_MS,
    TRACE_COMPACTION_AT_SPANS,
    TRACE_MAX_BYTES,
    TRACE_MAX_ATTRIBUTE_LENGTH,
    TRACE_PROTECTED_FRACTION,
    TRACE_SLOW_THRESHOLD_MS,
    TRACE_EXPORT,
    TRACE_EXPORT_WHEN,
    TOKEN_SECRET,
    TOKEN_SECRET_FILE,
    TOKEN_MAX_TTL_SECONDS,
    TOKEN_SWEEP_INTERVAL_SECONDS,
    REVOCATION_STORE,
    APPROVAL_STORE,
    HTTP_ENDPOINT,
    AUDIT_PATH,
    AUDIT_MAX_BYTES,
    AUDIT_KEY,
    AUDIT_KEY_FILE,
)


def resolve(variable: Variable, environ: Mapping[str, str] | None = None) -> Setting:
    """The effective setting of ``variable``, never raising and never logging."""
    env = os.environ if environ is None else environ
    raw = env.get(variable.name, "")
    if raw.strip() == "":
        return Setting(variable, variable.default, "default")
    try:
        return Setting(variable, variable.parse(raw), "environment")
    except ValueError as exc:
        reason = _secret_safe_reason(exc, raw) if variable.secret else str(exc)
        return Setting(variable, variable.default, "default", ignored=raw, reason=reason)


REDACTED = "<redacted>"
"""What is shown in place of a secret value."""

_WITHHELD_REASON = "invalid value (the reason is withheld: it would reveal the secret)"


def _secret_safe_reason(error: ValueError, value: str) -> str:
    """`error`'s message, safe to show for a secret `value`.

    A `SafeReason` is shown whole. Any other message may quote the value (as
    ``int()``'s does): each quoted copy of it is replaced whole, and if the
    value still occurs after that, the message is withheld entirely. Letters
    of the message are never replaced one by one, which would reveal them.
    """
    if isinstance(error, SafeReason):
        return str(error)
    reason = str(error)
    for form in sorted({value, value.strip()} - {""}, key=len, reverse=True):
        reason = reason.replace(repr(form), repr(REDACTED))
    if any(form in reason for form in {value, value.strip()} - {""}):
        return _WITHHELD_REASON
    return reason


def read(variable: Variable, environ: Mapping[str, str] | None = None) -> Any:
    """The effective value of ``variable``; warns (or raises, if strict) on an invalid value."""
    setting = resolve(variable, environ)
    if setting.ignored is not None:
        ignored, reason = setting.ignored, setting.reason or "invalid"
        if variable.redact is not None:
            ignored, reason = (
                variable.redact(ignored),
                reason.replace(ignored, variable.redact(ignored)),
            )
        # A secret's reason never holds its value (`resolve`); the value itself is never shown.
        shown = REDACTED if variable.secret else repr(ignored)
        if variable.strict:
            raise ValueError(f"{variable.name}={shown} is invalid: {reason}")
        _logger.warning(
            "%s=%s is invalid (%s; expected %s); using %r",
            variable.name,
            shown,
            reason,
            variable.range,
            setting.value,
        )
    return setting.value


def read_arguments(
    variables: Mapping[str, Variable], overrides: Mapping[str, Any]
) -> dict[str, Any]:
    """Constructor arguments from `variables` (argument name -> variable), `overrides` winning.

    A variable whose argument is overridden is not read at all, so an invalid
    value there neither warns nor raises.
    """
    arguments = {
        argument: read(variable)
        for argument, variable in variables.items()
        if argument not in overrides
    }
    arguments.update(overrides)
    return arguments
