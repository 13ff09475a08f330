"""The built-in router as a long-lived process: `startup() -> main_loop() -> shutdown()`.

It owns a `RoutingTable` and a `ProxyServer`, keeps the table in `state.json` so a restarted router
serves the same targets at once, runs the active health checks of every route that has them,
answers the control socket (the ops are `ops.RouterOps`), and hands its listening sockets to a
successor for a hitless restart.
The first SIGTERM drains client connections within `grace`; a second one exits at once.

Run it as `python -m zerodown.routers.builtin.daemon --state-dir DIR --listen 127.0.0.1:8080`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, get_args

from zerodown.errors import RouterError, ZerodownError
from zerodown.routers.base import canonical_address
from zerodown.routers.builtin.control import (
    ControlChannel,
    ControlServer,
    FdReply,
)
from zerodown.routers.builtin.handoff import (
    Handoff,
    bind_listeners,
    request_handoff,
    socket_address,
)
from zerodown.routers.builtin.health_watch import HealthWatch
from zerodown.routers.builtin.ops import RouterOps
from zerodown.routers.builtin.proxy import ProxyServer, ProxySettings
from zerodown.routers.builtin.recorder import MetricsRecorder
from zerodown.routers.builtin.state import (
    EventLog,
    RouterPaths,
    StateFile,
    read_pid_file,
    write_pid_file,
)
from zerodown.routers.builtin.table import RoutingTable

log = logging.getLogger("zerodown.router")

DEFAULT_GRACE = 30.0
LoopKind = Literal["auto", "asyncio", "uvloop"]


class RouterDaemon:
    """The router process: proxy, table, persisted state, health checks and control socket."""

    def __init__(
        self,
        state_dir: Path,
        listen: list[str],
        settings: ProxySettings | None = None,
        *,
        grace: float | None = None,
        takeover: bool = False,
        reuse_port: bool = False,
    ) -> None:
        self.paths = RouterPaths.under(state_dir)
        self.listen = list(listen)
        self.settings = settings or ProxySettings()
        self._settings_given = settings is not None
        self._grace_given = grace is not None
        self.grace = DEFAULT_GRACE if grace is None else grace
        self.takeover = takeover
        self.reuse_port = reuse_port  # a worker of a pool: its siblings bind the same addresses
        self.table = RoutingTable(on_change=self._on_table_change)
        self.metrics = MetricsRecorder(self.table)  # the proxy's observer; read by `metrics`
        self.events = EventLog(self.paths.events)
        self.state = StateFile(self.paths.state, self.table.snapshot)
        self.watch = HealthWatch(self.table, self.events)
        self.ops = RouterOps(
            self, table=self.table, events=self.events, metrics=self.metrics, state=self.state
        )
        self.control = ControlServer(self.ops)
        self.proxy: ProxyServer | None = None
        self._listeners: list[socket.socket] = []  # dups kept for handoff (the proxy owns its own)
        self._stop = asyncio.Event()
        self._force = asyncio.Event()
        self._handoff_to: ControlChannel | None = None
        self._retiring = False
        self._tasks: set[asyncio.Task[None]] = set()

    # -- lifecycle ------------------------------------------------------------------------------

    async def run(self) -> None:
        """startup(), then main_loop() until a signal or `retire`, then shutdown()."""
        await self.startup()
        try:
            await self.main_loop()
        finally:
            await self.shutdown()

    async def startup(self) -> None:
        """Load the table, get listening sockets, then serve traffic, health checks and control."""
        self.paths.create()
        # Signals are ours before anything can find this router: a SIGTERM that arrives as soon
        # as the control socket answers (`router stop` right after `router start`) must drain
        # and clean up, not kill the process with its socket and pid file left behind.
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal)
        handoff: Handoff | None = None
        if self.takeover:
            handoff = await asyncio.to_thread(request_handoff, self.paths.control)
            sockets = handoff.sockets
            self.table.restore(handoff.result["table"])
            self.listen = [socket_address(s) for s in sockets]
            if not self._grace_given:
                self.grace = float(handoff.result.get("grace", self.grace))
            if not self._settings_given and handoff.result.get("settings"):
                # A restart keeps the running router's settings unless told otherwise.
                with contextlib.suppress(TypeError, ValueError):
                    self.settings = ProxySettings(**handoff.result["settings"])
        else:
            await self._refuse_if_running()
            saved = StateFile.load(self.paths.state)
            if saved is not None:
                self.table.restore(saved["table"])
            sockets = bind_listeners(self.listen, reuse_port=self.reuse_port)
            self.listen = [socket_address(s) for s in sockets]
        try:
            self._listeners = [s.dup() for s in sockets]
            self.proxy = ProxyServer(self.table, self.settings, observer=self.metrics)
            await self.proxy.start(sockets)
            self.watch.reconcile()
            await self.control.start(self.paths.control, replace=self.takeover)
        except BaseException:
            if handoff is not None:
                handoff.abandon()  # the old router sees the connection close and carries on
            await self._stop_serving(grace=0)
            raise
        write_pid_file(self.paths.pid, os.getpid())
        self.state.enabled = True
        self.state.mark_dirty()
        await self.state.flush()
        if handoff is not None:
            previous = handoff.result.get("pid")
            try:
                await handoff.retire()
            except (RouterError, OSError, TimeoutError, ValueError) as exc:
                # We serve and own the control socket now; the old router sees the connection
                # close, finds the socket taken and retires by itself.
                log.warning("the old router did not confirm retire (%s); it will retire alone", exc)
            finally:
                handoff.connection.close()
            self.events.record("restart", pid=os.getpid(), previous_pid=previous)
            log.info("took over from router pid %s on %s", previous, ", ".join(self.listen))
        else:
            self.events.record("start", pid=os.getpid(), listen=self.listen)
            log.info("router pid %d listening on %s", os.getpid(), ", ".join(self.listen))

    async def main_loop(self) -> None:
        """Serve until SIGTERM/SIGINT or `retire`."""
        await self._stop.wait()

    async def shutdown(self) -> None:
        """Drain client connections within `grace` (a second signal cuts it short), then exit."""
        log.info(
            "%s: draining connections (grace %.0f s)",
            "retiring" if self._retiring else "stopping",
            self.grace,
        )
        await self._stop_serving(grace=self.grace)
        if self.state.enabled:
            with contextlib.suppress(RouterError):
                await self.state.flush()
        self.events.record("retired" if self._retiring else "stop", pid=os.getpid())
        if read_pid_file(self.paths.pid) == os.getpid():
            with contextlib.suppress(FileNotFoundError):
                self.paths.pid.unlink()
        log.info("router pid %d exits", os.getpid())

    async def _stop_serving(self, grace: float) -> None:
        # The control socket stops accepting at once but answers what it has (a drain in
        # progress ends with the proxy's drain), so both wind down together. A successor owns
        # the socket file after a handoff: only our own file is unlinked.
        parts = [asyncio.ensure_future(self.control.close(unlink=True, grace=grace))]
        if self.proxy is not None:
            parts.append(asyncio.ensure_future(self.proxy.shutdown(grace)))
        together = asyncio.gather(*parts, return_exceptions=True)
        force = asyncio.ensure_future(self._force.wait())
        waiters: set[asyncio.Future[Any]] = {together, force}
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        force.cancel()
        if not all(p.done() for p in parts):
            log.warning("second signal: closing the remaining connections now")
            for part in parts:
                part.cancel()
            if self.proxy is not None:
                with contextlib.suppress(Exception):
                    await self.proxy.shutdown(0)
        for part in parts:
            if part.done() and not part.cancelled() and part.exception() is not None:
                log.error("shutdown step failed: %r", part.exception())
        await self.watch.stop()
        for sock in self._listeners:
            sock.close()
        self._listeners = []

    def _on_signal(self) -> None:
        if self._stop.is_set():
            self._force.set()
        self._stop.set()

    def _on_table_change(self) -> None:
        self.state.mark_dirty()
        self.metrics.on_table_change()  # health counts and zero-healthy time follow the table
        if self.proxy is not None:  # during restore in startup the loop is not serving yet
            self.watch.schedule()

    async def _refuse_if_running(self) -> None:
        try:
            _, writer = await asyncio.open_unix_connection(str(self.paths.control))
        except (FileNotFoundError, ConnectionRefusedError):
            with contextlib.suppress(FileNotFoundError):
                self.paths.control.unlink()  # left behind by a router that was killed
            return
        writer.close()
        pid = read_pid_file(self.paths.pid)
        raise RouterError(
            f"a router (pid {pid}) already answers on {self.paths.control}: "
            "use `zerodown router restart` to replace it"
        )

    # -- what the control ops ask of the process (RouterProcess) --------------------------------

    @property
    def handing_off(self) -> bool:
        """True while a successor takes over (from `handoff` until it retires or gives up)."""
        return self._handoff_to is not None

    async def add_listeners(self, addresses: list[str]) -> dict[str, Any]:
        """Start listening on the addresses not listened on yet (an environment was added);
        nothing stops, so no request is refused. A successor gets these sockets too."""
        assert self.proxy is not None
        have = {canonical_address(a) for a in self.listen}
        wanted = [a for a in dict.fromkeys(addresses) if canonical_address(a) not in have]
        sockets = bind_listeners(wanted, reuse_port=self.reuse_port)  # all, or none on error
        added = [socket_address(s) for s in sockets]
        # recorded before the first await, so a concurrent `listen` does not bind them twice
        self.listen.extend(added)
        self._listeners.extend(s.dup() for s in sockets)
        for sock in sockets:
            await self.proxy.add_listener(sock)
        if added:
            self.events.record("listen", pid=os.getpid(), added=added, listen=self.listen)
            log.info("now also listening on %s", ", ".join(added))
        return {"listen": self.listen, "added": added}

    async def handoff(self, channel: ControlChannel) -> FdReply:
        """Give the listening sockets and the table to the successor on `channel`; from now on
        it owns state.json."""
        if self._handoff_to is not None or self._retiring:
            raise RouterError("a handoff to another router is already in progress")
        await self.state.flush()
        self.state.enabled = False  # from now on the successor owns state.json
        self._handoff_to = channel
        self.events.record("handoff", pid=os.getpid())
        self._spawn(self._watch_successor(channel))
        result = {
            "pid": os.getpid(),
            "listen": self.listen,
            "table": self.table.snapshot(),
            "settings": _settings_dict(self.settings),
            "grace": self.grace,
        }
        return FdReply(result, [s.fileno() for s in self._listeners])

    def retire(self, channel: ControlChannel) -> dict[str, Any]:
        """Stop serving once the successor that asked for the handoff on `channel` serves."""
        if self._handoff_to is None or channel is not self._handoff_to:
            raise RouterError(
                "retire only follows a handoff on the same connection; stop the router with SIGTERM"
            )
        self._retiring = True
        self._stop.set()
        return {"pid": os.getpid()}

    async def _watch_successor(self, channel: ControlChannel) -> None:
        await channel.closed.wait()
        if self._retiring or self._handoff_to is not channel:
            return
        self._handoff_to = None
        if not self.control.owns_path():
            if await self._successor_answers():
                # The successor serves and owns the control socket but never sent retire.
                log.warning("the successor owns the control socket but never sent retire; retiring")
                self._retiring = True
                self._stop.set()
                return
            # It took the socket and died: take the socket back, we still hold the listeners.
            await self.control.start(self.paths.control, replace=True)
            write_pid_file(self.paths.pid, os.getpid())
        log.warning("the successor router went away before taking over; carrying on")
        self.events.record("handoff_aborted", pid=os.getpid())
        self.state.enabled = True
        self.state.mark_dirty()

    async def _successor_answers(self) -> bool:
        try:
            _, writer = await asyncio.open_unix_connection(str(self.paths.control))
        except OSError:
            return False
        writer.close()
        return True

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _settings_dict(settings: ProxySettings) -> dict[str, Any]:
    if dataclasses.is_dataclass(settings):
        return {
            k: v
            for k, v in dataclasses.asdict(settings).items()
            if isinstance(v, int | float | str | bool | None)
        }
    return {}


def run_daemon(
    state_dir: Path,
    listen: list[str],
    settings: ProxySettings | None = None,
    *,
    grace: float | None = None,
    takeover: bool = False,
    loop: LoopKind = "auto",
    reuse_port: bool = False,
) -> int:
    """Run a router in this process until it stops; return the exit code."""
    daemon = RouterDaemon(
        state_dir, listen, settings, grace=grace, takeover=takeover, reuse_port=reuse_port
    )
    try:
        with asyncio.Runner(loop_factory=_loop_factory(loop)) as runner:
            runner.run(daemon.run())
    except ZerodownError as exc:
        log.error("router failed: %s", exc)
        return exc.exit_code
    return 0


def _loop_factory(kind: LoopKind) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if kind == "asyncio":
        return None
    try:
        import uvloop  # optional speed-up, imported only where it runs
    except ImportError:
        if kind == "uvloop":
            raise RouterError("--loop uvloop: uvloop is not installed") from None
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m zerodown.routers.builtin.daemon`: the entry the process helpers start."""
    parser = argparse.ArgumentParser(prog="zerodown-router", description=__doc__)
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--listen", action="append", default=[], help="host:port (repeatable)")
    parser.add_argument(
        "--grace",
        type=float,
        help=f"drain seconds (default {DEFAULT_GRACE:g}, or the old router's)",
    )
    parser.add_argument("--takeover", action="store_true", help="take over from the running router")
    parser.add_argument(
        "--reuse-port",
        action="store_true",
        help="bind with SO_REUSEPORT (a worker of a pool: its siblings share the addresses)",
    )
    parser.add_argument(
        "--loop",
        choices=get_args(LoopKind),
        default=os.environ.get("ZERODOWN_ROUTER_LOOP", "auto"),
        help="event loop: uvloop when installed (auto), or plain asyncio",
    )
    args = parser.parse_args(argv)
    if not args.listen and not args.takeover:
        parser.error("--listen is required unless --takeover")
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s",
    )
    return run_daemon(
        args.state_dir,
        args.listen,
        grace=args.grace,
        takeover=args.takeover,
        loop=args.loop,
        reuse_port=args.reuse_port,
    )


if __name__ == "__main__":
    sys.exit(main())
