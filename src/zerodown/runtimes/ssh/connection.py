"""SSH connections to hosts, one per host and reused (`SshPool`), through asyncssh.

Every command runs with a timeout, its output can be streamed line by line, and every failure
of asyncssh or the network leaves this module as a `RuntimeBackendError` whose sentence names
the host and what to do. Host keys are always checked against a known_hosts file: an unknown or
changed key refuses the connection, never silently accepts it. Secrets for a remote process go
over the command's stdin (`input=`), never into its command line, which `ps` on the host shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from zerodown.errors import RuntimeBackendError

if TYPE_CHECKING:
    import asyncssh

# OpenSSH's sshd allows 10 sessions per connection by default (MaxSessions): stay below it,
# with one more for a long-lived process (`open_process`, the runtime's agent).
MAX_CHANNELS = 8
_SHOWN_COMMAND = 60  # characters of a command quoted in an error
_KILL_AFTER = 2.0  # after the deadline's SIGTERM, the host's SIGKILL follows this much later
_ROUND_TRIP = 5.0  # how much later than the host's deadline we give up waiting ourselves
_TIMED_OUT = (124, 137)  # timeout(1)'s exit codes: TERM was sent; KILL was needed


@dataclass(frozen=True)
class SshTarget:
    """One host to reach: its address (what instances listen on there), port and login user."""

    address: str
    port: int = 22
    user: str | None = None  # None: the pool's user

    def __post_init__(self) -> None:
        if not self.address or any(c.isspace() for c in self.address):
            raise RuntimeBackendError(f"{self.address!r} is not a host address")
        if not 1 <= self.port <= 65535:
            raise RuntimeBackendError(f"host {self.address}: port {self.port} is not 1-65535")

    @property
    def name(self) -> str:
        """How errors and logs name the host: `address` or `address:port`."""
        return self.address if self.port == 22 else f"{self.address}:{self.port}"


@dataclass(frozen=True)
class SshOptions:
    """How to log in and how long to wait; shared by every host of a pool."""

    user: str
    key: Path | None = None  # a private key file; None: the ssh agent at $SSH_AUTH_SOCK
    known_hosts: Path | None = None  # None: ~/.ssh/known_hosts (checking is never off)
    connect_timeout: float = 10.0
    command_timeout: float = 60.0


@dataclass(frozen=True)
class CommandResult:
    """What one remote command did."""

    exit_status: int
    stdout: str
    stderr: str


def known_hosts_path(options: SshOptions) -> Path:
    """The known_hosts file host keys are checked against."""
    return options.known_hosts or Path.home() / ".ssh" / "known_hosts"


def _shown(command: str) -> str:
    return command if len(command) <= _SHOWN_COMMAND else command[: _SHOWN_COMMAND - 3] + "..."


def translate_error(
    target: SshTarget, options: SshOptions, exc: BaseException
) -> RuntimeBackendError:
    """One sentence naming the host for what asyncssh or the network raised."""
    import asyncssh

    host = target.name
    user = target.user or options.user
    if isinstance(exc, asyncssh.HostKeyNotVerifiable):
        known = known_hosts_path(options)
        scan = f"ssh-keyscan -p {target.port} {target.address}"
        return RuntimeBackendError(
            f"host {host}: its SSH host key is unknown or changed (not as in {known}); check "
            f"the key with the host's owner, then add it with `{scan} >> {known}`"
        )
    if isinstance(exc, asyncssh.PermissionDenied):
        how = f"key {options.key}" if options.key else "the keys of the ssh agent"
        return RuntimeBackendError(
            f"host {host}: user {user!r} was refused with {how}: add its public key to "
            f"~{user}/.ssh/authorized_keys on the host, or set runtime.key"
        )
    if isinstance(exc, asyncssh.DisconnectError):
        return RuntimeBackendError(
            f"host {host}: the SSH connection was closed ({exc.reason or 'no reason given'}); "
            "check that sshd runs there"
        )
    if isinstance(exc, asyncssh.ChannelOpenError):
        return RuntimeBackendError(
            f"host {host}: sshd refused a new session ({exc.reason}); raise MaxSessions in its "
            "sshd_config or run fewer commands at once"
        )
    if isinstance(exc, TimeoutError):
        return RuntimeBackendError(
            f"host {host} did not answer SSH within {options.connect_timeout:g}s: check the "
            "address, the port and the network, or raise runtime.connect_timeout"
        )
    if isinstance(exc, FileNotFoundError) and exc.filename is not None:
        return RuntimeBackendError(
            f"host {host}: {exc.filename} does not exist: write it (e.g. with ssh-keyscan) or "
            "point runtime.known_hosts / runtime.key at the right file"
        )
    if isinstance(exc, OSError):
        return RuntimeBackendError(
            f"host {host} cannot be reached over SSH: {exc.strerror or exc}; check that sshd "
            f"runs there and listens on port {target.port}"
        )
    return RuntimeBackendError(f"host {host}: SSH failed: {exc}")


class SshConnection:
    """One SSH connection to one host; up to `MAX_CHANNELS` commands share it at once."""

    def __init__(
        self, target: SshTarget, options: SshOptions, conn: asyncssh.SSHClientConnection
    ) -> None:
        self.target = target
        self.options = options
        self._conn = conn
        self._channels = asyncio.Semaphore(MAX_CHANNELS)

    @property
    def closed(self) -> bool:
        """Whether the connection is gone (the pool then opens a new one)."""
        return self._conn.is_closed()

    async def run(
        self,
        command: str,
        *,
        input: str | None = None,
        timeout: float | None = None,
        check: bool = True,
    ) -> CommandResult:
        """Run `command` (by the login shell), feeding it `input` on stdin; wait for its end.

        `check`: a non-zero exit raises, quoting the end of its stderr.
        """
        import asyncssh

        limit = self.options.command_timeout if timeout is None else timeout
        late = RuntimeBackendError(
            f"host {self.target.name}: `{_shown(command)}` ran past its {limit:g}s timeout "
            "(runtime.command_timeout)"
        )
        # The host ends the command at the deadline itself (coreutils' timeout): sshd counts a
        # session (10 per connection) until its command exits, and for a root login it ignores
        # signal requests, so closing our end of the channel alone would leak the session.
        wrapped = f"timeout -k {_KILL_AFTER:g} {limit:g} /bin/sh -c {shlex.quote(command)}"
        async with self._channels:
            try:
                async with asyncio.timeout(limit + _KILL_AFTER + _ROUND_TRIP):
                    done = await self._conn.run(wrapped, input=input, check=False)
            except TimeoutError as exc:
                raise late from exc
            except (asyncssh.Error, OSError) as exc:
                raise translate_error(self.target, self.options, exc) from exc
        if done.exit_status in _TIMED_OUT:
            raise late
        result = CommandResult(
            exit_status=done.exit_status if done.exit_status is not None else -1,
            stdout=_text(done.stdout),
            stderr=_text(done.stderr),
        )
        if check and result.exit_status != 0:
            last = result.stderr.strip().splitlines()[-1:] or ["no output on stderr"]
            raise RuntimeBackendError(
                f"host {self.target.name}: `{_shown(command)}` exited with "
                f"{result.exit_status}: {last[0]}"
            )
        return result

    async def stream(
        self, command: str, *, input: str | None = None, timeout: float | None = None
    ) -> AsyncIterator[str]:
        """Yield the command's stdout line by line (no line ends) as it comes.

        `timeout` bounds the whole command (None: until it ends or the caller stops reading).
        A non-zero exit raises after the last line, quoting the end of its stderr.
        """
        import asyncssh

        async with self._channels:
            try:
                process = await self._conn.create_process(command, input=input)
            except (asyncssh.Error, OSError) as exc:
                raise translate_error(self.target, self.options, exc) from exc
            try:
                async with asyncio.timeout(timeout):
                    # Not `async for`: asyncssh's iterator yields a last '' at EOF.
                    while line := _text(await process.stdout.readline()):
                        yield line.rstrip("\n")
                    await process.wait_closed()
            except TimeoutError as exc:
                raise RuntimeBackendError(
                    f"host {self.target.name}: `{_shown(command)}` ran past its {timeout:g}s "
                    "timeout"
                ) from exc
            except (asyncssh.Error, OSError) as exc:
                raise translate_error(self.target, self.options, exc) from exc
            finally:
                process.close()  # the caller stopped early: the remote side sees EOF
            status = process.exit_status
            if status not in (0, None):
                stderr = _text(await process.stderr.read()).strip().splitlines()[-1:]
                raise RuntimeBackendError(
                    f"host {self.target.name}: `{_shown(command)}` exited with {status}: "
                    f"{stderr[0] if stderr else 'no output on stderr'}"
                )

    async def upload(self, local: Path, remote: str) -> None:
        """Copy the file `local` to the path `remote` over SFTP (a temporary name, then rename)."""
        import asyncssh

        partial = f"{remote}.partial"
        async with self._channels:
            try:
                async with asyncio.timeout(self.options.command_timeout):
                    async with self._conn.start_sftp_client() as sftp:
                        await sftp.put(str(local), partial)
                        await sftp.posix_rename(partial, remote)
            except TimeoutError as exc:
                raise RuntimeBackendError(
                    f"host {self.target.name}: uploading {local.name} ran past its "
                    f"{self.options.command_timeout:g}s timeout (runtime.command_timeout)"
                ) from exc
            except asyncssh.SFTPError as exc:
                raise RuntimeBackendError(
                    f"host {self.target.name}: cannot upload {local.name} to {remote}: {exc.reason}"
                ) from exc
            except (asyncssh.Error, OSError) as exc:
                raise translate_error(self.target, self.options, exc) from exc

    async def open_process(self, command: str) -> asyncssh.SSHClientProcess[str]:
        """Start a long-lived `command` (a channel of its own, outside the command limit)."""
        import asyncssh

        try:
            async with asyncio.timeout(self.options.connect_timeout):
                return await self._conn.create_process(command)
        except TimeoutError as exc:
            raise RuntimeBackendError(
                f"host {self.target.name}: `{_shown(command)}` did not start within "
                f"{self.options.connect_timeout:g}s"
            ) from exc
        except (asyncssh.Error, OSError) as exc:
            raise translate_error(self.target, self.options, exc) from exc

    async def close(self) -> None:
        """Close the connection; processes started through it that detached keep running."""
        self._conn.close()
        with contextlib.suppress(Exception):  # it is going away either way
            await self._conn.wait_closed()


def _text(data: str | bytes | None) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data


class SshPool:
    """One `SshConnection` per host, opened on first use and reopened once it closed."""

    def __init__(self, options: SshOptions) -> None:
        self.options = options
        self._connections: dict[SshTarget, SshConnection] = {}
        self._locks: dict[SshTarget, asyncio.Lock] = {}

    async def connection(self, target: SshTarget) -> SshConnection:
        """The open connection to `target`, connecting (within connect_timeout) if needed."""
        lock = self._locks.setdefault(target, asyncio.Lock())
        async with lock:  # two callers at once share one connection attempt
            current = self._connections.get(target)
            if current is not None and not current.closed:
                return current
            connection = SshConnection(target, self.options, await self._connect(target))
            self._connections[target] = connection
            return connection

    async def run(
        self,
        target: SshTarget,
        command: str,
        *,
        input: str | None = None,
        timeout: float | None = None,
        check: bool = True,
    ) -> CommandResult:
        """`SshConnection.run` on the pooled connection to `target`."""
        connection = await self.connection(target)
        return await connection.run(command, input=input, timeout=timeout, check=check)

    async def _connect(self, target: SshTarget) -> asyncssh.SSHClientConnection:
        import asyncssh

        options = self.options
        keys = {"client_keys": [str(options.key)], "agent_path": None} if options.key else {}
        try:
            async with asyncio.timeout(options.connect_timeout):
                return await asyncssh.connect(
                    target.address,
                    port=target.port,
                    username=target.user or options.user,
                    known_hosts=str(known_hosts_path(options)),
                    config=None,  # zerodown.yml says everything: no ~/.ssh/config surprises
                    keepalive_interval=15,
                    **keys,
                )
        except (asyncssh.Error, OSError, TimeoutError) as exc:
            raise translate_error(target, options, exc) from exc

    async def close(self) -> None:
        """Close every connection (detached remote processes keep running)."""
        connections, self._connections = list(self._connections.values()), {}
        for connection in connections:
            await connection.close()


def quote(*words: str) -> str:
    """A shell command line of `words`, each quoted for the remote login shell."""
    return " ".join(shlex.quote(word) for word in words)
