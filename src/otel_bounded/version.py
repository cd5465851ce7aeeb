"""The package version, kept in one place for the meter, the tracer and the CLI."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("otel-bounded")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"
