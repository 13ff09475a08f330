"""`zerodown serve` as a server lifecycle, in uvicorn's shape: `startup()` -> `main_loop()` ->
`shutdown()`.

Startup opens the control plane (router, runtime, history; it recovers what a crash left), the
local socket API and the dashboard. The main loop re-reads zerodown.yml when it changed,
recovers deployments whose CLI died, reaps expired blue fleets and rolls metrics up. The first
SIGINT/SIGTERM ends the loop; shutdown aborts the deployments this process runs (they roll back,
bounded by `STOP_ROLLBACK`) before it closes the store. The router and the instances keep
serving throughout: they never depend on this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from typing import TYPE_CHECKING

from zerodown.errors import ConfigError

if TYPE_CHECKING:
    from rich.console import Console

    from zerodown.config import LoadedConfig
    from zerodown.control_plane import ControlPlane
    from zerodown.domain.events import DeploymentObserver
    from zerodown.server.http import HttpServer
    from zerodown.server.socket_api import ControlPlaneServer

STOP_ROLLBACK = 120.0  # seconds serve waits, when stopped, for its deployments to roll back
TICK = 5.0  # seconds between rounds of the main loop's housekeeping
ROLLUP_EVERY = 30.0  # seconds between metrics rollups (per-minute rows, idempotent)


class Serve:
    """One `zerodown serve` process: the control plane, its socket API and its dashboard."""

    def __init__(
        self, loaded: LoadedConfig, console: Console, progress: DeploymentObserver
    ) -> None:
        self.loaded = loaded
        self.console = console  # serve's own lines (masked by the caller's console)
        self.progress = progress  # prints the deployments this process recovers or runs
        self.should_exit = asyncio.Event()
        self.plane: ControlPlane | None = None
        self.sockets: ControlPlaneServer | None = None
        self.dashboard: HttpServer | None = None

    async def run(self) -> None:
        """Start, serve until a signal, stop."""
        try:
            await self.startup()
            await self.main_loop()
        finally:
            await self.shutdown()

    async def startup(self) -> None:
        """Open the control plane and listen on the socket and (if it can) the dashboard."""
        from zerodown.config.routes import environment_listen
        from zerodown.control_plane import ControlPlane
        from zerodown.server.http import HttpServer
        from zerodown.server.socket_api import ControlPlaneServer

        # Before the socket answers: a SIGTERM the moment serve can be found stops it cleanly.
        self._install_signal_handlers()
        self.plane = await ControlPlane.open(self.loaded, observers=[self.progress])
        self.sockets = ControlPlaneServer(self.plane)
        await self.sockets.start()
        http = HttpServer(self.plane, self.loaded.config.server, running=self.sockets.running)
        try:
            await http.start()
            self.dashboard = http
        except ConfigError as exc:  # the control plane matters more than its dashboard
            self.console.print(f"[yellow]dashboard and API not started: {exc}[/yellow]")
        config = self.loaded.config
        listen = "; ".join(
            f"{env} on " + ", ".join(f"http://{a}/" for a in environment_listen(config, env))
            for env in config.environments
        )
        self.console.print(
            f"zerodown serve: router: {listen}; control plane on {self.sockets.path} "
            "(Ctrl-C stops the control plane; the router and instances keep serving)",
            soft_wrap=True,
        )
        if self.dashboard is not None:
            self.console.print(f"dashboard and API on {self.dashboard.url}", soft_wrap=True)

    async def main_loop(self) -> None:
        """Housekeeping every `TICK` seconds until a signal asks to stop."""
        assert self.plane is not None  # set by startup()
        last_rollup = 0.0
        while not self.should_exit.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(TICK):
                    await self.should_exit.wait()
            # zerodown.yml as it is now (an invalid one: each request says why it is refused)
            with contextlib.suppress(ConfigError):
                await self.plane.refresh_config()
            # a CLI deploy that was killed meanwhile is finished or rolled back here
            await self.plane.recover([self.progress])
            await self.plane.reap_expired_fleets()
            if time.monotonic() - last_rollup >= ROLLUP_EVERY:
                last_rollup = time.monotonic()
                try:
                    await self.plane.collect_metrics()
                except Exception as exc:  # history matters less than serving: go on
                    self.console.print(f"[yellow]metrics rollup skipped: {exc}[/yellow]")

    async def shutdown(self) -> None:
        """Abort this process' deployments (bounded), then stop listening and close the store.
        Deployments roll back while the store and the router client are still open."""
        if self.sockets is not None:
            aborted = await self.sockets.abort_running(
                "aborted: zerodown serve stopped", timeout=STOP_ROLLBACK
            )
            if aborted:
                self.console.print(
                    f"aborted {aborted} running deployment(s): the fleet rolled back"
                )
        if self.dashboard is not None:
            await self.dashboard.stop()
        if self.sockets is not None:
            await self.sockets.close()
        if self.plane is not None:
            await self.plane.close()
        self.console.print("zerodown serve stopped; the router and instances keep serving")

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._handle_exit, sig)
        # SIGUSR1's default action would end serve without a word; it aborts CLI deploys only.
        loop.add_signal_handler(
            signal.SIGUSR1,
            lambda: self.console.print("[yellow]SIGUSR1 ignored: use `zerodown abort`[/yellow]"),
        )

    def _handle_exit(self, sig: signal.Signals) -> None:
        if self.should_exit.is_set():  # a second Ctrl-C: the rollbacks are bounded already
            self.console.print(
                f"[yellow]{sig.name}: stopping already; running deployments roll back "
                f"(at most {STOP_ROLLBACK:.0f} s), then serve exits[/yellow]"
            )
            return
        self.should_exit.set()
