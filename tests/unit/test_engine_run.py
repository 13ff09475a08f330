"""`DeploymentRun` on its own: built from `RunServices` and its parts, with no `Deployer`, it
records what ran before, prepares a revision through the given function, and fails or rolls
back through its fleet."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.unit.fakes import FakeRouter, FakeRuntime, MemoryStore, make_loaded

from zerodown.clock import FakeClock
from zerodown.config.model import ServiceConfig
from zerodown.domain.events import DeploymentState, EventKind
from zerodown.domain.records import DeploymentRecord
from zerodown.engine import run as run_module
from zerodown.engine.recorder import EventRecorder
from zerodown.engine.run import MAX_BUILD_LINES, DeploymentRun, RunServices


@dataclass(frozen=True)
class Release:
    sha: str
    path: Path = Path(".")
    image: str | None = None


@dataclass
class FakeFleet:
    """The parts of a Fleet a run uses; records restores and clears."""

    touched: bool = False
    route_name: str = "api.prod"
    calls: list[tuple[str, Any]] = field(default_factory=list)

    async def restore(self, release: Release, count: int, *, undo: str) -> None:
        self.calls.append(("restore", (release.sha, count, undo)))

    async def clear(self, deployment_id: str) -> None:
        self.calls.append(("clear", deployment_id))


class Prepared:
    """A `PrepareRevision` that prints `lines` build lines and records what it was asked."""

    def __init__(self, lines: int = 0) -> None:
        self.lines = lines
        self.asked: list[tuple[str, str]] = []

    async def __call__(
        self,
        service_name: str,
        service: ServiceConfig,
        revision: str,
        on_line: Callable[[str], None],
    ) -> Release:
        self.asked.append((service_name, revision))
        for i in range(self.lines):
            on_line(f"step {i}")
        return Release(revision)


async def _run(
    tmp_path: Path, *, state: DeploymentState, previous: str | None = "v1", lines: int = 0
) -> tuple[DeploymentRun, MemoryStore, FakeFleet, Prepared]:
    loaded = make_loaded(tmp_path, instances=3)
    store, clock, prepare = MemoryStore(), FakeClock(), Prepared(lines)
    record = DeploymentRecord(
        "d1", "api", "prod", "v2", "rolling", state, "test", 0.0, previous_revision=previous
    )
    await store.create_deployment(record)
    services = RunServices(store, FakeRuntime(), FakeRouter(), clock, prepare)  # type: ignore[arg-type]
    fleet = FakeFleet()
    run = DeploymentRun(
        services,
        record,
        loaded.config.services["api"],
        loaded.config.environments["prod"],
        recorder=EventRecorder("d1", store, [], clock),  # type: ignore[arg-type]
        fleet=fleet,  # type: ignore[arg-type]
    )
    return run, store, fleet, prepare


def test_a_run_knows_nothing_of_the_deployer() -> None:
    """Its module does not import the deployer and it keeps no reference to one."""
    source = inspect.getsource(run_module)
    assert "engine.deployer" not in source and "deployer." not in source
    assert "deployer" not in inspect.signature(DeploymentRun).parameters


async def test_note_previous_stores_the_rollback_target_and_the_count_to_restore(
    tmp_path: Path,
) -> None:
    run, store, _, _ = await _run(tmp_path, state=DeploymentState.IN_PROGRESS, previous=None)
    await run.note_previous("v1", 2)
    assert (run.previous, run.restore_count) == ("v1", 2)
    assert store.records["d1"].previous_revision == "v1" == run.record.previous_revision
    await run.note_previous("v1", 0)  # nothing served: restore the service's count
    assert run.restore_count == 3


async def test_prepare_goes_through_the_given_function_and_caps_the_build_output(
    tmp_path: Path,
) -> None:
    run, store, _, prepare = await _run(
        tmp_path, state=DeploymentState.IN_PROGRESS, lines=MAX_BUILD_LINES + 5
    )
    release = await run.prepare("v2")
    await run.close()
    assert release.sha == "v2" and prepare.asked == [("api", "v2")]
    kinds = [e.kind for e in store.event_log["d1"]]
    assert kinds.count(EventKind.BUILD_OUTPUT) == MAX_BUILD_LINES
    assert kinds[-1] is EventKind.BUILD


async def test_a_failure_rolls_the_fleet_back_to_the_previous_revision(tmp_path: Path) -> None:
    run, store, fleet, prepare = await _run(tmp_path, state=DeploymentState.IN_PROGRESS)
    fleet.touched = True
    await run.fail("health check failed")
    await run.close()
    assert fleet.calls == [("restore", ("v1", 3, "d1"))] and prepare.asked == [("api", "v1")]
    assert run.state is DeploymentState.ROLLED_BACK
    assert store.records["d1"].reason == "health check failed; rolled back to v1"


async def test_a_failure_before_anything_changed_only_fails(tmp_path: Path) -> None:
    run, store, fleet, _ = await _run(tmp_path, state=DeploymentState.IN_PROGRESS)
    await run.fail("boom")
    await run.close()
    assert fleet.calls == [] and run.state is DeploymentState.FAILED
    assert store.records["d1"].reason == "boom; nothing was changed"
