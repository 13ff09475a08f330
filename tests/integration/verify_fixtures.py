"""A deployment stack for the verification tests: router daemon on a random loopback port,
LocalRuntime, SQLite history, and a Deployer with the `PostDeployVerifier`."""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.integration.test_deploy_local import Stack

from zerodown.config.loader import LoadedConfig, load_config
from zerodown.domain.events import DeploymentEvent, EventKind
from zerodown.domain.records import DeploymentRecord
from zerodown.engine.deployer import Deployer, DeployRequest
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


class VerifyStack(Stack):
    """The end-to-end stack of test_deploy_local, with zerodown.yml holding `verify:`."""

    @property
    def listen(self) -> str:
        return f"127.0.0.1:{self.port}"

    def write_config(  # type: ignore[override]  # the verify tests write other fields
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
            "router": {"backend": self.backend, "listen": [self.listen]},
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


@pytest.fixture
async def verify_stack(stack: Stack) -> VerifyStack:
    """The `stack` fixture's router, runtime and store, for verification tests."""
    return VerifyStack(
        stack.root, stack.port, stack.runtime, stack.router, stack.store, stack.backend
    )
