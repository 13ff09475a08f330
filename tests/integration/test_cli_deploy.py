"""`zerodown deploy` as CI calls it: exit codes, status, history, abort, kill -9 and stop.

Real git repository (the demo's v1/v2/v3), real router, real instances, real SQLite history.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from zerodown.demo import make_repository

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Project:
    """The demo repository with a zerodown.yml, driven through the real command line."""

    def __init__(self, root: Path) -> None:
        self.port = _free_port()
        self.repo = make_repository(root, self.port)
        # instances take 2 s to boot, so a deployment lasts long enough to be interrupted
        config = self.repo / "zerodown.yml"
        text = config.read_text().replace(
            "    instances: 2\n", "    instances: 2\n    env: {BOOT_SECONDS: '2'}\n"
        )
        assert "BOOT_SECONDS" in text
        config.write_text(text)

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "zerodown", *args],
            cwd=self.repo,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def spawn(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "zerodown", *args],
            cwd=self.repo,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def status(self) -> dict[str, Any]:
        done = self.run("status", "--json")
        assert done.returncode == 0, done.stderr
        return dict(json.loads(done.stdout)[0])

    def get(self) -> httpx.Response:
        return httpx.get(f"http://127.0.0.1:{self.port}/", timeout=10)

    def sha(self, tag: str) -> str:
        return subprocess.run(
            ["git", "rev-parse", tag], cwd=self.repo, capture_output=True, text=True, check=True
        ).stdout.strip()


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    project = Project(tmp_path)
    yield project
    project.run("stop")


def _wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)  # another process: nothing to await
    raise AssertionError(f"timed out waiting for {what}")


def _lock_held(project: Project) -> bool:
    history = json.loads(project.run("history", "--json").stdout or "[]")
    return bool(history) and history[0]["state"] == "in_progress"


def test_deploy_exit_codes_status_history_and_stop(project: Project) -> None:
    first = project.run("deploy", "web", "--env", "prod", "--revision", "v1")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "succeeded" in first.stdout
    status = project.status()
    assert status["revision"] == project.sha("v1")
    assert status["healthy"] == 2
    assert project.get().json()["version"] == "v1"

    bad = project.run("deploy", "web", "--env", "prod", "--revision", "v3")
    assert bad.returncode == 1
    assert "rolled_back" in bad.stdout and "health" in bad.stdout
    assert project.get().json()["version"] == "v1"

    history = json.loads(project.run("history", "--json").stdout)
    assert [h["state"] for h in history] == ["rolled_back", "succeeded"]
    assert history[0]["reason"]

    pids = [i["pid"] for i in project.status()["instances"]]
    stopped = project.run("stop")
    assert stopped.returncode == 0, stopped.stderr
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists(), f"instance pid {pid} survived zerodown stop"
    with pytest.raises(httpx.TransportError):
        project.get()


def test_abort_rolls_the_fleet_back(project: Project) -> None:
    # While `hold` exists the new instances wait in a hook: the abort always finds v2 mid-flight.
    hold = project.repo.parent / "hold"
    config = project.repo / "zerodown.yml"
    hook = f"    hooks: {{BeforeAllowTraffic: 'while [ -e {hold} ]; do sleep 0.1; done'}}\n"
    config.write_text(config.read_text().replace("    instances: 2\n", "    instances: 2\n" + hook))
    assert project.run("deploy", "web", "--env", "prod", "-r", "v1").returncode == 0
    hold.touch()
    deploy = project.spawn("deploy", "web", "--env", "prod", "-r", "v2")
    _wait_for(lambda: _lock_held(project), 60, "the v2 deployment to start")
    aborted = project.run("abort", "web", "--env", "prod")
    assert aborted.returncode == 0, aborted.stderr
    output, _ = deploy.communicate(timeout=120)
    assert deploy.returncode == 1, output
    assert "aborted by `zerodown abort`" in output
    history = json.loads(project.run("history", "--json").stdout)
    assert history[0]["state"] in ("rolled_back", "failed")
    assert project.get().json()["version"] == "v1"


def test_kill_9_of_a_deploy_keeps_traffic_flowing_and_is_recovered(project: Project) -> None:
    assert project.run("deploy", "web", "--env", "prod", "-r", "v1").returncode == 0
    deploy = project.spawn("deploy", "web", "--env", "prod", "-r", "v2")
    _wait_for(lambda: _lock_held(project), 60, "the v2 deployment to start")
    os.kill(deploy.pid, signal.SIGKILL)
    deploy.wait(timeout=10)
    # the data plane does not need the control plane
    for _ in range(20):
        assert project.get().status_code == 200
    status = project.status()  # opening the control plane recovers the deployment
    last = status["last_deployment"]
    assert isinstance(last, dict)
    assert last["state"] in ("rolled_back", "succeeded")
    assert "crash" in last["reason"] or last["state"] == "succeeded"
    version = project.get().json()["version"]
    assert version == ("v1" if last["state"] == "rolled_back" else "v2")


def test_deploy_goes_through_a_running_serve_and_serve_stopping_keeps_traffic(
    project: Project,
) -> None:
    serve = project.spawn("serve")
    try:
        sock = project.repo / ".zerodown" / "control-plane.sock"
        _wait_for(sock.exists, 60, "zerodown serve to listen")
        done = project.run("deploy", "web", "--env", "prod", "-r", "v1", "--actor", "ci-bot")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "batch 1/1" in done.stdout  # live progress streamed from serve
        bad = project.run("deploy", "web", "--env", "prod", "-r", "v3")
        assert bad.returncode == 1
        assert "rolled_back" in bad.stdout
        history = json.loads(project.run("history", "--json").stdout)
        assert history[1]["actor"] == "ci-bot"
    finally:
        output = _stop_serve(serve)
    assert serve.returncode == 0, output
    assert "zerodown serve stopped" in output
    assert project.get().json()["version"] == "v1"  # the data plane outlives the control plane


def _stop_serve(serve: subprocess.Popen[str]) -> str:
    """Ctrl-C to serve and its output; killed if it does not stop (a test never leaks it)."""
    serve.send_signal(signal.SIGINT)
    try:
        return serve.communicate(timeout=150)[0]
    except subprocess.TimeoutExpired:
        serve.kill()
        return serve.communicate()[0] + "\n(killed: serve did not stop within 150 s)"


def _hold_new_instances(project: Project) -> Path:
    """While the returned file exists, new instances wait in a hook (the deploy stays running)."""
    hold = project.repo.parent / "hold"
    config = project.repo / "zerodown.yml"
    hook = f"    hooks: {{BeforeAllowTraffic: 'while [ -e {hold} ]; do sleep 0.1; done'}}\n"
    config.write_text(config.read_text().replace("    instances: 2\n", "    instances: 2\n" + hook))
    return hold


def test_refused_deploy_does_not_disturb_the_running_one_and_abort_never_kills_serve(
    project: Project,
) -> None:
    """A second deploy through serve is refused (exit 2, not recorded); `zerodown abort` then
    reaches the running deployment through serve, and serve survives it."""
    hold = _hold_new_instances(project)
    serve = project.spawn("serve")
    try:
        sock = project.repo / ".zerodown" / "control-plane.sock"
        _wait_for(sock.exists, 60, "zerodown serve to listen")
        assert project.run("deploy", "web", "--env", "prod", "-r", "v1").returncode == 0
        hold.touch()
        first = project.spawn("deploy", "web", "--env", "prod", "-r", "v2")
        _wait_for(lambda: _lock_held(project), 60, "the v2 deployment to start")
        second = project.run("deploy", "web", "--env", "prod", "-r", "v3")
        assert second.returncode == 2, second.stdout + second.stderr
        assert "being deployed" in second.stderr
        aborted = project.run("abort", "web", "--env", "prod")
        assert aborted.returncode == 0, aborted.stderr
        assert "asked zerodown serve to abort" in aborted.stdout
        output, _ = first.communicate(timeout=120)
        assert first.returncode == 1, output
        assert "aborted by `zerodown abort`" in output
        assert serve.poll() is None, "zerodown serve died"
        history = json.loads(project.run("history", "--json").stdout)
        assert [h["revision"] for h in history] == [project.sha("v2"), project.sha("v1")]
        assert project.get().json()["version"] == "v1"
    finally:
        hold.unlink(missing_ok=True)
        output = _stop_serve(serve)
    assert serve.returncode == 0, output


def test_refused_requests_exit_2_and_are_not_deployments(project: Project) -> None:
    """An unknown revision and a held lock: exit 2, nothing recorded, `status` and the KPIs
    still show the last real deployment."""
    assert project.run("deploy", "web", "--env", "prod", "-r", "v1").returncode == 0
    unknown = project.run("deploy", "web", "--env", "prod", "-r", "v99")
    assert unknown.returncode == 2, unknown.stdout + unknown.stderr
    assert "unknown revision 'v99'" in unknown.stderr
    hold = _hold_new_instances(project)
    hold.touch()
    running = project.spawn("deploy", "web", "--env", "prod", "-r", "v2")
    try:
        _wait_for(lambda: _lock_held(project), 60, "the v2 deployment to start")
        locked = project.run("deploy", "web", "--env", "prod", "-r", "v1")
        assert locked.returncode == 2, locked.stdout + locked.stderr
        assert "being deployed" in locked.stderr
    finally:
        hold.unlink()
        running.communicate(timeout=120)
    assert running.returncode == 0
    history = json.loads(project.run("history", "--json").stdout)
    assert [(h["revision"], h["state"]) for h in history] == [
        (project.sha("v2"), "succeeded"),
        (project.sha("v1"), "succeeded"),
    ]
    kpis = project.run("kpis", "--json")
    assert kpis.returncode == 0, kpis.stderr
    prod = [k for k in json.loads(kpis.stdout) if k["environment"] == "prod"]
    assert prod[0]["deployments"] == 2 and prod[0]["deploys_failed"] == 0


def test_serve_deploys_with_zerodown_yml_as_it_is_now(project: Project) -> None:
    """serve re-reads zerodown.yml for each request: a changed strategy is used at once, an
    invalid file refuses the request with its error (exit 2) and serve keeps running."""
    config = project.repo / "zerodown.yml"
    valid = config.read_text()
    serve = project.spawn("serve")
    try:
        sock = project.repo / ".zerodown" / "control-plane.sock"
        _wait_for(sock.exists, 60, "zerodown serve to listen")
        first = project.run("deploy", "web", "--env", "prod", "-r", "v1")
        assert first.returncode == 0, first.stdout + first.stderr
        assert "rolling:" in first.stdout
        text = config.read_text()
        assert "strategy: {type: rolling, batch: 1, surge: true}" in text
        config.write_text(
            text.replace("{type: rolling, batch: 1, surge: true}", "{type: all-at-once}")
        )
        second = project.run("deploy", "web", "--env", "prod", "-r", "v2")
        assert second.returncode == 0, second.stdout + second.stderr
        assert "all-at-once:" in second.stdout and "rolling:" not in second.stdout
        config.write_text(config.read_text().replace("drain_timeout:", "drain_timout:", 1))
        invalid = project.run("deploy", "web", "--env", "prod", "-r", "v1")
        assert invalid.returncode == 2, invalid.stdout + invalid.stderr
        assert "zerodown.yml:" in invalid.stderr and "drain_timout" in invalid.stderr
        assert serve.poll() is None
        config.write_text(config.read_text().replace("drain_timout:", "drain_timeout:", 1))
        history = json.loads(project.run("history", "--json").stdout)
        assert [h["strategy"] for h in history] == ["all-at-once", "rolling"]
    finally:
        config.write_text(valid)  # the fixture's `zerodown stop` needs a valid file
        output = _stop_serve(serve)
    assert serve.returncode == 0, output


def test_an_environment_removed_from_zerodown_yml_is_shown_as_orphan_and_stoppable(
    project: Project,
) -> None:
    """Its instances keep running (the data plane never stops by itself): `status` names them
    as orphans with the command that stops them, and `stop --env` stops only them."""
    config = project.repo / "zerodown.yml"
    with_staging = config.read_text() + (
        f"  staging:\n    listen: ['127.0.0.1:{_free_port()}']\n"
        "    strategy: {type: all-at-once}\n"
    )
    config.write_text(with_staging)
    assert project.run("deploy", "web", "--env", "prod", "-r", "v1").returncode == 0
    done = project.run("deploy", "web", "--env", "staging", "-r", "v2")
    assert done.returncode == 0, done.stdout + done.stderr
    config.write_text(with_staging.split("  staging:\n")[0])
    shown = project.run("status")
    assert shown.returncode == 0, shown.stderr
    assert "web/staging" in shown.stdout and "orphaned" in shown.stdout
    assert "zerodown stop --env staging" in shown.stdout
    listed = json.loads(project.run("status", "--json").stdout)
    orphans = [entry for entry in listed if entry.get("orphan")]
    assert [(o["environment"], len(o["instances"])) for o in orphans] == [("staging", 2)]
    stopped = project.run("stop", "--env", "staging")
    assert stopped.returncode == 0, stopped.stderr
    assert "stopped 2 instance(s) of staging" in stopped.stdout
    assert not [
        entry for entry in json.loads(project.run("status", "--json").stdout) if entry.get("orphan")
    ]
    assert project.get().json()["version"] == "v1"  # prod keeps serving


def test_deploy_without_revision_deploys_head_of_the_source_repo(project: Project) -> None:
    """What `zerodown init` says to run next works: no --revision means HEAD."""
    subprocess.run(["git", "checkout", "-q", "v2"], cwd=project.repo, check=True)
    done = project.run("deploy", "web", "--env", "prod")
    assert done.returncode == 0, done.stdout + done.stderr
    history = json.loads(project.run("history", "--json").stdout)
    assert history[0]["revision"] == project.sha("v2")
    assert project.get().json()["version"] == "v2"


def test_status_is_answered_by_a_running_serve_without_loading_the_store(
    project: Project,
) -> None:
    """With serve running, `status` asks it (the CLI loads neither SQLAlchemy, the config
    model, typer nor pydantic) and shows the same fleet as without serve."""
    assert project.run("deploy", "web", "--env", "prod", "-r", "v1").returncode == 0
    direct = project.status()
    serve = project.spawn("serve")
    try:
        sock = project.repo / ".zerodown" / "control-plane.sock"
        _wait_for(sock.exists, 60, "zerodown serve to listen")
        through_serve = project.status()
        timed = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "zerodown", "status"],
            cwd=project.repo,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert timed.returncode == 0, timed.stderr[-2000:]
        assert "web/prod" in timed.stdout
        loaded = {line.split("|")[-1].strip() for line in timed.stderr.splitlines()}
        heavy = ("sqlalchemy", "zerodown.config.model", "typer", "pydantic")
        assert not {m for m in loaded if m.startswith(heavy)}
    finally:
        _stop_serve(serve)
    keys = ("service", "environment", "revision", "revision_label", "healthy")
    assert {k: through_serve[k] for k in keys} == {k: direct[k] for k in keys}
    assert through_serve["healthy"] == 2
