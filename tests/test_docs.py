"""Every Python block in README.md and docs/*.md runs as written, or says why it cannot.

Markers, each on the nearest non-blank line before a fenced block:

- ``<!-- fragment: why -->`` before a ```` ```python ```` block: the block is
  not run (a signature, or code that needs names, a server or a network the
  page does not set up). The reason is required.
- ``<!-- output -->`` before any fenced block: it is exactly what the nearest
  Python block above it prints on stdout.

Every other ```` ```python ```` block runs in a fresh interpreter, in an empty
directory, with no ``OTEL_*`` variable set, and must exit 0. New pages under
docs/ are picked up on their own.

Also checked here, so the pages cannot drift from the code: the sample
first-eviction warning in operations.md is the store's, and every page quotes
the one bytes-per-span figure docs/performance.md measured.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SUBPROCESS_TIMEOUT_SECONDS = 60

_FENCE = re.compile(r"^```(\S*)(.*)$")
_FRAGMENT = re.compile(r"^<!--\s*fragment:\s*(.*?)\s*-->$")
_OUTPUT = re.compile(r"^<!--\s*output\s*-->$")
_MARKER = re.compile(r"^<!--\s*(fragment|output)\b")


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    language: str
    text: str
    marker: str
    """The marker line before the fence, or ""."""

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    @property
    def fragment_reason(self) -> str | None:
        match = _FRAGMENT.match(self.marker)
        return None if match is None else match.group(1)


def blocks_of(page: Path) -> list[Block]:
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        end = index + 1
        while end < len(lines) and lines[end].rstrip() != "```":
            end += 1
        before = [line.strip() for line in lines[:index] if line.strip()]
        marker = before[-1] if before and _MARKER.match(before[-1]) else ""
        blocks.append(
            Block(page, index + 1, opening.group(1), "\n".join(lines[index + 1 : end]), marker)
        )
        index = end + 1
    return blocks


ALL_BLOCKS = [block for page in PAGES for block in blocks_of(page)]
PYTHON_BLOCKS = [block for block in ALL_BLOCKS if block.language == "python"]
RUNNABLE = [block for block in PYTHON_BLOCKS if block.fragment_reason is None]


def clean_environment() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}


def run_block(block: Block, directory: Path) -> subprocess.CompletedProcess[str]:
    script = directory / "block.py"
    script.write_text(block.text + "\n", encoding="utf-8")
    return subprocess.run(
        [sys.executable, str(script)],
        cwd=directory,
        env=clean_environment(),
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT_SECONDS,
        check=False,
    )


def test_the_pages_have_python_blocks_to_run() -> None:
    # A parser that found nothing would make every other test here pass vacuously.
    assert len(RUNNABLE) >= 5
    assert any(block.page.name == "README.md" for block in RUNNABLE)


@pytest.mark.parametrize("block", RUNNABLE, ids=lambda block: block.name)
def test_python_block_runs_as_written(block: Block, tmp_path: Path) -> None:
    result = run_block(block, tmp_path)
    assert result.returncode == 0, f"{block.name} failed:\n{result.stderr}"


OUTPUTS = [
    (block, source)
    for position, block in enumerate(ALL_BLOCKS)
    if _OUTPUT.match(block.marker)
    for source in [
        next(
            (
                earlier
                for earlier in reversed(ALL_BLOCKS[:position])
                if earlier.page == block.page and earlier in RUNNABLE
            ),
            None,
        )
    ]
]


@pytest.mark.parametrize(("output", "source"), OUTPUTS, ids=[output.name for output, _ in OUTPUTS])
def test_a_shown_output_is_what_its_block_prints(
    output: Block, source: Block | None, tmp_path: Path
) -> None:
    assert source is not None, f"{output.name} shows the output of no runnable block above it"
    result = run_block(source, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip("\n") == output.text


@pytest.mark.parametrize(
    "block", [block for block in ALL_BLOCKS if block.marker], ids=lambda block: block.name
)
def test_every_marker_is_well_formed_and_where_it_belongs(block: Block) -> None:
    if block.marker.startswith("<!-- fragment"):
        assert block.language == "python", f"{block.name}: only Python blocks are run"
        assert block.fragment_reason, f"{block.name}: a fragment says why it is not run"
    else:
        assert _OUTPUT.match(block.marker), f"{block.name}: unknown marker {block.marker!r}"


# -- the pages agree with the code and with each other --------------------------

SAMPLE_EVICTION = textwrap.dedent(
    """
    from opentelemetry.sdk.trace import TracerProvider
    from otel_bounded import TraceStore

    provider = TracerProvider()
    provider.add_span_processor(TraceStore(max_traces=5))
    tracer = provider.get_tracer("app")
    for index in range(6):
        with tracer.start_as_current_span(f"request-{index}"):
            with tracer.start_as_current_span("db.query"):
                pass
    """
)


def test_the_sample_warning_in_operations_is_what_the_store_logs(tmp_path: Path) -> None:
    samples = [
        block
        for block in blocks_of(ROOT / "docs" / "operations.md")
        if "evicted its first trace" in block.text
    ]
    assert len(samples) == 1
    script = tmp_path / "evict.py"
    script.write_text(SAMPLE_EVICTION, encoding="utf-8")
    result = subprocess.run(
        [sys.executable, str(script)],
        env=clean_environment(),
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT_SECONDS,
        check=True,
    )
    assert result.stderr.strip() == samples[0].text.strip()


def measured_bytes_per_span() -> int:
    performance = (ROOT / "docs" / "performance.md").read_text(encoding="utf-8")
    match = re.search(r"^\| `TraceStore` records \| ([\d,]+) \|$", performance, re.M)
    assert match is not None, "performance.md lost its retained-bytes table"
    return int(match.group(1).replace(",", ""))


def test_every_page_quotes_the_one_measured_bytes_per_span() -> None:
    measured = measured_bytes_per_span()
    full_store_mb = round(measured * 100_000 / 1e6)
    quoted = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for figure in re.findall(r"about ([\d,]+) bytes a span", text):
            quoted.append((page.name, int(figure.replace(",", "")), measured))
        for figure in re.findall(r"about \**([\d,]+) MB\**[^.|]*100,000 spans", text):
            quoted.append((page.name, int(figure.replace(",", "")), full_store_mb))
        for figure in re.findall(r"a full store with the defaults \| about ([\d,]+) MB", text):
            quoted.append((page.name, int(figure.replace(",", "")), full_store_mb))
    assert quoted, "no page quotes the figure any more: drop this test or the pattern"
    assert [(page, value) for page, value, want in quoted if value != want] == []
