"""A deployment stack for the verification tests: router daemon on a random loopback port,
LocalRuntime, SQLite history, and a Deployer with the `PostDeployVerifier`."""

from __future__ import annotations

import shutil
import socket
import sys
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from zerodown.config.loader import LoadedConfig, load_config
from zerodown.engine.deployer import Deployer, DeployRequest
from zerodown.engine.events import DeploymentEvent, EventKind
from zerodown.routers.builtin.client import BuiltinRouter, ensure_router, stop_router
from zerodown.runtimes.local import LocalRuntime
from zerodown.store.base import DeploymentRecord
from zerodown.store.sql import SqlHistoryStore, open_store
from zerodown.verify.verifier import PostDeployVerifier

REPO = Path(__file__).resolve().parents[2]
WEBAPP = REPO / "examples" / "webapp"
VERIFY_APP = Path(__file__).resolve().parent / "verify_app"


def free_port() -> int:
    """A free loopback port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_command(app_dir: Path, per_revision: dict[str, str] | None = None) -> str:
    """`python app.py`, with `export` lines for chosen revisions (e.g. {"slow": "X=1"})."""
    lines = [
        f'if [ "$ZERODOWN_REVISION" = {rev} ]; then export {env}; fi; '
        for rev, env in (per_revision or {}).items()
    ]
    return "".join(lines) + f"exec {sys.executable} {app_dir / 'app.py'}"


@dataclass
class VerifyStack:
    """A state dir with a router daemon, a runtime and a store, and a zerodown.yml to write."""

    root: Path
    port: int
    runtime: LocalRuntime
    router: BuiltinRouter
    store: SqlHistoryStore

    @property
    def listen(self) -> str:
        return f"127.0.0.1:{self.port}"

    def write_config(
        self,
        *,
        run: str,
        verify: dict[str, Any] | None,
        instances: int = 1,
        health_path: str = "/health",
    ) -> LoadedConfig:
        """Write zerodown.yml (service `api` in `prod`, verify as given) and load it."""
        data = {
            "state_dir": "state",
            "router": {"listen": [self.listen]},
            "services": {
                "api": {
                    "workdir": str(WEBAPP),
                    "run": run,
                    "instances": instances,
                    "hosts": ["api.test"],
                    "drain_timeout": 2,
                    "stop_timeout": 2,
                    "health": {
                        "path": health_path,
                        "healthy_threshold": 1,
                        "interval": 0.1,
                        "start_interval": 0.1,
                        "timeout": 2,
                        "deadline": 30,
                    },
                    "verify": verify,
                }
            },
            "environments": {"prod": {}},
        }
        path = self.root / "zerodown.yml"
        path.write_text(yaml.safe_dump(data))
        return load_config(path, environ={})

    async def deploy(self, loaded: LoadedConfig, revision: str) -> DeploymentRecord:
        """Deploy `revision` of api to prod with post-deploy verification."""
        deployer = Deployer(
            loaded,
            runtime=self.runtime,
            router=self.router,
            store=self.store,
            verifiers=[PostDeployVerifier(router_listen=self.listen)],
        )
        return await deployer.deploy(DeployRequest("api", "prod", revision, "test"))

    async def verify_events(self, record: DeploymentRecord) -> list[DeploymentEvent]:
        """The deployment's VERIFY events, in order."""
        return [e for _, e in await self.store.events(record.id) if e.kind is EventKind.VERIFY]

    async def running_revisions(self) -> list[str]:
        """Revisions of the instances whose process runs."""
        return sorted(i.revision for i in await self.runtime.list("api") if i.state == "running")


@pytest.fixture
async def verify_stack() -> AsyncIterator[VerifyStack]:
    """A fresh stack, everything stopped and removed afterwards."""
    # A short path: the router's control socket must fit in sun_path (108 bytes).
    root = Path(tempfile.mkdtemp(prefix="zd-v-", dir="/tmp"))
    state = root / "state"
    port = free_port()
    runtime = LocalRuntime(state)
    store: SqlHistoryStore | None = None
    try:
        await ensure_router(state, [f"127.0.0.1:{port}"])
        store = open_store(f"sqlite:///{state / 'history.db'}")
        yield VerifyStack(root, port, runtime, BuiltinRouter(state), store)
    finally:
        for info in await runtime.list():
            await runtime.stop(info.instance_id, timeout=2)
            await runtime.remove(info.instance_id)
        await stop_router(state, timeout=10)
        if store is not None:
            await store.close()
        shutil.rmtree(root, ignore_errors=True)
