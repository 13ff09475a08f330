"""The seeds' alarms (seed 000's CodeDeploy auto-rollback alarms), on 10 s periods where the
seed says "for 1 min", so a breach is seen in seconds instead of minutes.

`alarms: [{preset: seed}]` in an environment expands to all four; `{preset: <name>, ...}` to one,
with the given fields overriding the preset's.
"""

from __future__ import annotations

from typing import Any

PRESETS: dict[str, dict[str, Any]] = {
    # HealthyHostCount < 1 for 1 minute: no instance could take traffic for a whole minute.
    "healthy-hosts": {
        "name": "HealthyHostCount",
        "metric": "HealthyHostCount",
        "statistic": "min",
        "comparison": "<",
        "threshold": 1,
        "period": 10,
        "evaluation_periods": 6,
        "datapoints_to_alarm": 6,
        "treat_missing_data": "missing",
    },
    # TargetResponseTime average > 2000 ms over 5 minutes.
    "response-time": {
        "name": "TargetResponseTime",
        "metric": "TargetResponseTime",
        "statistic": "avg",
        "comparison": ">",
        "threshold": 2000,
        "period": 300,
        "evaluation_periods": 1,
        "treat_missing_data": "notBreaching",
    },
    # HTTPCode_Target_5XX_Count > 10 in 5 minutes (a running count: it fires the moment it passes).
    "5xx-count": {
        "name": "HTTPCode_5XX_Count",
        "metric": "HTTPCode_5XX_Count",
        "statistic": "sum",
        "comparison": ">",
        "threshold": 10,
        "period": 300,
        "evaluation_periods": 1,
        "treat_missing_data": "notBreaching",
    },
    # UnHealthyHostCount > 0 for 1 minute.
    "unhealthy-hosts": {
        "name": "UnHealthyHostCount",
        "metric": "UnHealthyHostCount",
        "statistic": "max",
        "comparison": ">",
        "threshold": 0,
        "period": 10,
        "evaluation_periods": 6,
        "datapoints_to_alarm": 6,
        "treat_missing_data": "missing",
    },
}
SEED = ("healthy-hosts", "response-time", "5xx-count", "unhealthy-hosts")


def expand(items: list[Any]) -> list[Any]:
    """Alarm config items with presets expanded: `{preset: seed}` -> the four seed alarms,
    `{preset: 5xx-count, threshold: 50}` -> that preset with the threshold overridden."""
    expanded: list[Any] = []
    for item in items:
        if not isinstance(item, dict) or "preset" not in item:
            expanded.append(item)
            continue
        rest = {k: v for k, v in item.items() if k != "preset"}
        preset = item["preset"]
        if preset == "seed":
            if rest:
                raise ValueError("preset seed takes no other fields; list the alarms to change")
            expanded.extend(dict(PRESETS[name]) for name in SEED)
        elif preset in PRESETS:
            expanded.append({**PRESETS[preset], **rest})
        else:
            known = ", ".join(["seed", *PRESETS])
            raise ValueError(f"unknown alarm preset {preset!r}: use one of {known}")
    return expanded
