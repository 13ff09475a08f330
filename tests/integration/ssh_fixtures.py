"""Three SSH "hosts" on this machine: one real sshd each on 127.0.0.2, 127.0.0.3 and 127.0.0.4.

Import the fixtures a test module needs (`from tests.integration.ssh_fixtures import ssh_hosts,
ssh_fleet`). Each host has its own sshd process, config, host key and state directory (what the
ssh runtime uses as that host's remote root); one client key, generated for the test session, is
authorized on all of them, and a known_hosts file names the three host keys. No network
namespaces: the hosts differ by loopback address only, so they share this machine's processes,
python3 and files, which is what lets a test look at a "remote" disk.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SSHD = "/usr/sbin/sshd"
HOST_ADDRESSES = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
_START_TIMEOUT = 15.0
_STOP_TIMEOUT = 10.0


def free_port_on(address: str) -> int:
    """A port the kernel just handed out on `address` (bound to port 0, then released)."""
    with socket.socket() as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


def _banner(address: str, port: int) -> bool:
    """Whether an SSH server answers on address:port with its version banner."""
    try:
        with socket.create_connection((address, port), timeout=1.0) as sock:
            return sock.recv(64).startswith(b"SSH-")
    except OSError:
        return False


def children_of(pid: int) -> list[int]:
    """Pids whose parent is `pid` (sshd forks one process per connection, in its own session)."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            children.append(int(entry.name))
    return children


@dataclass
class SshHost:
    """One sshd listening on `address:port`, with its own config, host key and state dir."""

    address: str
    port: int
    dir: Path  # sshd's own files (config, host key, log)
    state_dir: Path  # the host's "remote" root: where the ssh runtime keeps its files
    process: subprocess.Popen[bytes] | None = None

    @property
    def host_public_key(self) -> str:
        """The host's public key line (`ssh-ed25519 AAAA...`)."""
        kind, key = (self.dir / "ssh_host_ed25519_key.pub").read_text().split()[:2]
        return f"{kind} {key}"

    @property
    def running(self) -> bool:
        """Whether this host's sshd process runs."""
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Start sshd in the foreground (-D) and wait until it answers with its banner."""
        if self.running:
            return
        log = (self.dir / "sshd.log").open("ab")
        try:
            self.process = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(self.dir / "sshd_config")],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()
        deadline = time.monotonic() + _START_TIMEOUT
        while not _banner(self.address, self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                output = (self.dir / "sshd.log").read_text(errors="replace")[-2000:]
                self.stop()
                raise RuntimeError(f"sshd on {self.address}:{self.port} did not start: {output}")
            time.sleep(0.05)  # another process: nothing to await but its port

    def stop(self) -> None:
        """Stop sshd and every connection it serves (each runs in a process of its own)."""
        proc = self.process
        if proc is None:
            return
        self.process = None
        connections = children_of(proc.pid)
        for pid in [proc.pid, *connections]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        try:
            proc.wait(_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(_STOP_TIMEOUT)
        for pid in connections:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@dataclass
class SshHosts:
    """The three hosts and what a client needs to reach them: user, key, known_hosts file."""

    hosts: list[SshHost]
    user: str
    key: Path  # the client's private key, authorized on every host
    known_hosts: Path
    root: Path

    def by_address(self, address: str) -> SshHost:
        """The host listening on `address`."""
        return next(host for host in self.hosts if host.address == address)

    def ensure_running(self) -> None:
        """Start any host a test stopped."""
        for host in self.hosts:
            host.start()


def _write_sshd_config(host: SshHost, authorized_keys: Path) -> None:
    (host.dir / "sshd_config").write_text(
        "\n".join(
            [
                f"ListenAddress {host.address}:{host.port}",
                f"HostKey {host.dir / 'ssh_host_ed25519_key'}",
                f"PidFile {host.dir / 'sshd.pid'}",
                f"AuthorizedKeysFile {authorized_keys}",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PermitRootLogin prohibit-password",
                "UsePAM no",
                "StrictModes no",  # the files live in a temporary dir, not a home directory
                "PrintMotd no",
                "LogLevel ERROR",
                "MaxStartups 50",
                "Subsystem sftp internal-sftp",
                "",
            ]
        )
    )


def _keygen(path: Path, comment: str) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
    )


def kill_processes_under(root: Path) -> None:
    """Kill whatever still runs from `root` (supervisors name it in argv, apps run in it)."""
    mine = os.getpid()
    marker = str(root)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == mine:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if marker in cmdline or cwd.startswith(marker):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), signal.SIGKILL)


@pytest.fixture(scope="session")
def ssh_hosts() -> Iterator[SshHosts]:
    """Three sshd "hosts" (127.0.0.2-4, a random port each), stopped at the end of the session."""
    if not Path(SSHD).exists() or shutil.which("ssh-keygen") is None:
        pytest.skip("openssh-server is not installed (scripts/setup-system.sh)")
    if os.geteuid() == 0:
        # sshd's privilege separation directory; Debian creates it only when the service starts.
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="zd-ssh-", dir="/tmp"))
    os.chmod(root, 0o755)
    key = root / "id_ed25519"
    _keygen(key, "zerodown-tests")
    authorized_keys = root / "authorized_keys"
    authorized_keys.write_text((root / "id_ed25519.pub").read_text())
    hosts = []
    for address in HOST_ADDRESSES:
        host_dir = root / "sshd" / address
        host_dir.mkdir(parents=True)
        state_dir = root / "hosts" / address
        state_dir.mkdir(parents=True)
        host = SshHost(address, free_port_on(address), host_dir, state_dir)
        _keygen(host_dir / "ssh_host_ed25519_key", f"host-{address}")
        _write_sshd_config(host, authorized_keys)
        hosts.append(host)
    known_hosts = root / "known_hosts"
    known_hosts.write_text("".join(f"[{h.address}]:{h.port} {h.host_public_key}\n" for h in hosts))
    fleet = SshHosts(hosts, getpass.getuser(), key, known_hosts, root)
    try:
        fleet.ensure_running()
        yield fleet
    finally:
        for host in hosts:
            host.stop()
        kill_processes_under(root / "hosts")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def ssh_fleet(ssh_hosts: SshHosts) -> Iterator[SshHosts]:
    """The three hosts, all running at the start of the test (a test may stop one)."""
    ssh_hosts.ensure_running()
    try:
        yield ssh_hosts
    finally:
        ssh_hosts.ensure_running()
