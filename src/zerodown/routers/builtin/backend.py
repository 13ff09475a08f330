"""The built-in router as a `RouterBackend`: one daemon, or `workers` daemons on the same
addresses (SO_REUSEPORT), each restarted hitlessly by handing over its listening socket."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from zerodown.config.router import BuiltinRouterConfig
from zerodown.errors import RouterError
from zerodown.routers.base import Router
from zerodown.routers.builtin.client import BuiltinRouter, ensure_router
from zerodown.routers.builtin.pool import (
    WorkerPoolRouter,
    ensure_pool,
    restart_pool,
    running_workers,
    stop_pool,
)


class BuiltinBackend:
    """zerodown's own reverse proxy, started and driven through its control socket."""

    name = "builtin"

    def __init__(self, settings: BuiltinRouterConfig) -> None:
        self.settings = settings

    async def open(self, state_dir: Path, listen: Sequence[str]) -> Router:
        """Start the daemon(s) unless running; bind the addresses they lack; a client."""
        workers, grace = self.settings.workers, self.settings.grace
        if workers > 1:
            await ensure_pool(state_dir, list(listen), workers, grace=grace)
            return WorkerPoolRouter(state_dir, workers)
        await ensure_router(state_dir, list(listen), grace=grace)
        return BuiltinRouter(state_dir)

    async def restart(self, state_dir: Path) -> list[int]:
        """Every running worker in turn, each as hitless as a lone router."""
        return [int(info["pid"]) for info in await restart_pool(state_dir)]

    async def stop(self, state_dir: Path) -> list[int]:
        """Every worker (a lone router as before)."""
        return await stop_pool(state_dir)

    async def describe(self, state_dir: Path) -> list[dict[str, Any]]:
        """Each worker's `ping` (pid, version, uptime, listen); empty when none runs."""
        count = running_workers(state_dir)
        router = WorkerPoolRouter(state_dir, count) if count > 1 else BuiltinRouter(state_dir)
        try:
            info = await router.ping()
        except RouterError:
            return []
        workers: list[dict[str, Any]] = info.get("workers") or [info]
        return workers


def backend(settings: BuiltinRouterConfig) -> BuiltinBackend:
    """The registry's entry point (`zerodown.routers.registry`)."""
    return BuiltinBackend(settings)
