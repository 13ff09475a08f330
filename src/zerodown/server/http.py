"""Serving the API + dashboard with uvicorn inside `zerodown serve`'s own event loop."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Generator

import uvicorn

from zerodown.config.server import ServerConfig
from zerodown.control_plane import ControlPlane
from zerodown.errors import ConfigError
from zerodown.server.actions import Running
from zerodown.server.api import create_app
from zerodown.server.api_state import ApiState

STOP_GRACE = 3.0  # open SSE streams get this long to end before uvicorn cancels them


class _EmbeddedServer(uvicorn.Server):
    """uvicorn without its own signal handlers: `zerodown serve` owns Ctrl-C and SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class HttpServer:
    """The API + dashboard on `settings.listen`, as a task of the running loop."""

    def __init__(
        self, plane: ControlPlane, settings: ServerConfig, *, running: Running | None = None
    ) -> None:
        self.settings = settings
        self.app = create_app(plane, settings=settings, running=running)
        self._server: _EmbeddedServer | None = None
        self._task: asyncio.Task[None] | None = None
        self.port = settings.port

    @property
    def url(self) -> str:
        """Where the dashboard is."""
        host = self.settings.host
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{self.port}/"

    async def start(self) -> None:
        """Bind (a busy port is a ConfigError naming `server.listen`) and start serving."""
        family = socket.AF_INET6 if ":" in self.settings.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.settings.host, self.settings.port))
        except OSError as exc:
            sock.close()
            raise ConfigError(
                f"cannot listen on {self.settings.listen}: {exc.strerror}; choose another "
                "host:port",
                field="server.listen",
            ) from exc
        sock.listen(128)
        sock.setblocking(False)
        self.port = int(sock.getsockname()[1])
        config = uvicorn.Config(
            self.app,
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=int(STOP_GRACE),
            ws="none",
        )
        self._server = _EmbeddedServer(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="http api")

    async def stop(self) -> None:
        """End the SSE streams, then stop uvicorn (bounded)."""
        if self._server is None or self._task is None:
            return
        state: ApiState = self.app.state.api
        state.stopping.set()
        self._server.should_exit = True
        try:
            async with asyncio.timeout(STOP_GRACE + 5):
                await self._task
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
