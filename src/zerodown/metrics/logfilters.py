"""Log metric filters: patterns over instance logs that become counts alarms can use.

The seed's filters are presets: `ERROR_LINES`, `EXCEPTIONS` and `SLOW_QUERIES` (a duration field
above 1000 ms). `count_matches` counts over whole files (lines older than `since` skipped when
they carry a timestamp); `LogTail` counts only what was appended since its last poll, which is
what an alarm watching a deployment needs.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

_TIMESTAMP = re.compile(
    r"^\[?(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2}:\d{2})(?:[.,](\d{1,9}))?\s?(Z|[+-]\d{2}:?\d{2})?"
)
READ_LIMIT = 16 * 1024 * 1024  # bytes read per file per poll: a flood is counted next time


@dataclass(frozen=True)
class LogMetricFilter:
    """Lines matching `pattern` count; with `value_field` and `threshold`, only lines whose
    named group `value_field` holds a number above `threshold`."""

    name: str
    pattern: str
    value_field: str | None = None
    threshold: float | None = None
    flags: int = 0
    regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        regex = re.compile(self.pattern, self.flags)
        if self.value_field is not None and self.value_field not in regex.groupindex:
            raise ValueError(
                f"log metric {self.name}: pattern has no group (?P<{self.value_field}>...)"
            )
        object.__setattr__(self, "regex", regex)

    def matches(self, line: str) -> bool:
        """Whether `line` counts for this filter."""
        found = self.regex.search(line)
        if found is None:
            return False
        if self.value_field is None or self.threshold is None:
            return True
        try:
            return float(found.group(self.value_field)) > self.threshold
        except (TypeError, ValueError):
            return False


ERROR_LINES = LogMetricFilter("error_lines", r"\bERROR\b")
EXCEPTIONS = LogMetricFilter("exceptions", r"Exception\b")
SLOW_QUERIES = LogMetricFilter(
    "slow_queries",
    r"(?:duration|took|elapsed|time)[=: ]+(?P<value>\d+(?:\.\d+)?)\s*ms",
    value_field="value",
    threshold=1000.0,
    flags=re.IGNORECASE,
)
PRESETS = {"error-lines": ERROR_LINES, "exceptions": EXCEPTIONS, "slow-queries": SLOW_QUERIES}


def line_time(line: str) -> float | None:
    """The unix time of a line that starts with an ISO-like timestamp (local time if no zone)."""
    found = _TIMESTAMP.match(line)
    if found is None:
        return None
    day, clock, fraction, zone = found.groups()
    text = f"{day}T{clock}"
    if fraction:
        text += "." + fraction[:6].ljust(6, "0")
    if zone:
        text += "+00:00" if zone == "Z" else zone
    try:
        stamp = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return stamp.timestamp()


def count_lines(
    lines: Iterable[str], filters: Sequence[LogMetricFilter], *, since: float | None = None
) -> dict[str, int]:
    """Matches per filter; lines stamped before `since` (and unstamped lines after them) skipped."""
    counts = dict.fromkeys((f.name for f in filters), 0)
    current: float | None = None
    for line in lines:
        stamp = line_time(line)
        if stamp is not None:
            current = stamp
        if since is not None and current is not None and current < since:
            continue
        for item in filters:
            if item.matches(line):
                counts[item.name] += 1
    return counts


def count_matches(
    paths: Sequence[Path], filters: Sequence[LogMetricFilter], *, since: float | None
) -> dict[str, int]:
    """Matches per filter over `paths` (files last written before `since` are skipped)."""
    totals = dict.fromkeys((f.name for f in filters), 0)
    for path in paths:
        try:
            if since is not None and path.stat().st_mtime < since:
                continue
            with path.open(encoding="utf-8", errors="replace") as handle:
                counts = count_lines(handle, filters, since=since)
        except FileNotFoundError:
            continue
        for name, count in counts.items():
            totals[name] += count
    return totals


class LogTail:
    """Counts matches in what was appended to log files since the previous `poll`."""

    def __init__(self, filters: Sequence[LogMetricFilter]) -> None:
        self.filters = list(filters)
        self._offsets: dict[Path, int] = {}
        self._partial: dict[Path, str] = {}

    def poll(self, paths: Sequence[Path]) -> dict[str, int]:
        """New matches per filter. A file seen for the first time counts from its end; one that
        shrank (rotated) counts from its start."""
        totals = dict.fromkeys((f.name for f in self.filters), 0)
        for path in paths:
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                continue
            if path not in self._offsets:
                self._offsets[path] = size
                continue
            offset = self._offsets[path]
            if size < offset:
                offset, self._partial[path] = 0, ""
            with path.open("rb") as handle:
                handle.seek(offset)
                data = handle.read(READ_LIMIT)
            self._offsets[path] = offset + len(data)
            text = self._partial.get(path, "") + data.decode("utf-8", errors="replace")
            lines = text.split("\n")
            self._partial[path] = lines.pop()  # an unfinished last line waits for its end
            for name, count in count_lines(lines, self.filters).items():
                totals[name] += count
        return totals
