"""The ssh runtime's entry point for the registry (`zerodown.runtimes.registry`)."""

from __future__ import annotations

from pathlib import Path

from zerodown.config.runtime import RuntimeConfig
from zerodown.config.ssh import SshRuntimeConfig
from zerodown.errors import ConfigError
from zerodown.runtimes.ssh.connection import SshOptions, SshTarget
from zerodown.runtimes.ssh.runtime import RemoteHost, SshRuntime


def runtime(settings: RuntimeConfig, state_dir: Path) -> SshRuntime:
    """Processes on the hosts `settings.hosts` names, over one SSH connection each."""
    del state_dir  # everything an instance needs is kept on its host
    if not isinstance(settings, SshRuntimeConfig):  # the registry maps "ssh" here only
        raise ConfigError(f"the ssh runtime got {settings.backend!r} settings", field="runtime")
    hosts = [
        RemoteHost(SshTarget(host.address, host.port, host.user), host.dir or settings.dir)
        for host in settings.hosts
    ]
    options = SshOptions(
        user=settings.user,
        key=Path(settings.key).expanduser() if settings.key else None,
        known_hosts=Path(settings.known_hosts).expanduser() if settings.known_hosts else None,
        connect_timeout=settings.connect_timeout,
        command_timeout=settings.command_timeout,
    )
    return SshRuntime(hosts, options, python=settings.python)
