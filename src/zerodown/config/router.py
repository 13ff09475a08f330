"""`router:` in zerodown.yml: one settings model per router backend, chosen by `backend:`.

The models are plain pydantic (the config is validated before anything starts); each backend's
implementation is imported only when it is used (`zerodown.routers.registry`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, JsonValue, Tag, field_validator

from zerodown.config.routes import LISTEN_EXAMPLE, check_address, listen_list
from zerodown.config.units import Duration, Size


def listen_schema(schema: dict[str, JsonValue]) -> None:
    """`listen:` in the JSON Schema: one host:port or a list of them (the validator takes both)."""
    nullable = any(isinstance(s, dict) and s.get("type") == "null" for s in _any_of(schema))
    for key in ("type", "items", "anyOf"):
        schema.pop(key, None)
    options: list[JsonValue] = [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]
    schema["anyOf"] = [*options, {"type": "null"}] if nullable else options


def _any_of(schema: dict[str, JsonValue]) -> list[JsonValue]:
    found = schema.get("anyOf")
    return found if isinstance(found, list) else []


class _RouterBase(BaseModel):
    """What every router backend is told: where to listen, how to balance, its timeouts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    listen: tuple[str, ...] = Field(
        ("127.0.0.1:8080",),
        description="host:port (or a list) to listen on; the first environment is served here, "
        "the others on the next ports unless their `listen:` or `hosts:` say otherwise.",
        json_schema_extra=listen_schema,
    )
    balance: Literal["least_inflight", "round_robin"] = Field(
        "least_inflight",
        description="least_inflight: the target with the fewest requests in flight (HAProxy: "
        "leastconn); round_robin: in turn, by weight (HAProxy: roundrobin).",
    )
    connect_timeout: Duration = Field(5.0, description="Upstream connect timeout.")
    response_timeout: Duration = Field(60.0, description="Upstream response timeout (then 504).")

    @field_validator("listen", mode="before")
    @classmethod
    def _listen_list(cls, value: Any) -> Any:
        return listen_list(value)

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError(f"list at least one host:port, e.g. `listen: {LISTEN_EXAMPLE}`")
        return tuple(check_address(item) for item in value)


class BuiltinRouterConfig(_RouterBase):
    """zerodown's own reverse proxy (`zerodown router`): one Python process per worker."""

    backend: Literal["builtin"] = Field("builtin", description="zerodown's own router.")
    max_header_bytes: Size = Field(64 * 1024, description="Larger request heads get 431.")
    max_body_bytes: Size = Field(100 * 1024**2, description="Larger request bodies get 413.")
    workers: int = Field(1, ge=1, le=16, description="Router processes on one port (more cores).")
    grace: Duration = Field(
        30.0, description="When the router is stopped, connections get this long to finish."
    )


class HaproxyRouterConfig(_RouterBase):
    """An HAProxy process (2.4 or newer) that zerodown writes the configuration of, starts in
    master-worker mode and drives through its Runtime API."""

    backend: Literal["haproxy"] = Field(
        "haproxy", description="HAProxy, configured and driven by zerodown."
    )
    binary: str = Field("haproxy", description="The haproxy executable (a name on PATH or a path).")
    admin: str | None = Field(
        None,
        description="Runtime API address: None is a unix socket in the state dir (mode 0600, "
        "level admin); host:port is a TCP admin socket, e.g. for HAProxy on a load-balancer host.",
    )
    hard_stop_after: Duration = Field(
        120.0,
        description="After a reload, old processes still holding connections (WebSockets, SSE) "
        "are stopped this long after; keep it above the longest drain_timeout.",
    )
    maxconn: int = Field(4096, ge=64, le=1_000_000, description="HAProxy's global maxconn.")

    @field_validator("admin")
    @classmethod
    def _admin(cls, value: str | None) -> str | None:
        return None if value is None else check_address(value)


def _backend_of(value: Any) -> str:
    """The backend a `router:` section names; none named is the built-in router."""
    if isinstance(value, dict):
        return str(value.get("backend", "builtin"))
    return str(getattr(value, "backend", "builtin"))


RouterConfig = Annotated[
    Annotated[BuiltinRouterConfig, Tag("builtin")] | Annotated[HaproxyRouterConfig, Tag("haproxy")],
    Discriminator(
        _backend_of,
        custom_error_type="router_backend",
        custom_error_message="unknown router backend: write `backend: builtin` or `backend: "
        "haproxy`",
    ),
]
