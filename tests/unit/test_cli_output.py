"""What `status`, `history`, `alarms` and a deploy's last line print: readable at 80 columns.

The commands run for real; only the control plane they would open is replaced by its answer
(the records or fleets a store and a router would give), and the console records at 80 columns.
"""

from __future__ import annotations

import io
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import typer
from rich.console import Console
from tests.unit.fakes import Harness, MemoryStore, make_loaded

from zerodown.cli import deploy as deploy_cli
from zerodown.cli import fast_path
from zerodown.cli import metrics as metrics_cli
from zerodown.config import LoadedConfig
from zerodown.config.model import ZerodownConfig
from zerodown.control_plane import FleetStatus
from zerodown.domain.events import DeploymentState
from zerodown.domain.records import DeploymentRecord
from zerodown.engine.deployer import DeployRequest
from zerodown.health.spec import TargetHealth
from zerodown.refs import REF_LABEL, given_ref, revision_label
from zerodown.routers.base import RouteSpec, RouteStatus, TargetSpec, TargetStatus
from zerodown.server.views import deployment_view, fleet_view

SHA = "1f03ba05cafe0123456789abcdef0123456789ab"
OLD = "0aa0bb11cc22dd33ee44ff5566778899aabbccdd"
LONG_REASON = (
    "instance web-prod-1f03ba05-0001 (1f03ba05cafe) failed its health check: unhealthy "
    "threshold reached: 3 consecutive failures, last: HTTP 503 Service Unavailable; "
) * 6 + "rolled back to 0aa0bb11cc22"


def _record(
    revision: str = SHA,
    *,
    state: DeploymentState = DeploymentState.SUCCEEDED,
    reason: str | None = None,
    ref: str | None = "v2",
    at: float = 1_700_000_000.0,
) -> DeploymentRecord:
    return DeploymentRecord(
        id=f"{int(at):032x}",
        service="web",
        environment="prod",
        revision=revision,
        strategy="rolling",
        state=state,
        actor="alice",
        created_at=at,
        reason=reason,
        started_at=at,
        finished_at=at + 12.5,
        labels={REF_LABEL: ref} if ref else {},
    )


@pytest.fixture
def screen(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    """What the CLI prints, on an 80-column terminal."""
    out = io.StringIO()
    console = Console(file=out, width=80, highlight=False, color_system=None)
    monkeypatch.setattr(deploy_cli, "console", console)
    monkeypatch.setattr(metrics_cli, "console", console)
    monkeypatch.setattr(fast_path, "console", console)  # `status` prints there
    return out


class _Plane:
    """What `history` and `status` ask of the control plane."""

    def __init__(self, store: MemoryStore, fleets: list[FleetStatus]) -> None:
        self.store = store
        self.fleets = fleets

    async def status(self) -> list[FleetStatus]:
        return self.fleets

    async def orphans(self) -> list[Any]:
        return []


def _answering(
    monkeypatch: pytest.MonkeyPatch,
    records: list[DeploymentRecord] = (),  # type: ignore[assignment]
    fleets: list[FleetStatus] = (),  # type: ignore[assignment]
) -> None:
    store = MemoryStore()
    for record in reversed(records):  # the store lists the newest first
        store.records[record.id] = record
        store.order.append(record.id)
    plane = _Plane(store, list(fleets))

    def open_and_run(
        config: Path | None, work: Callable[[Any], Awaitable[Any]], *, recover: bool = True
    ) -> Any:
        import asyncio

        return asyncio.run(work(plane))

    monkeypatch.setattr(deploy_cli, "open_and_run", open_and_run)


def test_revision_label_names_the_ref_beside_a_short_sha() -> None:
    """`v2 (1f03ba05)` for a deploy by tag; the short sha alone when the user gave a sha."""
    assert revision_label(SHA, "v2") == "v2 (1f03ba05)"
    assert revision_label(SHA, None) == SHA[:12]
    assert revision_label(SHA, SHA[:7]) == SHA[:12]  # a short sha is no name
    assert revision_label("v2", None) == "v2"  # an unsourced service's label
    assert revision_label(None, None) == "-"
    assert given_ref("main", SHA) == "main" and given_ref(SHA[:10], SHA) is None


def test_history_keeps_one_long_reason_to_one_line_at_80_columns(
    monkeypatch: pytest.MonkeyPatch, screen: io.StringIO
) -> None:
    """A 600-character reason took 37 lines: now the row and one line of reason, cut with "…"."""
    failed = _record(state=DeploymentState.ROLLED_BACK, reason=LONG_REASON, at=1_700_000_100.0)
    _answering(monkeypatch, [failed, _record(OLD, ref=None)])
    deploy_cli.history()
    lines = screen.getvalue().splitlines()
    assert len(lines) == 4, screen.getvalue()  # header, failed row + its reason, succeeded row
    assert all(len(line) <= 80 for line in lines), lines
    assert lines[2].strip().startswith("instance web-prod-1f03ba05-0001") and lines[2].endswith("…")
    assert "v2 (1f03ba05)" in lines[1] and "rolled_back" in lines[1]
    assert OLD[:12] in lines[3] and "succeeded" in lines[3]


def test_history_wide_shows_the_whole_reason(
    monkeypatch: pytest.MonkeyPatch, screen: io.StringIO
) -> None:
    """`--wide`: the reason whole, on its line (the terminal wraps it), nothing cut."""
    failed = _record(state=DeploymentState.ROLLED_BACK, reason=LONG_REASON)
    _answering(monkeypatch, [failed])
    deploy_cli.history(wide=True)
    lines = screen.getvalue().splitlines()
    assert lines[2].strip() == LONG_REASON, lines
    assert "…" not in screen.getvalue()


def test_status_names_revisions_by_the_ref_they_were_deployed_as(
    monkeypatch: pytest.MonkeyPatch, screen: io.StringIO, tmp_path: Path
) -> None:
    """Status: `revision v2 (1f03ba05)` for the fleet, the last deploy and each target."""
    monkeypatch.chdir(tmp_path)  # no zerodown.yml, so no `zerodown serve` to ask
    live = _record()
    target = TargetStatus(
        TargetSpec("web.prod", "web-prod-1f03-0001", "127.0.0.1", 20001, revision=SHA),
        TargetHealth.HEALTHY,
        draining=False,
        inflight=0,
    )
    fleet = FleetStatus(
        "web", "prod", RouteStatus(RouteSpec("web.prod"), (target,)), (), last=live, live=live
    )
    _answering(monkeypatch, fleets=[fleet])
    deploy_cli.status()
    text = screen.getvalue()
    assert "revision v2 (1f03ba05)" in text and "last: succeeded v2 (1f03ba05)" in text
    row = next(line for line in text.splitlines() if "web-prod-1f03-0001" in line)
    assert "v2 (1f03ba05)" in row
    view = fleet_view(fleet)
    assert view["revision_label"] == "v2 (1f03ba05)"
    assert view["targets"][0]["revision_label"] == "v2 (1f03ba05)"
    assert view["live"]["revision_label"] == deployment_view(live)["revision_label"]


def test_the_deploy_result_line_names_the_ref(screen: io.StringIO) -> None:
    """`succeeded web/prod v2 (1f03ba05) in 12.5s`, and the same on a failure."""
    with pytest.raises(typer.Exit):
        deploy_cli._finish(_record())
    with pytest.raises(typer.Exit):
        deploy_cli._finish(_record(state=DeploymentState.FAILED, reason="boom"))
    lines = screen.getvalue().splitlines()
    assert lines[0].startswith("succeeded web/prod v2 (1f03ba05) in 12.5s"), lines
    assert lines[1].startswith("failed web/prod v2 (1f03ba05) after 12.5s: boom"), lines


def test_alarms_without_any_says_what_to_write(
    monkeypatch: pytest.MonkeyPatch, screen: io.StringIO
) -> None:
    """It printed "no alarms configured (environments: alarms: )": rich ate the example."""
    monkeypatch.setattr(
        metrics_cli, "_with_plane", lambda config, work: {"alarms": [], "history": []}
    )
    metrics_cli.alarms()
    text = " ".join(screen.getvalue().split())
    assert "add `alarms: [{preset: seed}]` to an environment in zerodown.yml" in text, text


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True)
    return done.stdout.strip()


async def test_a_deploy_by_tag_keeps_the_tag_in_the_record(tmp_path: Path) -> None:
    """`--revision v2` records the sha and labels["ref"] = "v2"; a deploy by sha records no ref."""
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    (repo / "app.py").write_text("print('v2')\n")
    _git(repo, "add", "app.py")
    env = ["-c", "user.name=t", "-c", "user.email=t@example.com"]
    _git(repo, *env, "commit", "-q", "-m", "v2")
    _git(repo, "tag", "v2")
    sha = _git(repo, "rev-parse", "HEAD")
    base = make_loaded(tmp_path)
    data = base.config.model_dump(mode="json", exclude_unset=True)
    data["services"]["api"]["source"] = {"repo": "repo"}
    data["services"]["api"].pop("workdir", None)
    loaded = LoadedConfig(ZerodownConfig.model_validate(data), base.path, base.root)
    harness = Harness(loaded)
    by_tag = await harness.deployer.deploy(DeployRequest("api", "prod", "v2", "test"))
    assert by_tag.state is DeploymentState.SUCCEEDED, by_tag.reason
    stored = await harness.store.get_deployment(by_tag.id)
    assert stored.revision == sha and stored.labels == {REF_LABEL: "v2"}
    by_sha = await harness.deployer.deploy(DeployRequest("api", "prod", sha[:10], "test"))
    assert (await harness.store.get_deployment(by_sha.id)).labels == {}
