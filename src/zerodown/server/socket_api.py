"""The control plane's local API: newline-delimited JSON over `<state_dir>/control-plane.sock`.

Authentication is the socket file's mode (0600), like the router's control socket. A `deploy` or
`rollback` request streams one `{"event": ...}` line per deployment event and ends with
`{"ok": true, "record": ...}`; `abort` fails the running deployment of a service+environment, which
rolls the fleet back. The dashboard's HTTP API comes on top of the same control plane.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zerodown.domain.events import DeploymentEvent, DeploymentState, EventKind
from zerodown.domain.records import DeploymentRecord
from zerodown.errors import ConfigError, ZerodownError

if TYPE_CHECKING:  # the CLI's client side (`call`) must not load the engine
    from zerodown.control_plane import ControlPlane

SOCKET_NAME = "control-plane.sock"
MAX_LINE = 1024 * 1024
_ABORT_POLL = 0.05  # seconds between looks at the running deployments while `serve` stops


def socket_path(state_dir: Path) -> Path:
    """Where `zerodown serve` listens for the CLI."""
    return state_dir / SOCKET_NAME


def event_to_dict(event: DeploymentEvent) -> dict[str, Any]:
    return {
        "deployment_id": event.deployment_id,
        "kind": event.kind.value,
        "message": event.message,
        "data": event.data,
        "at": event.at,
    }


def event_from_dict(data: dict[str, Any]) -> DeploymentEvent:
    return DeploymentEvent(
        deployment_id=data["deployment_id"],
        kind=EventKind(data["kind"]),
        message=data["message"],
        data=dict(data.get("data") or {}),
        at=float(data["at"]),
    )


def record_to_dict(record: DeploymentRecord) -> dict[str, Any]:
    fields = dict(record.__dict__)
    fields["state"] = record.state.value
    return fields


def record_from_dict(data: dict[str, Any]) -> DeploymentRecord:
    return DeploymentRecord(**{**data, "state": DeploymentState(data["state"])})


class _StreamObserver:
    """Forwards one deployment's events to the client that asked for it."""

    def __init__(self, send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        self.send = send
        self.deployment_id: str | None = None

    async def on_event(self, event: DeploymentEvent) -> None:
        if self.deployment_id is None:
            self.deployment_id = event.deployment_id
        if event.deployment_id == self.deployment_id:
            with contextlib.suppress(ConnectionError):  # a client that left does not stop it
                await self.send({"event": event_to_dict(event)})


class _Registration:
    """Enters a deployer in `running` at its deployment's first event. The engine records a
    deployment only once it holds the lock, so a request that is refused (the lock held, bad
    input) never touches the entry of the deployment that runs."""

    def __init__(self, running: dict[tuple[str, str], Any], key: tuple[str, str]) -> None:
        self.running = running
        self.key = key
        self.deployer: Any = None  # set right after the deployer is made
        self.entered = False

    async def on_event(self, event: DeploymentEvent) -> None:
        if not self.entered:
            self.entered = True
            self.running[self.key] = self.deployer


class ControlPlaneServer:
    """Serves the CLI on a unix socket while `zerodown serve` runs."""

    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane
        self.path = socket_path(plane.loaded.state_dir)
        self._server: asyncio.AbstractServer | None = None
        self._running: dict[tuple[str, str], Any] = {}  # (service, env) -> Deployer
        self._requests: set[Any] = set()  # deployers of requests on this socket, until they end

    @property
    def running(self) -> dict[tuple[str, str], Any]:
        """Deployments this process runs, by (service, environment); the HTTP API shares it."""
        return self._running

    async def start(self) -> None:
        """Listen (replacing a stale socket file)."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        old_umask = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(
                self._serve, path=str(self.path), limit=MAX_LINE
            )
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o600)

    async def abort_running(self, reason: str, timeout: float) -> int:
        """Abort every deployment running in this process (through this socket or the HTTP API,
        which share `running`) and wait up to `timeout` s for their rollbacks; how many there
        were. `serve` stops this way, so none is left half-done when its event loop ends."""
        aborted: set[int] = set()
        deadline = time.monotonic() + timeout
        # Two servers add and remove entries of `running`: there is no one event to await.
        while (self._running or self._requests) and time.monotonic() < deadline:
            # Asked again at each look: the HTTP API may have started one since the last look.
            # A deployer aborted before its deployment got the lock gives up waiting for it.
            for deployer in {*self._running.values(), *self._requests}:
                deployer.abort(reason=reason)
                aborted.add(id(deployer))
            await asyncio.sleep(_ABORT_POLL)
        return len(aborted)

    async def close(self) -> None:
        """Stop listening; running deployments finish (or roll back) on their own."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def send(message: dict[str, Any]) -> None:
            writer.write(json.dumps(message).encode() + b"\n")
            await writer.drain()

        try:
            line = await reader.readline()
            request = json.loads(line)
            await self._handle(request, send)
        except ZerodownError as exc:
            with contextlib.suppress(ConnectionError):
                await send({"ok": False, "error": str(exc), "exit_code": exc.exit_code})
        except (ValueError, KeyError, TypeError) as exc:
            with contextlib.suppress(ConnectionError):
                await send({"ok": False, "error": f"bad request: {exc}", "exit_code": 2})
        except ConnectionError:
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _handle(
        self, request: dict[str, Any], send: Callable[[dict[str, Any]], Awaitable[None]]
    ) -> None:
        from zerodown.control_plane import check_target
        from zerodown.engine.deployer import DeployRequest
        from zerodown.server.views import status_views

        op = request["op"]
        if op == "ping":
            await send({"ok": True, "pid": os.getpid()})
            return
        if op == "status":  # `zerodown status` answered without loading the engine in the CLI
            await self.plane.refresh_config()
            await send({"ok": True, "status": await status_views(self.plane)})
            return
        service, environment = str(request["service"]), str(request["environment"])
        # zerodown.yml as it is now; an invalid file refuses the request with its error
        check_target(await self.plane.refresh_config(), service, environment)
        if op == "abort":
            deployer = self._running.get((service, environment))
            if deployer is None:
                raise ConfigError(f"no deployment of {service}/{environment} is running")
            deployer.abort(reason=str(request.get("reason") or "aborted by `zerodown abort`"))
            await send({"ok": True})
            return
        if op not in ("deploy", "rollback"):
            raise ConfigError(f"unknown op {op!r}: use ping, status, deploy, rollback or abort")
        key = (service, environment)
        observer = _StreamObserver(send)
        registration = _Registration(self._running, key)
        deployer = registration.deployer = self.plane.deployer([observer, registration])
        self._requests.add(deployer)
        try:
            actor = str(request.get("actor") or "unknown")
            if op == "rollback":
                to = request.get("to")
                record = await deployer.rollback(service, environment, to=to, actor=actor)
            else:
                deploy = DeployRequest(service, environment, str(request["revision"]), actor)
                record = await deployer.deploy(deploy, wait_for_lock=request.get("wait_for_lock"))
        finally:
            self._requests.discard(deployer)
            # A request that was refused (the lock held, bad input) never registered: the
            # running deployment of this service+environment keeps its entry.
            if self._running.get(key) is deployer:
                del self._running[key]
        await send({"ok": True, "record": record_to_dict(record)})


async def call(state_dir: Path, request: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
    """Send one request to a running `zerodown serve` and yield its answer lines."""
    reader, writer = await asyncio.open_unix_connection(str(socket_path(state_dir)), limit=MAX_LINE)
    try:
        writer.write(json.dumps(request).encode() + b"\n")
        await writer.drain()
        while line := await reader.readline():
            yield json.loads(line)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def serve_is_running(state_dir: Path) -> bool:
    """True when a `zerodown serve` answers on this state dir's socket."""
    if not socket_path(state_dir).exists():
        return False
    try:
        async with asyncio.timeout(2):
            async for answer in call(state_dir, {"op": "ping"}):
                return bool(answer.get("ok"))
    except (OSError, TimeoutError, ValueError):
        return False
    return False
