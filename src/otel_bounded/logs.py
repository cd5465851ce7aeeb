"""Where otel-bounded's WARNINGs go: to a person on stderr, and to OpenTelemetry as structured logs.

A first eviction or first drop is the one moment a store tells someone that
it is losing data, so the warning must not vanish whatever the application
did to `logging`. Two handlers of the package's own sit on the
``otel_bounded`` logger (`install`):

- `StderrFallback` writes the record to stderr unless a handler the
  application configured (on ``otel_bounded``, an ancestor or the root
  logger) takes it. OpenTelemetry's logging bridges do not count: with
  ``OTEL_LOGS_EXPORTER=none`` they send it nowhere.
- `LogRecordEmitter` emits it through the OpenTelemetry logs API, its
  ``extra`` fields as attributes, unless a bridge on the way already
  exports it (a bridge exports the same ``extra`` fields as attributes).

The logs API's global provider is a no-op until one is set, so without a
LoggerProvider the emitter costs one call per warning and sends nothing.
"""

from __future__ import annotations

import logging
import sys
import time
import traceback
from collections.abc import Iterator
from typing import Any

from opentelemetry import _logs

__all__ = [
    "LogRecordEmitter",
    "StderrFallback",
    "install",
    "is_opentelemetry_bridge",
    "structured_attributes",
]

_STDERR_FORMAT = "%(levelname)s %(name)s: %(message)s"

# What every stdlib LogRecord has; anything else on a record came from `extra`.
_STANDARD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
}

# Python's levels to the OpenTelemetry severity numbers the bridges use.
_SEVERITY = (
    (logging.CRITICAL, _logs.SeverityNumber.FATAL),
    (logging.ERROR, _logs.SeverityNumber.ERROR),
    (logging.WARNING, _logs.SeverityNumber.WARN),
    (logging.INFO, _logs.SeverityNumber.INFO),
    (logging.DEBUG, _logs.SeverityNumber.DEBUG),
)


def install(logger: logging.Logger) -> None:
    """Put the package's two handlers on `logger` (once) and let its WARNINGs through.

    The logger's level is set to WARNING only while it is unset, so a root
    logger at ERROR does not swallow a first-eviction warning, yet an
    application that set the ``otel_bounded`` level itself keeps its choice.
    """
    if any(isinstance(handler, _PackageHandler) for handler in logger.handlers):
        return
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.WARNING)
    logger.addHandler(StderrFallback())
    logger.addHandler(LogRecordEmitter())


def is_opentelemetry_bridge(handler: logging.Handler) -> bool:
    """Whether `handler` is OpenTelemetry's logging bridge (the SDK's or the instrumentation's).

    Both are named ``LoggingHandler``; matching by name needs neither imported.
    """
    return any(
        cls.__name__ == "LoggingHandler" and cls.__module__.startswith("opentelemetry.")
        for cls in type(handler).__mro__
    )


def _handlers_on_the_way(record: logging.LogRecord) -> Iterator[logging.Handler]:
    """Every handler `record`'s logger passes it to, as `Logger.callHandlers` walks them."""
    current: logging.Logger | None = logging.getLogger(record.name)
    while current is not None:
        yield from current.handlers
        if not current.propagate:
            return
        current = current.parent


class _PackageHandler(logging.Handler):
    """One of the package's own handlers: never counted as the application's."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)


class StderrFallback(_PackageHandler):
    """Writes to ``sys.stderr`` (as it is at the time) when no handler of the application will."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter(_STDERR_FORMAT))

    def emit(self, record: logging.LogRecord) -> None:
        if _taken_by_the_application(record):
            return
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:
            self.handleError(record)


def _taken_by_the_application(record: logging.LogRecord) -> bool:
    return any(
        not isinstance(handler, _PackageHandler)
        and not is_opentelemetry_bridge(handler)
        and record.levelno >= handler.level
        for handler in _handlers_on_the_way(record)
    )


class LogRecordEmitter(_PackageHandler):
    """Emits the record through the global LoggerProvider, unless a bridge on the way does."""

    def emit(self, record: logging.LogRecord) -> None:
        if any(
            is_opentelemetry_bridge(handler) and record.levelno >= handler.level
            for handler in _handlers_on_the_way(record)
        ):
            return
        try:
            # The logs API has no typed overload for a pre-1.35 record; keyword fields suit all.
            log_record: Any = _logs.LogRecord(
                timestamp=int(record.created * 1e9),
                observed_timestamp=time.time_ns(),
                severity_text=record.levelname,
                severity_number=_severity(record.levelno),
                body=record.getMessage(),
                attributes=structured_attributes(record),
            )
            _logs.get_logger(record.name).emit(log_record)
        except Exception:
            self.handleError(record)


def structured_attributes(record: logging.LogRecord) -> dict[str, Any]:
    """The record's ``extra`` fields that are valid attribute values, and its exception."""
    attributes: dict[str, Any] = {
        key: value
        for key, value in vars(record).items()
        if key not in _STANDARD_FIELDS and isinstance(value, str | bool | int | float)
    }
    if record.exc_info and record.exc_info[1] is not None:
        kind, error, trace = record.exc_info
        attributes["exception.type"] = getattr(kind, "__qualname__", str(kind))
        attributes["exception.message"] = str(error)
        attributes["exception.stacktrace"] = "".join(traceback.format_exception(kind, error, trace))
    return attributes


def _severity(level: int) -> _logs.SeverityNumber:
    for threshold, number in _SEVERITY:
        if level >= threshold:
            return number
    return _logs.SeverityNumber.TRACE
