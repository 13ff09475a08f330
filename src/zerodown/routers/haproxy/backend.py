"""`HaproxyBackend`: the `RouterBackend` of HAProxy, and `backend(settings)` for the registry.

open() reuses a running HAProxy of the state dir (its pid file and master CLI answer) and adds
listen addresses it lacks by a hitless reload; otherwise it writes haproxy.cfg from routes.json
and starts one. Either way the returned router knows every route and target zerodown set before,
so a control plane that forgot everything sees HAProxy's servers with their ids and revisions.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from zerodown.config.router import HaproxyRouterConfig
from zerodown.errors import RouterError
from zerodown.routers.base import Router, RouterBackend, canonical_address
from zerodown.routers.haproxy import process
from zerodown.routers.haproxy.router import HaproxyRouter
from zerodown.routers.haproxy.state import HaproxyPaths, load_state

STOP_EXTRA = 5.0  # seconds beyond hard-stop-after before SIGTERM


def _bindable(address: str) -> str:
    """`address` canonical; a port 0 becomes a free port now (HAProxy's reloads must bind the
    same port again, so it cannot stay "any")."""
    canonical = canonical_address(address)
    host, _, port = canonical.rpartition(":")
    if port != "0":
        return canonical
    family = socket.AF_INET6 if host.startswith("[") else socket.AF_INET
    with socket.socket(family) as sock:
        sock.bind((host.strip("[]"), 0))
        return f"{host}:{sock.getsockname()[1]}"


class HaproxyBackend:
    """HAProxy as zerodown's router: started once, reloaded hitlessly, stopped gracefully."""

    name = "haproxy"

    def __init__(self, settings: HaproxyRouterConfig) -> None:
        self.settings = settings

    def router(self, state_dir: Path) -> HaproxyRouter:
        """A client of the HAProxy of `state_dir` (whether or not it runs)."""
        paths = HaproxyPaths.under(state_dir)
        return HaproxyRouter(self.settings, paths, load_state(paths))

    async def open(self, state_dir: Path, listen: Sequence[str]) -> Router:
        """Make sure HAProxy runs and listens on every address of `listen`."""
        router = self.router(state_dir)
        async with router.changing() as state:
            have = set(state.listen)
            missing: list[str] = []
            for address in dict.fromkeys(canonical_address(a) for a in listen):
                if address.endswith(":0"):  # any port: one it already has will do
                    if not have and not missing:
                        missing.append(_bindable(address))
                elif address not in have:
                    missing.append(address)
            state.listen += missing
            if await self._running(router.paths):
                if missing:
                    await router.reload()
                return router
            router.write_config()
            await process.start(self.settings.binary, router.paths)
        return router

    async def _running(self, paths: HaproxyPaths) -> bool:
        if process.master_pid(paths) is None:
            return False
        try:
            return bool(process.current_workers(await process.show_proc(paths)))
        except RouterError:
            return False

    async def restart(self, state_dir: Path) -> list[int]:
        """Hitless reload (`reload` on the master CLI); the new workers' pids."""
        router = self.router(state_dir)
        async with router.changing():
            return await router.reload()

    async def stop(self, state_dir: Path) -> list[int]:
        """SIGUSR1 (workers finish, bounded by hard-stop-after), then SIGTERM; the pids."""
        paths = HaproxyPaths.under(state_dir)
        return await process.stop(paths, grace=self.settings.hard_stop_after + STOP_EXTRA)

    async def describe(self, state_dir: Path) -> list[dict[str, Any]]:
        """The master and workers from `show proc`; empty when HAProxy does not run."""
        paths = HaproxyPaths.under(state_dir)
        if process.master_pid(paths) is None:
            return []
        try:
            procs = await process.show_proc(paths)
        except RouterError:
            return []
        listen = load_state(paths).listen
        current = {p.pid for p in process.current_workers(procs)}
        return [
            {
                "pid": p.pid,
                "role": p.kind if p.kind == "master" or p.pid in current else "old worker",
                "listen": list(listen),
                "reloads": p.reloads,
                "uptime": p.uptime,
                "version": p.version,
                "config": str(paths.config),
            }
            for p in procs
        ]


def backend(settings: HaproxyRouterConfig) -> RouterBackend:
    """The registry's entry point: `router: {backend: haproxy}`."""
    return HaproxyBackend(settings)
