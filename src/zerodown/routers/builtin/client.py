"""The control plane's side of the built-in router: `BuiltinRouter` and the process helpers.

`BuiltinRouter` implements the `Router` seam by talking to the router daemon over its control
socket (one short connection per call, so calls never wait behind each other). The helpers start,
stop and restart the daemon as a detached process that outlives whoever started it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from zerodown.errors import RouterError, RouterUnavailable
from zerodown.routers.base import (
    DrainResult,
    RouteSpec,
    RouteStatus,
    TargetSpec,
    canonical_address,
)
from zerodown.routers.builtin.control import (
    MAX_LINE_BYTES,
    drain_result_from_dict,
    encode_message,
    route_status_from_dict,
)
from zerodown.routers.builtin.handoff import parse_listen
from zerodown.routers.builtin.state import RouterPaths, process_start_time, read_pid_file

DEFAULT_TIMEOUT = 30.0  # one ordinary request
RETRY_FOR = 15.0  # how long to retry while a restart moves the control socket
START_TIMEOUT = 20.0
DRAIN_EXTRA = 30.0  # a drain answers after its own timeout; allow this much on top


class BuiltinRouter:
    """The `Router` seam over the built-in router's control socket."""

    name = "builtin"

    def __init__(self, state_dir: Path, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.paths = RouterPaths.under(state_dir)
        self.timeout = timeout
        self._ids = itertools.count(1)

    async def request(
        self, op: str, args: dict[str, Any] | None = None, *, timeout: float | None = None
    ) -> Any:
        """Send one op and return its result; retries briefly while a restart is under way."""
        deadline = time.monotonic() + RETRY_FOR
        while True:
            answer = await self._exchange(op, args or {}, timeout or self.timeout)
            if answer.get("ok"):
                return answer.get("result")
            if answer.get("retry") and time.monotonic() < deadline:
                await asyncio.sleep(0.05)  # the successor takes the socket within milliseconds
                continue
            raise RouterError(str(answer.get("error") or f"the router refused {op}"))

    async def _exchange(self, op: str, args: dict[str, Any], timeout: float) -> dict[str, Any]:
        path = self.paths.control
        request_id = next(self._ids)
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_unix_connection(str(path), limit=MAX_LINE_BYTES), timeout
            )
        except (FileNotFoundError, ConnectionRefusedError, TimeoutError) as exc:
            raise self._unavailable() from exc
        try:
            writer.write(encode_message({"id": request_id, "op": op, "args": args}))
            await writer.drain()
            line = await asyncio.wait_for(reader.readline(), timeout)
        except TimeoutError as exc:
            raise RouterError(f"the router did not answer {op} within {timeout:.0f} s") from exc
        except (ConnectionError, BrokenPipeError) as exc:
            raise self._unavailable() from exc
        finally:
            writer.close()
        if not line:
            raise RouterUnavailable(f"the router on {path} closed the connection during {op}")
        try:
            answer = json.loads(line)
        except ValueError as exc:
            raise RouterError(f"the router answered {op} with something that is not JSON") from exc
        if not isinstance(answer, dict) or answer.get("id") != request_id:
            raise RouterError(f"the router's answer to {op} does not match the request")
        return answer

    def _unavailable(self) -> RouterUnavailable:
        return RouterUnavailable(
            f"no router answers on {self.paths.control}: start it with `zerodown router start`"
        )

    async def ping(self) -> dict[str, Any]:
        """Version, pid, uptime and listen addresses of the running router."""
        result: dict[str, Any] = await self.request("ping", timeout=5.0)
        return result

    async def listen(self, addresses: list[str]) -> dict[str, Any]:
        """Make the running router listen on `addresses` too (those it lacks are bound now,
        without a restart); returns its `listen` and the addresses it `added`."""
        result: dict[str, Any] = await self.request("listen", {"addresses": list(addresses)})
        return result

    async def events(self, since: int = 0, limit: int = 500) -> list[dict[str, Any]]:
        """The router's recent events after sequence number `since`."""
        result: list[dict[str, Any]] = await self.request(
            "events", {"since": since, "limit": limit}
        )
        return result

    async def metrics(self, since: float | None = None) -> dict[str, Any]:
        """The router's 10 s datapoints (per target), health per route and running totals,
        from unix time `since` on (see `zerodown.metrics.series` for the shape)."""
        result: dict[str, Any] = await self.request("metrics", {"since": since})
        return result

    async def apply_route(self, route: RouteSpec) -> None:
        """Create or update a route; its targets are kept."""
        await self.request("apply_route", {"route": route.to_dict()})

    async def remove_route(self, service: str) -> None:
        """Delete a route and forget its targets (drain them first)."""
        await self.request("remove_route", {"service": service})

    async def add_target(self, target: TargetSpec, *, healthy: bool = False) -> None:
        """Add or update a target; `healthy=True` sends it traffic at once."""
        await self.request("add_target", {"target": target.to_dict(), "healthy": healthy})

    async def set_pool_weights(self, service: str, weights: Mapping[str, int]) -> None:
        """Give pools their shares of the route's live traffic in one table change."""
        await self.request("set_pool_weights", {"service": service, "weights": dict(weights)})

    async def drain_target(
        self, service: str, target_id: str, *, timeout: float | None = None
    ) -> DrainResult:
        """Drain and remove a target; answers when its in-flight requests and streams are done."""
        args = {"service": service, "target_id": target_id, "timeout": timeout}
        wait = (timeout if timeout is not None else 3600.0) + DRAIN_EXTRA
        return drain_result_from_dict(await self.request("drain_target", args, timeout=wait))

    async def status(self, service: str | None = None) -> list[RouteStatus]:
        """Routes and targets as the router sees them now."""
        result = await self.request("status", {"service": service})
        return [route_status_from_dict(item) for item in result]


# -- the daemon process ------------------------------------------------------------------------


def router_command(
    state_dir: Path,
    listen: list[str],
    *,
    takeover: bool = False,
    grace: float | None = None,
    reuse_port: bool = False,
) -> list[str]:
    """The command line that runs a router daemon with this interpreter."""
    command = [
        sys.executable,
        "-m",
        "zerodown.routers.builtin.daemon",
        "--state-dir",
        str(state_dir),
    ]
    for address in listen:
        command += ["--listen", address]
    if takeover:
        command.append("--takeover")
    if grace is not None:
        command += ["--grace", str(grace)]
    if reuse_port:
        command.append("--reuse-port")
    return command


def _log_tail(path: Path, offset: int, limit: int = 2000) -> str:
    try:
        with path.open("rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return text[-limit:].strip() or "(the log is empty)"


def spawn_router(
    state_dir: Path,
    listen: list[str],
    *,
    takeover: bool = False,
    grace: float | None = None,
    reuse_port: bool = False,
) -> subprocess.Popen[bytes]:
    """Launch a detached router daemon (its own session, output to router.log); do not wait."""
    paths = RouterPaths.under(state_dir)
    paths.create()
    with paths.log.open("ab") as log_file:
        return subprocess.Popen(
            router_command(
                state_dir, listen, takeover=takeover, grace=grace, reuse_port=reuse_port
            ),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # not in our process group: our Ctrl-C is not its SIGINT
            close_fds=True,
        )


async def start_router_process(
    state_dir: Path,
    listen: list[str],
    *,
    takeover: bool = False,
    grace: float | None = None,
    timeout: float = START_TIMEOUT,
    reuse_port: bool = False,
) -> dict[str, Any]:
    """Start a detached router daemon and return its `ping` once it answers.

    On failure the daemon is stopped and RouterError carries the tail of router.log.
    """
    paths = RouterPaths.under(state_dir)
    paths.create()
    offset = paths.log.stat().st_size if paths.log.exists() else 0
    process = spawn_router(state_dir, listen, takeover=takeover, grace=grace, reuse_port=reuse_port)
    router = BuiltinRouter(state_dir)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RouterError(
                f"the router exited with code {process.returncode} during start; "
                f"{paths.log} says: {_log_tail(paths.log, offset)}"
            )
        try:
            info = await router.ping()
        except RouterError:
            info = {}
        if info.get("pid") == process.pid:
            return info
        await asyncio.sleep(0.05)  # no event to await across processes: poll with a deadline
    process.kill()
    process.wait(timeout=5)
    raise RouterError(
        f"the router did not answer within {timeout:.0f} s; {paths.log} says: "
        f"{_log_tail(paths.log, offset)}"
    )


def missing_addresses(listening: list[str], wanted: list[str]) -> list[str]:
    """The addresses of `wanted` a router listening on `listening` lacks (a port 0 is never
    missing: it asks for any free port, and the router has one)."""
    have = {canonical_address(a) for a in listening}
    return [
        a
        for a in dict.fromkeys(wanted)
        if canonical_address(a) not in have and parse_listen(a)[1] != 0
    ]


async def ensure_router(
    state_dir: Path, listen: list[str], *, grace: float | None = None
) -> dict[str, Any]:
    """The running router's `ping`, starting one first if none answers; a running router that
    lacks some of `listen` starts listening on them (no restart: nothing is refused)."""
    router = BuiltinRouter(state_dir)
    try:
        info = await router.ping()
    except RouterUnavailable:
        return await start_router_process(state_dir, listen, grace=grace)
    missing = missing_addresses(list(info.get("listen", [])), listen)
    if missing:
        info = {**info, "listen": (await router.listen(missing))["listen"]}
    return info


async def restart_router(state_dir: Path, *, timeout: float = START_TIMEOUT) -> dict[str, Any]:
    """Replace the running router with a new process without refusing or cutting a connection.

    Returns the new router's `ping`. If the new one fails, the old one keeps serving.
    """
    try:
        old = await BuiltinRouter(state_dir).ping()
    except RouterUnavailable as exc:
        raise RouterUnavailable(f"{exc}; there is no running router to restart") from exc
    try:
        return await start_router_process(state_dir, [], takeover=True, timeout=timeout)
    except RouterError as exc:
        raise RouterError(
            f"the new router failed to take over and the old one (pid {old['pid']}) "
            f"keeps serving: {exc}"
        ) from exc


async def wait_for_exit(pid: int, timeout: float) -> bool:
    """Wait until process `pid` is gone (or a zombie); True if it went within `timeout`."""
    started = process_start_time(pid)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = process_start_time(pid)
        if now is None or now != started:
            return True
        await asyncio.sleep(0.05)  # another session's process: nothing to await but /proc
    return process_start_time(pid) is None


async def stop_router(state_dir: Path, *, timeout: float = 45.0) -> int | None:
    """SIGTERM the running router and wait for it to exit (SIGKILL after `timeout`).

    Returns the pid that was stopped, or None when no router was running.
    """
    paths = RouterPaths.under(state_dir)
    try:
        pid: int | None = int((await BuiltinRouter(state_dir).ping())["pid"])
    except RouterError:
        pid = read_pid_file(paths.pid)
    if pid is None:
        return None
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return pid
    if not await wait_for_exit(pid, timeout):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return pid
        if not await wait_for_exit(pid, 5.0):
            raise RouterError(f"router pid {pid} survived SIGKILL")
    return pid
