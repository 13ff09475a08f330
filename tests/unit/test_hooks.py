"""HookRunner with real shell commands: recorded events, failures, timeouts and environment."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest

from zerodown.config.model import HookConfig
from zerodown.domain.events import DeploymentEvent, EventKind
from zerodown.engine.hooks import MAX_OUTPUT_LINES, HookRunner
from zerodown.errors import HookFailed


class Recorder:
    """Collects the events a HookRunner emits."""

    def __init__(self) -> None:
        self.events: list[DeploymentEvent] = []

    async def __call__(self, event: DeploymentEvent) -> None:
        self.events.append(event)

    @property
    def kinds(self) -> list[EventKind]:
        return [event.kind for event in self.events]

    def output(self) -> list[str]:
        return [e.data["line"] for e in self.events if e.kind is EventKind.HOOK_OUTPUT]


def runner(
    tmp_path: Path,
    recorder: Recorder,
    hooks: Mapping[str, object],
    base_env: Mapping[str, str] | None = None,
) -> HookRunner:
    return HookRunner(
        {name: HookConfig.model_validate(value) for name, value in hooks.items()},
        cwd=tmp_path,
        base_env=base_env or {},
        emit=recorder,
        deployment_id="dep-1",
    )


async def test_unconfigured_hook_is_a_noop(tmp_path: Path) -> None:
    """A hook that is not configured runs nothing and records nothing."""
    recorder = Recorder()
    hooks = runner(tmp_path, recorder, {"BeforeInstall": "true"})
    assert hooks.has("BeforeInstall") and not hooks.has("AfterInstall")
    await hooks.run("AfterInstall")
    assert recorder.events == []


async def test_events_in_order_with_output_lines(tmp_path: Path) -> None:
    """STARTED, one OUTPUT per line (stdout and stderr), FINISHED with exit code and time."""
    recorder = Recorder()
    hooks = runner(tmp_path, recorder, {"AfterInstall": "echo one; echo two >&2; echo three"})
    await hooks.run("AfterInstall", instance="api-1")
    assert recorder.kinds == [
        EventKind.HOOK_STARTED,
        EventKind.HOOK_OUTPUT,
        EventKind.HOOK_OUTPUT,
        EventKind.HOOK_OUTPUT,
        EventKind.HOOK_FINISHED,
    ]
    assert recorder.output() == ["one", "two", "three"]
    started, finished = recorder.events[0], recorder.events[-1]
    assert started.data == {
        "hook": "AfterInstall",
        "instance": "api-1",
        "command": "echo one; echo two >&2; echo three",
    }
    assert finished.data["exit_code"] == 0 and finished.data["ok"] is True
    assert finished.data["seconds"] >= 0
    assert all(e.deployment_id == "dep-1" for e in recorder.events)
    assert all(e.data["instance"] == "api-1" for e in recorder.events)


async def test_failure_raises_with_the_last_output_line(tmp_path: Path) -> None:
    """Non-zero exit: HookFailed names hook, exit code and last line; FINISHED says not ok."""
    recorder = Recorder()
    hooks = runner(tmp_path, recorder, {"BeforeInstall": "echo checking; echo 'disk full'; exit 3"})
    with pytest.raises(HookFailed) as failure:
        await hooks.run("BeforeInstall")
    assert str(failure.value) == "hook BeforeInstall failed with exit code 3: disk full"
    assert recorder.kinds[-1] is EventKind.HOOK_FINISHED
    assert recorder.events[-1].data["exit_code"] == 3
    assert recorder.events[-1].data["ok"] is False


@pytest.mark.timeout(30)
async def test_timeout_raises(tmp_path: Path) -> None:
    """A hook past its timeout is killed and raises 'timed out after N s'."""
    recorder = Recorder()
    hook = {"command": "echo waiting; sleep 60", "timeout": "300ms"}
    hooks = runner(tmp_path, recorder, {"ValidateService": hook})
    with pytest.raises(HookFailed, match=r"^hook ValidateService timed out after 0.3 s$"):
        await hooks.run("ValidateService")
    assert recorder.output() == ["waiting"]
    assert recorder.events[-1].data["ok"] is False
    assert recorder.events[-1].data["seconds"] < 10


async def test_environment_reaches_the_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """os.environ, base_env, ZERODOWN_HOOK, ZERODOWN_INSTANCE and extra_env are all visible."""
    monkeypatch.setenv("ZD_TEST_INHERITED", "inherited")
    monkeypatch.setenv("ZERODOWN_INSTANCE", "stale")
    recorder = Recorder()
    command = (
        'echo "$ZD_TEST_INHERITED|$ZERODOWN_DEPLOYMENT_ID|$ZERODOWN_SERVICE|$ZERODOWN_HOOK|'
        '${ZERODOWN_INSTANCE-unset}|${ZD_EXTRA-unset}"'
    )
    base = {"ZERODOWN_DEPLOYMENT_ID": "dep-1", "ZERODOWN_SERVICE": "api"}
    hooks = runner(tmp_path, recorder, {"ApplicationStart": command}, base_env=base)
    await hooks.run("ApplicationStart", instance="api-2", extra_env={"ZD_EXTRA": "extra"})
    await hooks.run("ApplicationStart")
    assert recorder.output() == [
        "inherited|dep-1|api|ApplicationStart|api-2|extra",
        "inherited|dep-1|api|ApplicationStart|unset|unset",
    ]


async def test_output_is_capped_with_a_note(tmp_path: Path) -> None:
    """At most MAX_OUTPUT_LINES output events, then one line saying how many were dropped."""
    recorder = Recorder()
    hooks = runner(tmp_path, recorder, {"Install": f"seq 1 {MAX_OUTPUT_LINES + 250}"})
    await hooks.run("Install")
    lines = recorder.output()
    assert len(lines) == MAX_OUTPUT_LINES + 1
    assert lines[MAX_OUTPUT_LINES - 1] == str(MAX_OUTPUT_LINES)
    assert "250 more output lines" in lines[-1]
    assert recorder.kinds[-1] is EventKind.HOOK_FINISHED


async def test_missing_cwd_raises_hook_failed(tmp_path: Path) -> None:
    """A hook that cannot even start fails as HookFailed, with FINISHED recorded."""
    recorder = Recorder()
    hooks = HookRunner(
        {"BeforeInstall": HookConfig(command="true")},
        cwd=tmp_path / "gone",
        base_env={},
        emit=recorder,
        deployment_id="dep-1",
    )
    with pytest.raises(HookFailed, match="could not start"):
        await hooks.run("BeforeInstall")
    assert recorder.kinds == [EventKind.HOOK_STARTED, EventKind.HOOK_FINISHED]
