"""Log scan: error-pattern counts in the new instances' logs over a bake window.

The seeds run `aws logs tail --since 5m --filter-pattern ERROR` after a deploy and only warn; here a
count over its limit fails the deployment. Counting is `zerodown.metrics.logfilters`' (the same
filters the alarms use): lines stamped before the deployment started, and files last written
before it, are left out.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from zerodown.clock import Clock
from zerodown.config.verify import LogFilterConfig, LogScanConfig
from zerodown.metrics.logfilters import PRESETS, LogMetricFilter, count_matches
from zerodown.runtimes.base import InstanceInfo
from zerodown.verify.results import CheckResult, shown

ROTATED_BACKUPS = 5  # the local runtime keeps output.log.1 .. .5 (see runtimes/local/logfile.py)


def first_match(paths: Sequence[Path], log_filter: LogMetricFilter, since: float | None) -> str:
    """The first line that counts for `log_filter` (quoted in a failed check), or ''."""
    for path in paths:
        try:
            if since is not None and path.stat().st_mtime < since:
                continue
            with path.open(encoding="utf-8", errors="replace") as handle:
                for line in handle:
                    if log_filter.matches(line):
                        return line.strip()
        except FileNotFoundError:
            continue
    return ""


def log_files(instances: Sequence[InstanceInfo]) -> list[Path]:
    """Every log file of these instances, rotated ones included, oldest first."""
    paths: list[Path] = []
    for info in instances:
        if not info.log_path:
            continue
        current = Path(info.log_path)
        backups = [current.with_name(f"{current.name}.{i}") for i in range(ROTATED_BACKUPS, 0, -1)]
        paths.extend(p for p in [*backups, current] if p.exists())
    return paths


def to_filter(config: LogFilterConfig) -> LogMetricFilter:
    """The metric filter a `log_scan.filters` entry describes."""
    if config.preset is not None:
        base = replace(PRESETS[config.preset], name=config.label)
        if config.threshold is not None:
            base = replace(base, threshold=config.threshold)
        return base
    pattern = config.pattern or ""  # never empty: the config model requires preset or pattern
    return LogMetricFilter(config.label, pattern, config.value_field, config.threshold)


async def scan_logs(
    config: LogScanConfig,
    instances: Sequence[InstanceInfo],
    *,
    since: float | None,
    clock: Clock,
) -> list[CheckResult]:
    """Wait out the bake window, then count each filter's lines; one result per filter."""
    await clock.sleep(config.window)
    paths = log_files(instances)
    filters = [to_filter(item) for item in config.filters]
    counts = await asyncio.to_thread(count_matches, paths, filters, since=since)
    target = f"{len(instances)} instance(s)"
    results = []
    for item, log_filter in zip(config.filters, filters, strict=True):
        count = counts.get(log_filter.name, 0)
        numbers = {
            "count": count,
            "max": item.max,
            "window_s": config.window,
            "files": len(paths),
        }
        ok = count <= item.max
        detail = f"{count} matching line(s), {item.max} allowed"
        if not ok:
            sample = await asyncio.to_thread(first_match, paths, log_filter, since)
            if sample:
                detail += f"; first: {shown(sample)}"
        results.append(CheckResult(item.label, "log_scan", target, ok, detail, numbers))
    return results
