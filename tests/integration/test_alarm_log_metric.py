"""A log metric alarm rolls a bad revision back: the AlarmGuard follows the new instances' output
through `Runtime.logs` (no log file is opened by the engine) and counts a service's log metric
filter; revision `bad` writes an ERROR line every 0.2 s; what v1 wrote before the deployment
must not count."""

from __future__ import annotations

import shutil
import socket
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml

from zerodown.alarms.bake import BakeWindow
from zerodown.alarms.guard import AlarmGuard
from zerodown.config.loader import LoadedConfig, load_config
from zerodown.domain.events import DeploymentState, EventKind
from zerodown.engine.deployer import Deployer, DeployRequest
from zerodown.routers.builtin.client import BuiltinRouter, ensure_router, stop_router
from zerodown.runtimes.local import LocalRuntime
from zerodown.store.sql import SqlHistoryStore, open_store

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

WEBAPP = Path(__file__).resolve().parents[2] / "examples" / "webapp"
# v1 says ERROR three times while booting (before the deployment of `bad` is watched); `bad`
# keeps saying another ERROR.
RUN = (
    'if [ "$ZERODOWN_REVISION" = v1 ]; then '
    "echo 'ERROR at boot'; echo 'ERROR at boot'; echo 'ERROR at boot'; fi; "
    'if [ "$ZERODOWN_REVISION" = bad ]; then '
    "(while :; do echo 'ERROR payment failed'; sleep 0.2; done) & fi; "
    f"exec {sys.executable} app.py"
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _config(root: Path, port: int) -> LoadedConfig:
    data = {
        "state_dir": "state",
        "router": {"listen": [f"127.0.0.1:{port}"]},
        "services": {
            "api": {
                "workdir": str(WEBAPP),
                "run": RUN,
                "instances": 1,
                "drain_timeout": 2,
                "stop_timeout": 2,
                "log_metrics": [{"name": "payment_errors", "pattern": r"ERROR payment"}],
                "health": {
                    "path": "/health",
                    "healthy_threshold": 1,
                    "interval": 0.2,
                    "start_interval": 0.1,
                    "timeout": 2,
                    "deadline": 30,
                },
            }
        },
        "environments": {
            "prod": {
                "bake_window": "40s",
                "alarms": [
                    {
                        "name": "payment-errors",
                        "metric": "log:payment_errors",
                        "statistic": "sum",
                        "comparison": ">",
                        "threshold": 5,
                        "period": "10s",
                        "evaluation_periods": 1,
                        "treat_missing_data": "notBreaching",
                    },
                    {
                        "name": "boot-errors",  # lines written before the guard watched
                        "metric": "log:boot_errors",
                        "statistic": "sum",
                        "comparison": ">",
                        "threshold": 0,
                        "period": "10s",
                        "evaluation_periods": 1,
                        "treat_missing_data": "notBreaching",
                    },
                ],
            }
        },
    }
    data["services"]["api"]["log_metrics"].append(  # type: ignore[index]
        {"name": "boot_errors", "pattern": r"ERROR at boot"}
    )
    path = root / "zerodown.yml"
    path.write_text(yaml.safe_dump(data))
    return load_config(path, environ={})


@pytest.fixture
async def root() -> AsyncIterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="zd-l-", dir="/tmp"))  # short: sun_path
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def test_a_log_metric_alarm_rolls_back_a_revision_that_logs_errors(root: Path) -> None:
    port = _free_port()
    loaded = _config(root, port)
    state = loaded.state_dir
    runtime = LocalRuntime(state)
    store: SqlHistoryStore | None = None
    try:
        await ensure_router(state, [f"127.0.0.1:{port}"])
        store = open_store(f"sqlite:///{state / 'history.db'}")
        plain = Deployer(loaded, runtime=runtime, router=BuiltinRouter(state), store=store)
        first = await plain.deploy(DeployRequest("api", "prod", "v1", "test"))
        assert first.state is DeploymentState.SUCCEEDED, first.reason
        [v1] = [i.instance_id for i in await runtime.list("api")]
        assert [line async for line in runtime.logs(v1)][:3] == ["ERROR at boot"] * 3
        guarded = Deployer(
            loaded,
            runtime=runtime,
            router=BuiltinRouter(state),
            store=store,
            guards=[AlarmGuard(store=store)],
            verifiers=[BakeWindow()],
        )
        record = await guarded.deploy(DeployRequest("api", "prod", "bad", "test"))
        events = [event for _, event in await store.events(record.id)]
        assert record.state is DeploymentState.ROLLED_BACK, record.reason
        assert "payment-errors" in (record.reason or "")
        alarms = [e.message for e in events if e.kind is EventKind.ALARM]
        assert any(m.startswith("alarm payment-errors: OK -> ALARM") for m in alarms), alarms
        # v1's instance had its boot lines in its log when the guard began to follow it
        assert not any(m.startswith("alarm boot-errors") and "-> ALARM" in m for m in alarms)
        running = [i.revision for i in await runtime.list("api") if i.state == "running"]
        assert running == ["v1"]
    finally:
        for info in await runtime.list():
            await runtime.stop(info.instance_id, timeout=2)
            await runtime.remove(info.instance_id)
        await stop_router(state, timeout=10)
        if store is not None:
            await store.close()
