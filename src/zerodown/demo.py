"""`make demo`: zerodown's main job, end to end, on this machine.

A throwaway git repository holds the sample web app with three commits: v1, v2, and v3 whose health
check fails. The demo deploys v1, then v2 under live load, then v3, which fails its health check
and is rolled back automatically. It ends with a table: requests sent, requests failed, each
deployment's duration and outcome, and the rollback reason.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path

from rich.table import Table

from zerodown.cli.progress import ConsoleProgress
from zerodown.config import load_config
from zerodown.config.routes import environment_listen
from zerodown.control_plane import ControlPlane
from zerodown.domain.records import DeploymentRecord
from zerodown.engine.deployer import DeployRequest
from zerodown.loadgen import LoadReport, LoadSpec, run_load
from zerodown.secrets.masking import masked_console

APP = Path(__file__).resolve().parents[2] / "examples" / "webapp" / "app.py"
console = masked_console(highlight=False)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _git(repo: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "demo",
        "GIT_AUTHOR_EMAIL": "demo@zerodown.local",
        "GIT_COMMITTER_NAME": "demo",
        "GIT_COMMITTER_EMAIL": "demo@zerodown.local",
    }
    done = subprocess.run(
        ["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True
    )
    return done.stdout.strip()


def make_repository(root: Path, port: int) -> Path:
    """A git repo with the sample app at v1, v2 and v3 (v3 fails its health check)."""
    repo = root / "shop"
    service = repo / "services" / "web"
    service.mkdir(parents=True)
    _git(repo, "init", "-q", "-b", "main")
    shutil.copy(APP, service / "app.py")
    for version in ("v1", "v2", "v3"):
        (service / "VERSION").write_text(version + "\n")
        if version == "v3":
            (service / "FAIL_HEALTH").write_text("v3 ships a broken health check\n")
        _git(repo, "add", "-A")
        message = "v3: new checkout flow (health check broken)" if version == "v3" else version
        _git(repo, "commit", "-q", "-m", message)
        _git(repo, "tag", version)
    (repo / "zerodown.yml").write_text(
        textwrap.dedent(
            f"""\
            project: shop
            state_dir: .zerodown
            router:
              listen: ["127.0.0.1:{port}"]
            services:
              web:
                source: {{repo: ., path: services/web}}
                run: {sys.executable} app.py
                instances: 2
                health: {{preset: fastapi, start_period: 1s}}
                drain_timeout: 10s
                stop_timeout: 5s
            environments:
              prod:
                branch: main
                strategy: {{type: rolling, batch: 1, surge: true}}
                auto_rollback: true
            """
        )
    )
    return repo


@dataclass(frozen=True)
class DemoResult:
    """What the demo did: each deployment by tag, and what the load saw."""

    deployments: list[tuple[str, DeploymentRecord]]
    load: LoadReport


async def run_demo(root: Path) -> DemoResult:
    """Run the demo in `root` and print its table; failed requests should be 0."""
    port = _free_port()
    repo = make_repository(root, port)
    loaded = load_config(repo / "zerodown.yml")
    prod = environment_listen(loaded.config, "prod")[0]  # where the prod environment is served
    console.rule("[bold]zerodown demo")
    console.print(f"repository {repo} (v1, v2, v3); prod served on http://{prod}/")
    progress = ConsoleProgress(console)
    plane = await ControlPlane.open(loaded, observers=[progress])
    records: list[tuple[str, DeploymentRecord]] = []
    try:
        deployer = plane.deployer([progress])

        async def deploy(tag: str) -> DeploymentRecord:
            console.rule(f"deploy web {tag}")
            request = DeployRequest(service="web", environment="prod", revision=tag, actor="demo")
            record = await deployer.deploy(request)
            records.append((tag, record))
            return record

        await deploy("v1")
        stop = asyncio.Event()
        load = asyncio.create_task(
            run_load(
                LoadSpec(
                    url=f"http://{prod}",
                    connections=20,
                    slow_fraction=0.1,
                    slow_path="/slow?seconds=1",
                    max_seconds=180,
                ),
                stop,
            )
        )
        await deploy("v2")
        await deploy("v3")
        stop.set()
        report = await load
    finally:
        console.rule("cleaning up")
        await plane.stop_everything()
        await plane.close()

    table = Table(title="zerodown demo")
    for column in ("deployment", "tag", "sha", "outcome", "duration", "reason"):
        table.add_column(column, overflow="fold")
    for tag, record in records:
        table.add_row(
            record.id[:8],
            tag,
            record.revision[:10],
            record.state.value,
            f"{record.duration:.1f}s" if record.duration is not None else "-",
            # its first line: an instance's last output follows in the history
            (record.reason or "").split("\n", 1)[0].removesuffix("; last output:"),
        )
    console.print(table)
    versions = ", ".join(f"{v}: {n}" for v, n in sorted(report.versions.items()))
    console.print(
        f"requests sent under load: {report.sent}; failed: {report.failed}; "
        f"version that answered `/` (the rest were /slow): {versions}; "
        f"p99 {report.percentile(99) * 1000:.0f} ms"
    )
    for reason, count in report.failures.most_common(5):
        console.print(f"  [red]{count} x {reason}[/red]")
    return DemoResult(deployments=records, load=report)


def main() -> None:
    """Entry point of `python -m zerodown.demo`."""
    root = Path(tempfile.mkdtemp(prefix="zerodown-demo-"))
    try:
        result = asyncio.run(run_demo(root))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    sys.exit(1 if result.load.failed else 0)


if __name__ == "__main__":
    main()
