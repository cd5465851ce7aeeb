"""``otel-bounded audit``: verify, show and export a log; make a signing key."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TextIO

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from otel_bounded import telemetry
from otel_bounded.audit.format import key_id_of, load_public_key
from otel_bounded.audit.otlp import request_from_resource_spans
from otel_bounded.audit.verifier import VerifyReport, default_workers, read_records, verify

__all__ = ["add_parser", "run"]

_EXPORT_BATCH = 64


def add_parser(commands: Any) -> None:
    """Add the ``audit`` command and its subcommands to the top-level `commands`."""
    audit = commands.add_parser(
        "audit",
        help="verify, show or export an audit log; make a signing key",
        description="Work with an audit log written by otel_bounded.audit.AuditLog.",
    )
    actions = audit.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    check = actions.add_parser(
        "verify",
        help="prove the log is whole: exit 0 and a summary, or 1 naming the first bad record",
        description=(
            "Recompute the hash chain of every segment, check each checkpoint's and retention "
            "record's signature, and that only declared retention removed anything. Needs the "
            "files and the public key only."
        ),
    )
    check.add_argument("path", help="the log's directory")
    _key_argument(check)
    check.add_argument(
        "--allow-open",
        action="store_true",
        help="accept a log that is still being written or whose writer crashed "
        "(records after its last checkpoint are reported, not sealed)",
    )
    check.add_argument("--json", action="store_true", help="print the summary as JSON")
    show = actions.add_parser("show", help="print records (not verified: run verify first)")
    show.add_argument("path", help="the log's directory")
    show.add_argument(
        "--kind", help="only this kind, or its family (approval matches approval.consume)"
    )
    show.add_argument(
        "--since", type=_since, help="only records at or after this time (Unix seconds or ISO 8601)"
    )
    show.add_argument("--json", action="store_true", help="one JSON object per line")
    export = actions.add_parser(
        "export",
        help="re-send the evicted traces a verified log holds to an OTLP/gRPC endpoint",
    )
    export.add_argument("path", help="the log's directory")
    export.add_argument(
        "--otlp", required=True, metavar="ENDPOINT", help="OTLP/gRPC endpoint, e.g. localhost:4317"
    )
    _key_argument(export)
    export.add_argument("--allow-open", action="store_true", help="as for verify")
    export.add_argument("--since", type=_since, help="only traces evicted at or after this time")
    keygen = actions.add_parser(
        "keygen",
        help="write a new Ed25519 signing key (PEM, mode 0600) and print its public key",
    )
    keygen.add_argument("private_key_file", help="where to write the private key (must not exist)")


def _key_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--workers",
        type=_positive_int,
        default=None,
        metavar="N",
        help="processes checking segments in parallel (default: one per CPU for a log of "
        "64 MiB or more, else 1)",
    )
    parser.add_argument(
        "--witness",
        action="append",
        default=[],
        type=_witness,
        metavar="SEQ:HASH",
        help="a checkpoint seen before (verify prints the last one): the log must still reach "
        "it with the same hash, which catches a rollback (repeatable)",
    )
    parser.add_argument(
        "--key",
        action="append",
        default=[],
        metavar="KEY",
        help="public key the checkpoints must be signed with: 64 hex digits or a PEM file "
        "(repeat for a log signed by several keys over its life)",
    )


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"not a positive integer: {text!r}")
    return int(text)


def _witness(text: str) -> tuple[int, str]:
    seq, _, chain = text.partition(":")
    if not seq.isdigit() or len(chain) != 64 or chain.strip("0123456789abcdef"):
        raise argparse.ArgumentTypeError(f"not SEQ:HASH (64 lowercase hex digits): {text!r}")
    return int(seq), chain


def _since(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not Unix seconds or an ISO 8601 time: {text!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.timestamp()


def run(args: argparse.Namespace, stdout: TextIO = sys.stdout, stderr: TextIO = sys.stderr) -> int:
    """Run one ``audit`` subcommand; the exit status."""
    command = args.audit_command
    if command == "keygen":
        return _keygen(Path(args.private_key_file), stdout, stderr)
    if not Path(args.path).is_dir():
        stderr.write(f"otel-bounded audit: no log directory at {args.path}\n")
        return 2
    if command == "show":
        return _show(args.path, args.kind, args.since, args.json, stdout)
    try:
        keys = [_read_key(text) for text in args.key]
    except ValueError as error:
        stderr.write(f"otel-bounded audit: --key: {error}\n")
        return 2
    workers = args.workers if args.workers is not None else default_workers(args.path)
    report = verify(
        args.path, keys, allow_open=args.allow_open, witnesses=args.witness, workers=workers
    )
    if command == "verify":
        if args.json:
            stdout.write(json.dumps(_summary(report), indent=2) + "\n")
        else:
            stdout.write(_text_summary(report))
        return 0 if report.ok else 1
    if not report.ok:
        stderr.write("otel-bounded audit: refusing to export a log that fails verification:\n")
        stderr.write(f"  {report.problem}\n")
        return 1
    return _export(args.path, args.otlp, args.since, stdout, stderr)


def _read_key(text: str) -> Ed25519PublicKey:
    path = Path(text).expanduser()
    if path.is_file():
        try:
            return load_public_key(path.read_text("ascii"))
        except (OSError, UnicodeDecodeError):
            raise ValueError(f"cannot read the key file {path}") from None
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from None
    # Never echoed: a private key may have been pasted by mistake.
    try:
        return load_public_key(text)
    except ValueError:
        raise ValueError("not 64 hex digits of a public key, nor a readable key file") from None


def _summary(report: VerifyReport) -> dict[str, Any]:
    problem = report.problem
    return {
        "ok": report.ok,
        "problem": None
        if problem is None
        else {
            "failure": problem.failure,
            "segment": problem.segment,
            "line": problem.line,
            "seq": problem.seq,
            "detail": problem.detail,
        },
        "records": report.records,
        "segments": report.segments,
        "first_seq": report.first_seq,
        "last_seq": report.last_seq,
        "first_time": report.first_time,
        "last_time": report.last_time,
        "checkpoints": report.checkpoints,
        "retention": [
            {
                key: item.get(key)
                for key in ("seq", "removed_through", "records", "segments", "bytes", "reason")
            }
            for item in report.retention
        ],
        "gaps": report.gaps,
        "dropped": report.dropped,
        "opens": report.opens,
        "unclean_opens": report.unclean_opens,
        "torn_bytes_sealed": report.torn_bytes_sealed,
        "signed": report.signed,
        "pinned": report.pinned,
        "key_ids": list(report.key_ids),
        "closed": report.closed,
        "unsealed": report.unsealed,
        "torn_tail": report.torn_tail,
        "kinds": report.kinds,
        "last_checkpoint": None
        if report.last_checkpoint is None
        else {"seq": report.last_checkpoint[0], "chain": report.last_checkpoint[1]},
        "witnesses_checked": report.witnesses_checked,
        "witnesses_unchecked": report.witnesses_unchecked,
    }


def _when(seconds: float | None) -> str:
    if seconds is None or seconds != seconds:
        return "unknown"
    try:
        moment = datetime.datetime.fromtimestamp(seconds, tz=datetime.timezone.utc)
    except (OverflowError, OSError, ValueError):
        return repr(seconds)
    return moment.isoformat(timespec="milliseconds")


def _text_summary(report: VerifyReport) -> str:
    if not report.ok:
        return (
            f"FAILED: {report.problem}\n"
            f"verified before it: {report.records:,} record(s) in {report.segments} segment(s)\n"
        )
    lines = ["OK: the log verifies"]
    lines.append(
        f"records:     {report.records:,} in {report.segments} segment(s)"
        + (f", seq {report.first_seq}..{report.last_seq}" if report.last_seq is not None else "")
    )
    lines.append(f"time:        {_when(report.first_time)} .. {_when(report.last_time)}")
    if report.retention:
        latest = report.retention[-1]
        lines.append(
            f"retention:   {len(report.retention)} record(s); the latest removed records up to "
            f"{latest.get('removed_through')} under max_bytes"
        )
    else:
        lines.append("retention:   none")
    lines.append(f"gaps:        {report.gaps} ({report.dropped:,} appends never written)")
    lines.append(
        f"opens:       {report.opens} ({report.unclean_opens} after a crash; "
        f"{report.torn_bytes_sealed} torn bytes sealed)"
    )
    if report.pinned:
        signing = "signed with the key(s) given"
    elif report.signed:
        signing = (
            f"signed by {', '.join(report.key_ids)}, a key the log names itself: pass --key "
            "to prove who wrote it"
        )
    else:
        signing = "NOT signed: the chain shows damage, but anyone could have rewritten it whole"
    lines.append(f"checkpoints: {report.checkpoints}, {signing}")
    if report.last_checkpoint is not None:
        seq, chain = report.last_checkpoint
        lines.append(
            f"witness:     {seq}:{chain} (keep it away from this host; pass it as --witness "
            "next time to detect a rollback)"
        )
    if report.witnesses_checked or report.witnesses_unchecked:
        lines.append(
            f"witnesses:   {report.witnesses_checked} matched, {report.witnesses_unchecked} "
            "older than the retained records (not comparable)"
        )
    if not report.closed:
        lines.append(
            f"open:        the log has no closing checkpoint; {report.unsealed} record(s) after "
            f"the last checkpoint are not sealed"
            + (f"; {report.torn_tail} torn bytes at its end" if report.torn_tail else "")
        )
    return "\n".join(lines) + "\n"


def _matches(kind: str, wanted: str | None) -> bool:
    return wanted is None or kind == wanted or kind.startswith(wanted + ".")


def _show(path: str, kind: str | None, since: float | None, as_json: bool, stdout: TextIO) -> int:
    for record in read_records(path):
        if not _matches(record.kind, kind) or (since is not None and not record.time >= since):
            continue
        if as_json:
            stdout.write(
                json.dumps(
                    {
                        "seq": record.seq,
                        "time": record.time,
                        "kind": record.kind,
                        "payload": record.payload,
                    },
                    ensure_ascii=True,
                    allow_nan=True,
                )
                + "\n"
            )
        else:
            # ASCII only: a payload cannot move the cursor or rewrite the terminal.
            payload = json.dumps(record.payload, ensure_ascii=True, separators=(",", ":"))
            stdout.write(f"{record.seq}\t{_when(record.time)}\t{record.kind}\t{payload}\n")
    return 0


def _export(path: str, endpoint: str, since: float | None, stdout: TextIO, stderr: TextIO) -> int:
    import grpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

    target, secure = _grpc_target(endpoint)
    channel = (
        grpc.secure_channel(target, grpc.ssl_channel_credentials())
        if secure
        else grpc.insecure_channel(target, options=(("grpc.enable_http_proxy", 0),))
    )
    stub = trace_service_pb2_grpc.TraceServiceStub(channel)  # type: ignore[no-untyped-call]
    traces = spans = 0
    try:
        for batch in _batches(_evicted(path, since)):
            request = request_from_resource_spans(item for _, items in batch for item in items)
            stub.Export(request, timeout=30)
            traces += len(batch)
            spans += sum(
                len(scope.spans)
                for resource in request.resource_spans
                for scope in resource.scope_spans
            )
    except grpc.RpcError as error:
        stderr.write(
            f"otel-bounded audit: export to {target} failed after {traces} trace(s): "
            f"{error.code().name}\n"
        )
        return 1
    except ValueError as error:
        stderr.write(f"otel-bounded audit: {error}\n")
        return 1
    finally:
        channel.close()
    stdout.write(f"exported {traces} evicted trace(s), {spans} span(s), to {target}\n")
    return 0


def _evicted(path: str, since: float | None) -> Iterable[tuple[int, list[dict[str, Any]]]]:
    for record in read_records(path):
        if record.kind != telemetry.AUDIT_TRACE_EVICTED:
            continue
        if since is not None and not record.time >= since:
            continue
        resource_spans = record.payload.get("spans")
        if isinstance(resource_spans, list):
            yield record.seq, resource_spans


def _batches(
    items: Iterable[tuple[int, list[dict[str, Any]]]],
) -> Iterable[list[tuple[int, list[dict[str, Any]]]]]:
    batch: list[tuple[int, list[dict[str, Any]]]] = []
    for item in items:
        batch.append(item)
        if len(batch) >= _EXPORT_BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _grpc_target(endpoint: str) -> tuple[str, bool]:
    for scheme, secure in (("https://", True), ("http://", False)):
        if endpoint.startswith(scheme):
            return endpoint[len(scheme) :].rstrip("/"), secure
    return endpoint, False


def _keygen(path: Path, stdout: TextIO, stderr: TextIO) -> int:
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        stderr.write(f"otel-bounded audit: {path} exists; keygen never overwrites a key\n")
        return 1
    except OSError as error:
        stderr.write(f"otel-bounded audit: cannot create {path}: {error.strerror}\n")
        return 1
    with os.fdopen(fd, "wb") as file:
        file.write(pem)
    public = key.public_key()
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    stdout.write(
        f"wrote the private key to {path} (mode 0600): set OTEL_BOUNDED_AUDIT_KEY_FILE={path}\n"
        f"public key (give this to auditors, for --key): {raw.hex()}\n"
        f"key id: {key_id_of(public)}\n"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m otel_bounded.audit.cli`` for tests and scripts."""
    parser = argparse.ArgumentParser(prog="otel-bounded")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return run(parser.parse_args(argv))
