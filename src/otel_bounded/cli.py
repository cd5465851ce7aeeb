"""The ``otel-bounded`` command: ``demo`` (the main job), ``config`` (what the variables say),
and ``traces``, ``trace`` and ``stats`` (what a running process's trace view holds)."""

from __future__ import annotations

import argparse
import difflib
import json
import math
import os
import re
import sys
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from otel_bounded import config, demo
from otel_bounded.audit import cli as audit_cli
from otel_bounded.errors import WebViewError
from otel_bounded.traces.sampler import SamplerInfo, describe_sampler
from otel_bounded.version import __version__
from otel_bounded.web import client

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
        return demo.run(
            args.steps,
            otlp=args.otlp,
            stdout=sys.stdout,
            stderr=sys.stderr,
            serve=args.serve,
            port=args.port,
        )
    if args.command in _VIEW_COMMANDS:
        return show_view(args, stdout=sys.stdout, stderr=sys.stderr)
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
        "--serve",
        action="store_true",
        help="keep serving the trace view after the workload, until Ctrl-C",
    )
    run_demo.add_argument(
        "--port",
        type=_port,
        default=0,
        help="loopback port of the trace view served while the demo runs (default: any free)",
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
    _add_view_commands(commands)
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
    sampler = describe_sampler(environ, provider=_NO_PROVIDER)
    if as_json:
        document = {"variables": rows, "unknown": unknown, "sampler": _sampler_row(sampler)}
        stdout.write(json.dumps(document, indent=2, default=str) + "\n")
    else:
        stdout.write(_table(rows, unknown))
        stdout.write("\n" + _sampler_note(sampler) + "\n")
    return 1 if any(row["error"] is not None for row in rows) else 0


# The command has no tracer provider: the sampler is the one the OTEL_* variables set up.
_NO_PROVIDER = object()


def _sampler_row(sampler: SamplerInfo) -> dict[str, Any]:
    return {
        "name": sampler.name,
        "argument": sampler.argument,
        "source": sampler.source,
        "drops_traces": sampler.ratio,
        "note": _sampler_note(sampler),
    }


def _sampler_note(sampler: SamplerInfo) -> str:
    """Which sampler is in effect, and what that means for a TraceStore."""
    text = (
        f"Sampler: {sampler.describe()} (OTEL_TRACES_SAMPLER). A TraceStore sees only the "
        "spans the sampler records."
    )
    if sampler.ratio:
        text += (
            " This one drops a share of traces before any TraceStore sees them; with tail "
            "export (OTEL_BOUNDED_TRACE_EXPORT) set OTEL_TRACES_SAMPLER=parentbased_always_on "
            "and let the store choose what to ship."
        )
    return text


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


# -- traces, trace, stats: a running process's view ------------------------------

_VIEW_COMMANDS = ("traces", "trace", "stats")
_URL_HELP = "the process's trace view, e.g. http://127.0.0.1:8765 (see OTEL_BOUNDED_HTTP_ENDPOINT)"


def _add_view_commands(commands: Any) -> None:
    traces = commands.add_parser(
        "traces",
        help="list the traces a running process holds, newest first",
        description="List the traces a running process's TraceStore holds, through its view.",
    )
    traces.add_argument("--url", required=True, help=_URL_HELP)
    traces.add_argument("--status", choices=("error", "ok", "unset"))
    traces.add_argument("--name", help="a span name in the trace (a trailing * for a prefix)")
    traces.add_argument("--min-duration-ms", type=_non_negative_float, metavar="D")
    traces.add_argument("--limit", type=_positive_int, default=20, metavar="N")
    traces.add_argument("--json", action="store_true", help="print the JSON the view returns")
    trace = commands.add_parser(
        "trace",
        help="show one held trace as an indented tree",
        description="Show one trace as a tree with durations and statuses; --json prints it "
        "in the OTLP/HTTP JSON encoding, ready to send to a collector's /v1/traces.",
    )
    trace.add_argument("trace_id", metavar="TRACE_ID", help="32 hex digits")
    trace.add_argument("--url", required=True, help=_URL_HELP)
    trace.add_argument("--json", action="store_true", help="print OTLP/HTTP JSON")
    stats = commands.add_parser(
        "stats",
        help="show a running store's held counts against its caps",
        description="Held against every cap, evictions and drops by reason.",
    )
    stats.add_argument("--url", required=True, help=_URL_HELP)
    stats.add_argument("--json", action="store_true", help="print JSON instead of a table")


def show_view(args: argparse.Namespace, *, stdout: TextIO, stderr: TextIO) -> int:
    """Run `traces`, `trace` or `stats` against ``--url``; 1 with one line on stderr on failure."""
    if args.command == "traces":
        path = client.traces_path(
            {
                "status": args.status,
                "name": args.name,
                "min_duration_ms": args.min_duration_ms,
                "limit": args.limit,
            }
        )
        render = client.format_traces
    elif args.command == "trace":
        trace_id = args.trace_id.strip().lower()
        if not _TRACE_ID.fullmatch(trace_id):
            stderr.write(f"otel-bounded trace: a trace id is 32 hex digits, got {trace_id!r}\n")
            return 1
        path, render = f"/api/traces/{trace_id}", client.format_trace
    else:
        path, render = "/api/stats", client.format_stats
    try:
        data = client.fetch_json(args.url, path)
        stdout.write(json.dumps(data, indent=2) + "\n" if args.json else render(data))
    except WebViewError as error:
        stderr.write(f"otel-bounded {args.command}: {error}\n")
        return 1
    except (KeyError, TypeError, ValueError, AttributeError):
        stderr.write(
            f"otel-bounded {args.command}: {args.url} answered something that is not an "
            "otel-bounded view\n"
        )
        return 1
    return 0


_TRACE_ID = re.compile(r"[0-9a-f]{32}")


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be from 0 to 65535, got {value}")
    return value
