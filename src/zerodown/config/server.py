"""The `server:` section of zerodown.yml: where `zerodown serve` publishes its API and dashboard."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator


class ServerConfig(BaseModel):
    """The control plane's HTTP API and dashboard (served by `zerodown serve`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    listen: str = Field(
        "127.0.0.1:8686",
        description="host:port of the API and dashboard; keep 127.0.0.1 unless a proxy with TLS "
        "is in front of it.",
    )
    read_only_public: bool = Field(
        True,
        description="Let anyone who can reach `listen` read status, history and KPIs; false: "
        "every request needs a token (`zerodown token create`). Actions always need one.",
    )

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        host, _, port = value.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"write host:port, e.g. 127.0.0.1:8686, not {value!r}")
        return value

    @property
    def host(self) -> str:
        """The host part of `listen` (brackets of an IPv6 address removed)."""
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        """The port part of `listen`."""
        return int(self.listen.rpartition(":")[2])
