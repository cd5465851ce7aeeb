"""The ``otel-bounded`` command: ``demo`` (the main job) and ``config`` (what the variables say)."""

from __future__ import annotations

import argparse
import difflib
import json
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from otel_bounded import config, demo
from otel_bounded.audit import cli as audit_cli
from otel_bounded.version import __version__

__all__ = ["main"]

_PREFIX = "OTEL_BOUNDED_"
_SET, _UNSET, _REDACTED = "<set>", "<unset>", config.REDACTED


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line `argv` (default: ``sys.argv[1:]``) and return the exit status."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version and usage errors
        code = exit_.code
        return code if isinstance(code, int) else (0 if code is None else 2)
    if args.command == "audit":
        return audit_cli.run(args, sys.stdout, sys.stderr)
    if args.command == "demo":
        return demo.run(args.steps, otlp=args.otlp, stdout=sys.stdout, stderr=sys.stderr)
    return show_config(os.environ, as_json=args.json, stdout=sys.stdout)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="otel-bounded",
        description="Bounded, observable in-memory state for OpenTelemetry users.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run_demo = commands.add_parser(
        "demo",
        help="run a long-lived agent through the trace store, tokens and approvals, and report",
        description=(
            "Run an agent-like workload, one small trace per step, through a TraceStore "
            "configured from the OTEL_BOUNDED_TRACE_* variables; each step also presents a "
            "capability token (HMACTokenProvider.from_env()) and some ask an ApprovalLedger, "
            "with some of each refused. Then print, per capability, what is held against its "
            "caps, evicted, dropped, swept, verified and decided. With "
            "OTEL_EXPORTER_OTLP_ENDPOINT set, spans, metrics and logs are also exported over "
            "OTLP/gRPC; without it nothing leaves the process."
        ),
    )
    run_demo.add_argument(
        "--steps",
        type=_positive_int,
        default=demo.DEFAULT_STEPS,
        help=f"agent steps (traces) to run (default {demo.DEFAULT_STEPS:,}: past the default "
        "10,000-trace cap)",
    )
    run_demo.add_argument(
        "--otlp",
        action="store_true",
        help="export over OTLP, and fail unless OTEL_EXPORTER_OTLP_ENDPOINT is set",
    )
    show = commands.add_parser(
        "config",
        help="show every OTEL_BOUNDED_* variable's effective value and where it came from",
        description=(
            "Show every OTEL_BOUNDED_* variable: its effective value, its source (environment "
            "or default) and, for an invalid value, the value ignored and why. Secrets show "
            "only whether they are set. Exits 1 when a variable the application refuses to "
            "start with is invalid."
        ),
    )
    show.add_argument("--json", action="store_true", help="print JSON instead of a table")
    audit_cli.add_parser(commands)
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {value}")
    return value


# -- config ------------------------------------------------------------------


def show_config(
    environ: Mapping[str, str],
    *,
    as_json: bool,
    stdout: TextIO,
    variables: Sequence[config.Variable] = config.VARIABLES,
) -> int:
    """Print every variable's setting; 1 when a strict variable is invalid, else 0."""
    rows = [_row(config.resolve(variable, environ)) for variable in variables]
    unknown = _unknown_variables(environ, [variable.name for variable in variables])
    if as_json:
        stdout.write(
            json.dumps({"variables": rows, "unknown": unknown}, indent=2, default=str) + "\n"
        )
    else:
        stdout.write(_table(rows, unknown))
    return 1 if any(row["error"] is not None for row in rows) else 0


def _row(setting: config.Setting) -> dict[str, Any]:
    """One variable as plain data, with a secret's value and ignored value never included."""
    variable = setting.variable
    value: Any = setting.value
    ignored = setting.ignored
    reason = setting.reason
    if variable.secret:
        value = _SET if setting.source == "environment" else _UNSET
        if ignored is not None:
            # The reason is already free of the value (config.resolve); the value is hidden here.
            ignored = _REDACTED
    elif variable.redact is not None:
        # Shown, as operators need to see which store is used, but without its credentials.
        if isinstance(value, str):
            value = variable.redact(value)
        if ignored is not None:
            shown = variable.redact(ignored)
            reason = (reason or "").replace(ignored, shown)
            ignored = shown
    error = None
    if ignored is not None and variable.strict:
        error = f"invalid value {_quoted(ignored)}: {reason}; expected {variable.range}"
    return {
        "name": variable.name,
        "value": value,
        "source": setting.source,
        "default": variable.default,
        "range": variable.range,
        "secret": variable.secret,
        "strict": variable.strict,
        "ignored": ignored,
        "reason": reason,
        "error": error,
    }


def _table(rows: list[dict[str, Any]], unknown: list[dict[str, Any]]) -> str:
    name_width = max(len(row["name"]) for row in rows)
    values = [_show(row["value"]) for row in rows]
    value_width = max(len(value) for value in values)
    lines = [f"{'VARIABLE':<{name_width}}  {'VALUE':<{value_width}}  SOURCE"]
    for row, value in zip(rows, values, strict=True):
        line = f"{row['name']:<{name_width}}  {value:<{value_width}}  {row['source']}"
        if row["error"] is not None:
            line = (
                f"{row['name']:<{name_width}}  ERROR: {row['error']} (the application refuses to "
                "start until it is fixed or unset)"
            )
        elif row["ignored"] is not None:
            line += (
                f" (ignored {_quoted(row['ignored'])}: {row['reason']}; expected {row['range']})"
            )
        lines.append(line)
    for entry in unknown:
        lines.append(f"{entry['name']:<{name_width}}  WARNING: {entry['message']}")
    return "\n".join(lines) + "\n"


def _unknown_variables(environ: Mapping[str, str], known: list[str]) -> list[dict[str, Any]]:
    """Set ``OTEL_BOUNDED_*`` names no one reads: a misspelt cap silently keeps its default."""
    unknown = []
    for name in sorted(environ):
        if name.startswith(_PREFIX) and name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            # The value is never shown: an unknown name might hold a secret.
            unknown.append({"name": name, "message": f"not an otel-bounded variable{hint}"})
    return unknown


def _show(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _quoted(ignored: str) -> str:
    return ignored if ignored == _REDACTED else repr(ignored)
