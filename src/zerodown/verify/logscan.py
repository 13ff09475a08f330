"""Log scan: error-pattern counts in the new instances' logs over a bake window.

The seeds run `aws logs tail --since 5m --filter-pattern ERROR` after a deploy and only warn; here a
count over its limit fails the deployment. Logs are read through the runtime (`Runtime.logs`,
secrets masked), output older than the deployment left out; counting is
`zerodown.metrics.logfilters`' (the same filters the alarms use), which also skips lines stamped
before the deployment started.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from zerodown.clock import Clock
from zerodown.config.verify import LogFilterConfig, LogScanConfig
from zerodown.errors import InstanceNotFound
from zerodown.metrics.logfilters import PRESETS, LogMetricFilter, count_lines
from zerodown.runtimes.base import InstanceInfo, Runtime
from zerodown.verify.results import CheckResult, shown

READ_LIMIT = 200_000  # lines read per instance: a flood still counts far over any limit


async def instance_lines(
    runtime: Runtime, instances: Sequence[InstanceInfo], since: float | None
) -> dict[str, list[str]]:
    """Each instance's output since `since` (at most READ_LIMIT lines), by instance id."""
    found: dict[str, list[str]] = {}
    for info in instances:
        lines: list[str] = []
        try:
            async for line in runtime.logs(info.instance_id, since=since):
                lines.append(line)
                if len(lines) >= READ_LIMIT:
                    break
        except InstanceNotFound:
            continue  # removed meanwhile: nothing of it to count
        found[info.instance_id] = lines
    return found


def first_match(lines: Sequence[str], log_filter: LogMetricFilter) -> str:
    """The first line that counts for `log_filter` (quoted in a failed check), or ''."""
    return next((line.strip() for line in lines if log_filter.matches(line)), "")


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
    runtime: Runtime,
    instances: Sequence[InstanceInfo],
    *,
    since: float | None,
    clock: Clock,
) -> list[CheckResult]:
    """Wait out the bake window, then count each filter's lines; one result per filter."""
    await clock.sleep(config.window)
    by_instance = await instance_lines(runtime, instances, since)
    filters = [to_filter(item) for item in config.filters]
    counts = dict.fromkeys((f.name for f in filters), 0)
    for lines in by_instance.values():
        for name, count in count_lines(lines, filters, since=since).items():
            counts[name] += count
    target = f"{len(instances)} instance(s)"
    results = []
    for item, log_filter in zip(config.filters, filters, strict=True):
        count = counts.get(log_filter.name, 0)
        numbers = {
            "count": count,
            "max": item.max,
            "window_s": config.window,
            "instances": len(by_instance),
        }
        ok = count <= item.max
        detail = f"{count} matching line(s), {item.max} allowed"
        if not ok:
            sample = next(
                (m for lines in by_instance.values() if (m := first_match(lines, log_filter))), ""
            )
            if sample:
                detail += f"; first: {shown(sample)}"
        results.append(CheckResult(item.label, "log_scan", target, ok, detail, numbers))
    return results
