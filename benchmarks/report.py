"""From raw tool output to benchmarks/RESULTS.md: the wrk/hey parsers, sections and the writer.

Every benchmark module returns a `Section`; `assemble_results` puts the machine facts and the
sections together. A section that was not run this time (`--only`) keeps its text from the previous
RESULTS.md, with a note that says when it was measured, so the file never mixes figures silently.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.machine import MachineFacts

# -- tool output -------------------------------------------------------------------------------

_WRK_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


class BenchError(Exception):
    """A benchmark step failed; the message says which process and what its log says."""


class ToolOutputError(BenchError):
    """A load tool printed something the parser cannot read (it failed, or its format changed)."""


@dataclass(frozen=True)
class WrkResult:
    """What one `wrk --latency` run measured; latencies in seconds."""

    requests: int
    seconds: float
    requests_per_sec: float
    p50: float
    p99: float
    socket_errors: int  # connect + read + write + timeout
    non_2xx: int  # "Non-2xx or 3xx responses"

    @property
    def errors(self) -> int:
        """Every request that did not end with a 2xx/3xx answer."""
        return self.socket_errors + self.non_2xx


@dataclass(frozen=True)
class HeyResult:
    """What one `hey` run measured; latencies in seconds (hey prints them to 0.1 ms)."""

    requests_per_sec: float
    p50: float | None
    p99: float | None  # hey leaves out percentiles it has too few samples for
    statuses: dict[int, int] = field(default_factory=dict)
    transport_errors: int = 0
    tool: str = "hey"  # or "asyncio": the fallback generator in benchmarks.processes

    @property
    def responses(self) -> int:
        """Answers received, whatever their status."""
        return sum(self.statuses.values())

    @property
    def errors(self) -> int:
        """Transport errors plus answers that are not 2xx/3xx."""
        bad = sum(n for code, n in self.statuses.items() if not 200 <= code < 400)
        return self.transport_errors + bad


def wrk_seconds(text: str) -> float:
    """A wrk duration such as `613.00us`, `4.09ms` or `1.20s`, in seconds."""
    match = re.fullmatch(r"\s*([\d.]+)\s*(us|ms|s|m|h)\s*", text)
    if not match:
        raise ToolOutputError(f"wrk printed a duration it cannot read: {text!r}")
    return float(match.group(1)) * _WRK_UNITS[match.group(2)]


def parse_wrk(output: str) -> WrkResult:
    """Read the summary of `wrk --latency`."""
    rate = re.search(r"^Requests/sec:\s*([\d.]+)", output, re.MULTILINE)
    total = re.search(r"^\s*(\d+) requests in ([\d.]+\w+),", output, re.MULTILINE)
    if not rate or not total:
        first = output.strip().splitlines()[:1]
        raise ToolOutputError(f"wrk printed no summary: {first[0] if first else '(nothing)'}")
    percentiles = dict(re.findall(r"^\s*(50|99)%\s+([\d.]+\w+)\s*$", output, re.MULTILINE))
    if "50" not in percentiles or "99" not in percentiles:
        raise ToolOutputError("wrk printed no latency distribution (run it with --latency)")
    socket = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return WrkResult(
        requests=int(total.group(1)),
        seconds=wrk_seconds(total.group(2)),
        requests_per_sec=float(rate.group(1)),
        p50=wrk_seconds(percentiles["50"]),
        p99=wrk_seconds(percentiles["99"]),
        socket_errors=sum(int(n) for n in socket.groups()) if socket else 0,
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
    )


def parse_hey(output: str) -> HeyResult:
    """Read the default (text) summary of `hey`."""
    rate = re.search(r"^\s*Requests/sec:\s*([\d.]+)", output, re.MULTILINE)
    if not rate:
        raise ToolOutputError("hey printed no summary")
    percentiles = {
        int(pct): float(value)
        for pct, value in re.findall(r"^\s*(\d+)% in ([\d.]+) secs", output, re.MULTILINE)
    }
    statuses = {
        int(code): int(count)
        for code, count in re.findall(r"^\s*\[(\d{3})\]\s+(\d+) responses", output, re.MULTILINE)
    }
    errors_block = output.partition("Error distribution:")[2]
    transport_errors = sum(
        int(n) for n in re.findall(r"^\s*\[(\d+)\]\s", errors_block, re.MULTILINE)
    )
    return HeyResult(
        requests_per_sec=float(rate.group(1)),
        p50=percentiles.get(50),
        p99=percentiles.get(99),
        statuses=statuses,
        transport_errors=transport_errors,
    )


# -- sections ----------------------------------------------------------------------------------


def format_ms(seconds: float | None) -> str:
    """Seconds as milliseconds for a table cell; "n/a" when not measured."""
    if seconds is None:
        return "n/a"
    return f"{seconds * 1000:.2f} ms"


@dataclass(frozen=True)
class Table:
    """A Markdown table: one header row and rows of cells, all text."""

    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    caption: str = ""

    def render(self) -> str:
        """The table as GitHub Markdown, with its caption above it."""
        lines = [f"{self.caption}\n"] if self.caption else []
        lines.append("| " + " | ".join(self.headers) + " |")
        lines.append("|" + "|".join("---" for _ in self.headers) + "|")
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        return "\n".join(lines)


@dataclass(frozen=True)
class Section:
    """One benchmark's part of RESULTS.md: its figures, its goal, and what limits it."""

    key: str  # the name `--only` takes
    title: str
    goal: str
    met: bool | None  # None: the run could not judge the goal
    tables: tuple[Table, ...]
    limits: tuple[str, ...]  # the "what limits it" notes, one bullet each
    measured_at: datetime
    measured_on: str  # MachineFacts.one_line()
    method: str = ""  # how it was measured, one paragraph

    def render(self) -> str:
        """The section with the markers the writer finds it by on the next run."""
        verdict = {True: "**met**", False: "**not met**", None: "not judged in this run"}[self.met]
        parts = [
            f"<!-- bench:{self.key} measured={_iso(self.measured_at)} -->",
            f"## {self.title}",
            f"*Measured {_human(self.measured_at)} on {self.measured_on}.*",
            f"**Goal:** {self.goal} — {verdict}.",
        ]
        if self.method:
            parts.append(self.method)
        parts += [table.render() for table in self.tables]
        if self.limits:
            parts.append("### What limits it\n\n" + "\n".join(f"- {n}" for n in self.limits))
        parts.append(f"<!-- /bench:{self.key} -->")
        return "\n\n".join(parts)


@dataclass(frozen=True)
class StoredSection:
    """A section as found in an existing RESULTS.md."""

    key: str
    measured: str  # ISO time from the marker
    text: str  # everything from the opening marker to the closing one, inclusive


_SECTION_RE = re.compile(
    r"^<!-- bench:(?P<key>[\w-]+) measured=(?P<measured>\S+) -->\n.*?^<!-- /bench:(?P=key) -->$",
    re.MULTILINE | re.DOTALL,
)
_KEPT_PREFIX = "> **Kept from an earlier run.**"


def read_sections(text: str) -> dict[str, StoredSection]:
    """The sections of an existing RESULTS.md, by key, in file order."""
    return {
        m["key"]: StoredSection(m["key"], m["measured"], m.group(0))
        for m in _SECTION_RE.finditer(text)
    }


def mark_kept(section: StoredSection, now: datetime) -> str:
    """A stored section's text with one note that it was not re-run `now` (older notes dropped)."""
    lines = [line for line in section.text.splitlines() if not line.startswith(_KEPT_PREFIX)]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines))
    note = (
        f"{_KEPT_PREFIX} Not re-run on {_human(now)}; these figures are from the run of "
        f"{_human_from_iso(section.measured)}."
    )
    heading_end = text.find("\n", text.find("\n## ") + 1)
    if heading_end < 0:
        return f"{text}\n\n{note}"
    return f"{text[:heading_end]}\n\n{note}{text[heading_end:]}"


def assemble_results(
    machine: MachineFacts,
    fresh: Sequence[Section],
    previous: str | None,
    *,
    order: Sequence[str],
    now: datetime,
    command: str,
) -> str:
    """The whole RESULTS.md: header, machine, then every section in `order` (fresh or kept).

    Sections in the previous file that are neither fresh nor in `order` are kept at the end.
    """
    stored = read_sections(previous or "")
    by_key: Mapping[str, Section] = {s.key: s for s in fresh}
    keys = list(order) + [k for k in [*by_key, *stored] if k not in order]
    body: list[str] = []
    for key in dict.fromkeys(keys):
        if key in by_key:
            body.append(by_key[key].render())
        elif key in stored:
            body.append(mark_kept(stored[key], now))
    machine_table = Table(("Fact", "Value"), tuple(machine.rows()))
    header = [
        "# zerodown benchmarks",
        "Written by `make bench` (`python -m benchmarks`); do not edit by hand. The figures in one "
        "table were measured side by side in one run; a section that was not re-run says so "
        "and when it was measured.",
        f"## Machine of the last run\n\n*{_human(now)}, `{command}`.*",
        machine_table.render(),
    ]
    return "\n\n".join(header + body) + "\n"


def write_results(
    path: Path,
    machine: MachineFacts,
    fresh: Sequence[Section],
    *,
    order: Sequence[str],
    command: str,
    now: datetime | None = None,
) -> str:
    """Rewrite RESULTS.md at `path`, keeping the sections that were not run; returns the text."""
    previous = path.read_text() if path.exists() else None
    text = assemble_results(
        machine, fresh, previous, order=order, now=now or datetime.now(UTC), command=command
    )
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    temporary.replace(path)  # a reader never sees half a file
    return text


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _human_from_iso(text: str) -> str:
    try:
        return _human(datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC))
    except ValueError:
        return text  # a marker edited by hand: show it as it is


def _human(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
