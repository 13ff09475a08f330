"""`runtime: {backend: ssh, hosts: [...]}`: processes on a fleet of hosts, reached over SSH.

A host is written as `address`, `user@address:port` or a mapping of the same fields; the
address is also where instances on that host listen and where probes and the router reach
them. Host keys are checked against a known_hosts file (never off).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from zerodown.config.units import Duration

# user@address:port, user@ and :port optional; an IPv6 address goes in brackets: [::1]:22
_HOST = re.compile(
    r"^(?:(?P<user>[^@\s]+)@)?(?P<address>\[[^\]\s]+\]|[^:@\s\[\]]+)(?::(?P<port>\d+))?$"
)


class SshHostConfig(BaseModel):
    """One host of the fleet."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    address: str = Field(
        description="The host's IP address or DNS name: zerodown connects to it, instances "
        "there listen on it, and probes and the router reach them at it."
    )
    port: int = Field(22, ge=1, le=65535, description="sshd's port on the host.")
    user: str | None = Field(None, description="Login user on this host (default: runtime.user).")
    dir: str | None = Field(
        None, description="Where zerodown keeps its files on this host (default: runtime.dir)."
    )

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        match = _HOST.match(value.strip())
        if match is None:
            raise ValueError(
                f"{value!r} is not a host: write address, user@address or user@address:port"
            )
        host: dict[str, Any] = {"address": match["address"].strip("[]")}
        if match["user"]:
            host["user"] = match["user"]
        if match["port"]:
            host["port"] = int(match["port"])
        return host

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        value = value.strip()
        if value.startswith("[") and value.endswith("]"):  # [::1], as in a host string
            value = value[1:-1]
        if not value or any(c.isspace() for c in value):
            raise ValueError(f"{value!r} is not a host address: write an IP or a DNS name")
        return value


class SshRuntimeConfig(BaseModel):
    """Processes on hosts over SSH, each under zerodown's supervisor on its host.

    zerodown copies itself (its standard-library-only host side) and each release to the hosts
    over SFTP and runs them with the host's python3 (3.11+); one SSH connection per host.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: Literal["ssh"] = Field(
        "ssh", description="Runtime backend: ssh (processes on hosts reached over SSH)."
    )
    hosts: list[SshHostConfig] = Field(
        description="The fleet: `address`, `user@address:port` or {address, port, user, dir} "
        "each; `instances: N` are spread over them.",
    )
    user: str = Field("root", description="Login user on every host that names none.")
    key: str | None = Field(
        None,
        description="Private key file to log in with; none: the keys of the ssh agent at "
        "$SSH_AUTH_SOCK.",
    )
    known_hosts: str | None = Field(
        None,
        description="known_hosts file the hosts' keys are checked against (default: "
        "~/.ssh/known_hosts; add a host with `ssh-keyscan -p PORT HOST >> FILE`).",
    )
    connect_timeout: Duration = Field(10.0, description="Longest wait to connect to a host.")
    command_timeout: Duration = Field(
        60.0, description="Longest wait for one command on a host (an upload included)."
    )
    dir: str = Field(
        "~/.zerodown",
        description="Where zerodown keeps its files on each host (its copy of itself, "
        "releases, instances); `~` is the login user's home there.",
    )
    python: str = Field(
        "python3", description="The Python 3.11+ on the hosts that runs zerodown's host side."
    )

    @field_validator("hosts")
    @classmethod
    def _distinct(cls, hosts: list[SshHostConfig]) -> list[SshHostConfig]:
        if not hosts:
            raise ValueError("list at least one host, e.g. hosts: [10.0.0.1, deploy@10.0.0.2]")
        seen: set[str] = set()
        for host in hosts:
            if host.address in seen:
                raise ValueError(f"host {host.address} is listed twice: list each host once")
            seen.add(host.address)
        return hosts

    @field_validator("connect_timeout", "command_timeout")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be more than 0, e.g. 10s")
        return value
