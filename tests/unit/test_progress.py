"""`ConsoleProgress`: what a deploy prints live, without `-v` summarised so a person can read it."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.console import Console
from tests.unit.fakes import FAST_HEALTH, Harness, make_loaded

from zerodown.cli.progress import ANALYSIS_EVERY, PROBE_SUMMARY_EVERY, ConsoleProgress
from zerodown.config import LoadedConfig
from zerodown.config.model import ZerodownConfig
from zerodown.domain.events import DeploymentEvent, DeploymentState, EventKind

SHA = "1f03ba05cafe0123456789abcdef0123456789ab"
OLD = "0aa0bb11cc22dd33ee44ff5566778899aabbccdd"


def _progress(*, verbose: bool = False, ref: str | None = None) -> tuple[ConsoleProgress, Any]:
    out = io.StringIO()
    console = Console(file=out, width=200, highlight=False, color_system=None)
    return ConsoleProgress(console, verbose=verbose, ref=ref), out


def _lines(out: io.StringIO) -> list[str]:
    """Printed lines without the time offset."""
    return [line.split("s ", 1)[1] for line in out.getvalue().splitlines()]


async def _play(progress: ConsoleProgress, events: list[DeploymentEvent]) -> None:
    for event in events:
        await progress.on_event(event)


def _probe(at: float, detail: str, left: float, *, ok: bool = False) -> DeploymentEvent:
    return DeploymentEvent(
        "d1",
        EventKind.HEALTH_PROBE,
        f"api-1: {'pass' if ok else 'fail'}: {detail}",
        {
            "instance": "api-1",
            "ok": ok,
            "detail": detail,
            "start_period": 30.0,
            "start_period_left": left,
        },
        at,
    )


async def test_failing_probes_are_one_line_per_change_and_say_the_start_period_runs(
    tmp_path: Path,
) -> None:
    """A revision that answers 503: its many probes print as two lines (start period running,
    start period over) before the failure, not one "fail: HTTP 503" line per probe."""
    base = make_loaded(tmp_path)
    data = base.config.model_dump(mode="json", exclude_unset=True)
    health = {**FAST_HEALTH, "unhealthy_threshold": 3, "start_period": 0.3}
    data["services"]["api"]["health"] = health
    harness = Harness(LoadedConfig(ZerodownConfig.model_validate(data), base.path, base.root))
    harness.prober.unhealthy.add("v1")
    record = await harness.deploy("v1")
    assert record.state is DeploymentState.FAILED
    events = harness.store.event_log[record.id]
    probes = [e for e in events if e.kind is EventKind.HEALTH_PROBE]
    assert len(probes) >= 6  # 0.3 s of start period at 0.05 s, then 3 counted failures
    assert probes[0].data["start_period"] == 0.3 and probes[0].data["start_period_left"] > 0
    assert probes[-1].data["start_period_left"] == 0

    progress, out = _progress()
    await _play(progress, events)
    lines = _lines(out)
    waiting = [line for line in lines if line.startswith("waiting for")]
    assert len(waiting) == 2, lines
    assert "start period 0.3 s running" in waiting[0] and "last: HTTP 503" in waiting[0]
    assert "start period (0.3 s) over" in waiting[1]
    assert not [line for line in lines if "fail: HTTP 503" in line], lines
    assert any("3 consecutive failures" in line for line in lines)


async def test_a_long_start_period_prints_a_summary_every_few_seconds() -> None:
    """63 probes over 31 s: a line when the result changes and every 5 s, with the count and
    the time left of the start period; "connection refused" while booting is quiet."""
    progress, out = _progress()
    events = [_probe(1000.0 + i * 0.5, "connection refused", 30.0 - i * 0.5) for i in range(4)]
    events += [_probe(1002.0 + i * 0.5, "HTTP 503", 28.0 - i * 0.5) for i in range(56)]
    events += [_probe(1030.0 + i * 0.5, "HTTP 503", 0.0) for i in range(3)]
    await _play(progress, events)
    lines = _lines(out)
    assert len(lines) <= 2 + 30 / PROBE_SUMMARY_EVERY, lines
    assert lines[0] == (
        "waiting for api-1 to become healthy: start period 30 s running (28 s left, failures do "
        "not count); 5 probes, last: HTTP 503"
    )
    assert lines[-1].startswith("waiting for api-1 to become healthy: start period (30 s) over")
    assert lines[-1].endswith("61 probes, last: HTTP 503")  # the first probe that counts


async def test_verbose_prints_every_probe() -> None:
    """`-v` shows everything, as before."""
    progress, out = _progress(verbose=True)
    await _play(progress, [_probe(1000.0 + i, "HTTP 503", 30.0 - i) for i in range(10)])
    assert _lines(out) == ["api-1: fail: HTTP 503"] * 10


async def test_a_healthy_instance_starts_a_new_count() -> None:
    """After the healthy line, the next wait of that instance counts from 1 again."""
    progress, out = _progress()
    healthy = DeploymentEvent(
        "d1", EventKind.INSTANCE_HEALTHY, "api-1 is healthy", {"instance": "api-1"}, 1001.0
    )
    await _play(progress, [_probe(1000.0, "HTTP 503", 5.0), healthy, _probe(1002.0, "HTTP 503", 5)])
    assert _lines(out)[1:] == [
        "api-1 is healthy",
        "waiting for api-1 to become healthy: start period 30 s running (5 s left, failures do "
        "not count); 1 probe, last: HTTP 503",
    ]


def _analysis(at: float, verdict: str, message: str, step: int = 1) -> DeploymentEvent:
    return DeploymentEvent(
        "d1", EventKind.ANALYSIS, message, {"step": step, "verdict": verdict}, at
    )


async def test_canary_analysis_lines_are_printed_when_they_change() -> None:
    """The same analysis every 2 s prints once; a new verdict or step prints at once; new
    numbers under the same verdict at most every ANALYSIS_EVERY seconds."""
    waiting = "step 1 (10 %): canary analysis inconclusive: the canary served 0 of 50 requests"
    events = [_analysis(1000.0 + 2 * i, "inconclusive", waiting) for i in range(30)]
    events += [
        _analysis(1060.0 + 2 * i, "pass", f"step 1 (10 %): canary analysis passed: {i}/60 5xx")
        for i in range(10)
    ]
    events.append(_analysis(1080.0, "pass", "step 2 (50 %): canary analysis passed", step=2))
    progress, out = _progress()
    await _play(progress, events)
    assert _lines(out) == [
        waiting,
        "step 1 (10 %): canary analysis passed: 0/60 5xx",
        f"step 1 (10 %): canary analysis passed: {int(ANALYSIS_EVERY / 2)}/60 5xx",
        "step 2 (50 %): canary analysis passed",
    ]


async def test_lines_name_the_revision_by_the_ref_deployed() -> None:
    """`release 1f03ba05cafe ready` reads `release v2 (1f03ba05) ready` for `--revision v2`."""
    progress, out = _progress(ref="v2")
    build = DeploymentEvent(
        "d1", EventKind.BUILD, f"release {SHA[:12]} ready in 0.10 s", {"sha": SHA}, 1000.0
    )
    plan = f"rolling: 2 live instance(s) of {OLD[:12]} -> 2 of {SHA[:12]}"
    decision = DeploymentEvent("d1", EventKind.DECISION, plan, {"previous_revision": OLD}, 1)
    failed = f"deployment failed: instance api-1 ({SHA[:12]}) failed its health check"
    rollback = [
        DeploymentEvent("d1", EventKind.DECISION, failed, {}, 2),
        DeploymentEvent("d1", EventKind.BUILD, f"release {OLD[:12]} ready", {"sha": OLD}, 3),
    ]
    await _play(progress, [build, decision, *rollback])
    assert (
        _lines(out)
        == [
            "release v2 (1f03ba05) ready in 0.10 s",
            f"rolling: 2 live instance(s) of {OLD[:12]} -> 2 of v2 (1f03ba05)",
            failed,  # instance lines keep the sha they name
            f"release {OLD[:12]} ready",  # the rollback's release is not v2
        ]
    )


async def test_serve_keeps_each_deployments_lines_apart() -> None:
    """One progress prints every deployment in `serve`: the same analysis of two deployments
    is printed for each, and probe counts do not add up across deployments."""
    progress, out = _progress()
    line = "step 1 (10 %): canary analysis inconclusive"
    first = _analysis(1000.0, "inconclusive", line)
    second = replace(_analysis(1001.0, "inconclusive", line), deployment_id="d2")
    other = replace(_probe(1002.0, "HTTP 503", 5.0), deployment_id="d2")
    await _play(progress, [first, second, _probe(1000.0, "HTTP 503", 5.0), other])
    lines = _lines(out)
    assert lines[:2] == [line, line]
    assert [x.endswith("1 probe, last: HTTP 503") for x in lines[2:]] == [True, True]


async def test_a_crash_output_in_the_reason_is_printed_once() -> None:
    """The instance_failed line shows the app's last output; the state lines that repeat the
    reason show only its first line (it was printed 4 times)."""
    progress, out = _progress()
    first = "process exited with code 1 during start; last output:"
    reason = f"{first}\n  | Traceback\n  | ZeroDivisionError"
    await _play(
        progress,
        [
            DeploymentEvent("d1", EventKind.INSTANCE_FAILED, f"web-1 failed: {reason}", {}, 1.0),
            DeploymentEvent(
                "d1", EventKind.STATE, f"in_progress -> rolling_back: {reason}", {}, 2.0
            ),
            DeploymentEvent(
                "d1",
                EventKind.STATE,
                f"rolling_back -> rolled_back: {reason}; rolled back to v1",
                {},
                3.0,
            ),
        ],
    )
    text = out.getvalue()
    assert text.count("ZeroDivisionError") == 1
    assert f"rolling_back -> rolled_back: {first} (output above)" in text
