"""zerodown.yml as one validated, frozen model (pydantic v2).

Every field documents itself; `zerodown schema` writes the JSON Schema for editors from this model.
Precedence: defaults < zerodown.yml < ZERODOWN_* environment < CLI flags (see `loader`).
"""

from __future__ import annotations

import re
from typing import Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from zerodown.config.alarms import AlarmList, LogMetricList
from zerodown.config.images import BuildConfig
from zerodown.config.notifications import NotificationsConfig
from zerodown.config.pipeline import PipelineConfig
from zerodown.config.platform import PlatformConfig
from zerodown.config.progressive import AnalysisConfig, CanaryStep, check_steps, default_steps
from zerodown.config.router import BuiltinRouterConfig, RouterConfig, listen_schema
from zerodown.config.routes import (
    LISTEN_EXAMPLE,
    check_address,
    check_routes,
    default_listen,
    listen_list,
)
from zerodown.config.runtime import LocalRuntimeConfig, RuntimeConfig
from zerodown.config.secrets import SecretSourceConfig
from zerodown.config.server import ServerConfig
from zerodown.config.units import Duration, Size
from zerodown.config.verify import VerifyConfig
from zerodown.health.spec import HealthCheckSpec

NAME = re.compile(r"^[a-z][a-z0-9-]{0,62}$")

HookName = Literal[
    "BeforeBlockTraffic",
    "BlockTraffic",
    "AfterBlockTraffic",
    "ApplicationStop",
    "BeforeInstall",
    "Install",
    "AfterInstall",
    "ApplicationStart",
    "ValidateService",
    "BeforeAllowTraffic",
    "AllowTraffic",
    "AfterAllowTraffic",
]
HOOK_ORDER: tuple[str, ...] = get_args(HookName)  # CodeDeploy's in-place order

# Health presets; the seeds' Spring Boot check: wait 30 s, then 30 tries 10 s apart.
HEALTH_PRESETS: dict[str, dict[str, Any]] = {
    "spring-boot": {
        "type": "http",
        "path": "/actuator/health",
        "expect_json": {"status": "UP"},
        "start_period": 30.0,
        "interval": 10.0,
        "start_interval": 1.0,
        "timeout": 5.0,
        "healthy_threshold": 1,
        "unhealthy_threshold": 3,
        "deadline": 330.0,
    },
    "fastapi": {
        "type": "http",
        "path": "/health",
        "start_period": 5.0,
        "interval": 5.0,
        "start_interval": 0.1,  # a deploy waits at most 0.1 s past the boot of an instance
        "timeout": 2.0,
        "healthy_threshold": 1,
        "unhealthy_threshold": 3,
        "deadline": 60.0,
    },
}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HealthConfig(_Model):
    """How zerodown decides an instance may take traffic (an ALB-style check)."""

    preset: Literal["spring-boot", "fastapi"] | None = Field(
        None, description="Start from a preset; fields given here override it."
    )
    type: Literal["http", "tcp", "command"] = Field("http", description="Kind of probe.")
    path: str = Field("/health", description="HTTP path to GET.")
    statuses: tuple[int, ...] = Field((200,), description="HTTP statuses that count as healthy.")
    expect_json: dict[str, Any] = Field(
        default_factory=dict,
        description="JSON body fields that must equal these values, e.g. {status: UP}.",
    )
    host: str | None = Field(None, description="Host header to send (default host:port).")
    command: str | None = Field(None, description="type command: shell command, exit 0 = healthy.")
    timeout: Duration = Field(5.0, description="Timeout of one probe.")
    interval: Duration = Field(10.0, description="Time between probes of a running instance.")
    start_interval: Duration = Field(0.25, description="Time between probes while starting.")
    healthy_threshold: int = Field(2, ge=1, description="Passes in a row to become healthy.")
    unhealthy_threshold: int = Field(3, ge=1, description="Failures in a row to become unhealthy.")
    start_period: Duration = Field(0.0, description="Failures in this boot period do not count.")
    deadline: Duration = Field(330.0, description="A new instance must be healthy within this.")

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("preset") in HEALTH_PRESETS:
            return {**HEALTH_PRESETS[data["preset"]], **data}
        return data

    @model_validator(mode="after")
    def _check_kind(self) -> HealthConfig:
        if self.type == "command" and not self.command:
            raise ValueError("type command needs `command:` (a shell command, exit 0 = healthy)")
        if not self.path.startswith("/"):
            raise ValueError(f"path must start with '/': {self.path!r}")
        return self

    def to_spec(self) -> HealthCheckSpec:
        """The plain value the router and the engine use."""
        return HealthCheckSpec(
            kind=self.type,
            path=self.path,
            statuses=self.statuses,
            json_fields=dict(self.expect_json),
            host_header=self.host,
            command=self.command,
            timeout=self.timeout,
            interval=self.interval,
            start_interval=self.start_interval,
            healthy_threshold=self.healthy_threshold,
            unhealthy_threshold=self.unhealthy_threshold,
            start_period=self.start_period,
            deadline=self.deadline,
        )


class HookConfig(_Model):
    """A user command run at one lifecycle event of a deployment."""

    command: str = Field(description="Shell command; ZERODOWN_* variables describe the deployment.")
    timeout: Duration = Field(300.0, description="Killed and failed after this long.")
    scope: Literal["instance", "batch"] = Field(
        "instance",
        description=(
            "`instance`: run once per instance of the batch, concurrently, as CodeDeploy runs a"
            " hook on each host; `batch`: run once for the whole batch (a migration, say)."
        ),
    )

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, data: Any) -> Any:
        return {"command": data} if isinstance(data, str) else data


class SourceConfig(_Model):
    """Where a service's code lives in git."""

    repo: str = Field(".", description="Git repository (path), relative to zerodown.yml.")
    path: str = Field(".", description="Directory of the service inside the repository.")


class ServiceConfig(_Model):
    """A web service: processes behind the router."""

    source: SourceConfig | None = Field(
        None, description="Git source; without it the service runs from `workdir` as it is."
    )
    workdir: str = Field(".", description="Directory to run in when there is no `source`.")
    build: BuildConfig | None = Field(
        None,
        description="Once per revision: a command (`build: make`) and/or a container image "
        "(`build: {image: {preset: fastapi, registry: ...}}`).",
    )
    build_timeout: Duration = Field(600.0, description="The build fails after this long.")
    platform: PlatformConfig | None = Field(
        None,
        description="Where the service runs when a managed platform runs the rollout "
        "(`platform: {kind: ecs, cluster, service, container}`); default: zerodown's runtime "
        "and router.",
    )
    keep_releases: int = Field(
        5,
        ge=1,
        description="Prepared releases (export + build) kept besides the live ones, their "
        "rollback targets and those in use; older ones are deleted after a successful deploy.",
    )
    run: str | None = Field(
        None,
        validate_default=True,
        description="Command that starts one instance; it must listen on $PORT. Required, "
        "except for a service built as an image, where it replaces the image's CMD.",
    )
    port_env: str = Field("PORT", description="Environment variable that carries the port.")
    instances: int = Field(1, ge=1, le=256, description="How many instances to run.")
    hosts: tuple[str, ...] = Field((), description="Host headers routed here (empty: any).")
    path_prefix: str = Field("/", description="Path prefix routed here.")
    health: HealthConfig = Field(default_factory=HealthConfig, description="Health check.")
    drain_timeout: Duration = Field(30.0, description="Longest wait for in-flight requests.")
    stop_timeout: Duration = Field(10.0, description="SIGTERM to SIGKILL grace period.")
    memory: Size | None = Field(None, description="Memory limit per instance, e.g. 1400m.")
    env: dict[str, str] = Field(default_factory=dict, description="Environment of instances.")
    restart: Literal["unless-stopped", "no"] = Field("unless-stopped", description="On crash.")
    hooks: dict[HookName, HookConfig] = Field(
        default_factory=dict, description="Lifecycle hook commands (CodeDeploy names)."
    )
    verify: VerifyConfig | None = Field(None, description="Post-deploy checks, every environment.")
    log_metrics: LogMetricList = Field(default_factory=list, description="Log metric filters.")

    @field_validator("path_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"must start with '/': {value!r}")
        return value

    @field_validator("run")
    @classmethod
    def _run(cls, value: str | None, info: ValidationInfo) -> str | None:
        build = info.data.get("build")  # validated before `run` (declared before it)
        managed = info.data.get("platform") is not None  # the platform runs the image
        if value is None and not managed and (build is None or build.image is None):
            raise PydanticCustomError("missing", "a service without an image needs `run:`")
        if value is not None and not value.strip():
            raise ValueError("must be a command that starts one instance, e.g. python app.py")
        return value


class StrategyConfig(_Model):
    """How a deployment replaces instances."""

    type: Literal["all-at-once", "rolling", "in-place", "blue-green", "canary"] = Field(
        "rolling",
        description="all-at-once (downtime allowed), rolling (surge), in-place, blue-green "
        "(preview, atomic switch, warm rollback window), canary (weighted steps + analysis).",
    )
    batch: int | str = Field(1, description="Instances per batch: N or 'N%'.")
    min_healthy: int | str = Field(
        "100%", description="Healthy instances kept serving during a batch: N or 'N%'."
    )
    surge: bool = Field(True, description="Start new before stopping old (rolling).")
    steps: tuple[CanaryStep, ...] = Field(
        default_factory=default_steps, description="canary: traffic steps, e.g. 10 %, 50 %."
    )
    analysis: AnalysisConfig = Field(
        default_factory=AnalysisConfig, description="canary: how each step is judged."
    )
    rollback_window: Duration = Field(
        600.0, description="blue-green: the old fleet stays warm this long for an instant rollback."
    )
    sticky: bool = Field(
        False, description="canary/blue-green: a cookie keeps a client on its revision."
    )
    preview_header: str = Field(
        "X-Zerodown-Preview", description="blue-green: requests with this header reach green."
    )

    @field_validator("steps")
    @classmethod
    def _steps(cls, value: tuple[CanaryStep, ...]) -> tuple[CanaryStep, ...]:
        check_steps(value)
        return value

    @field_validator("batch", "min_healthy")
    @classmethod
    def _count_or_percent(cls, value: int | str) -> int | str:
        if isinstance(value, int):
            if value < 0:
                raise ValueError("must not be negative")
            return value
        if re.fullmatch(r"\d{1,3}%", value.strip()) and int(value.strip()[:-1]) <= 100:
            return value.strip()
        raise ValueError(f"write a count (2) or a percentage ('50%'), not {value!r}")


class EnvironmentConfig(_Model):
    """dev, prod, ...: branch, strategy and safety settings."""

    branch: str | None = Field(None, description="Git branch that deploys here.")
    strategy: StrategyConfig = Field(default_factory=StrategyConfig)
    auto_rollback: bool = Field(True, description="Roll the fleet back when a deployment fails.")
    env: dict[str, str] = Field(default_factory=dict, description="Extra instance environment.")
    verify: VerifyConfig | None = Field(None, description="Adds to / overrides services' verify.")
    secrets: list[SecretSourceConfig] = Field(default_factory=list, description="Secret sources.")
    alarms: AlarmList = Field(default_factory=list, description="Alarms; [preset: seed].")
    bake_window: Duration | None = Field(None, description="Watch after deploy (prod 5m, else 0).")
    listen: tuple[str, ...] | None = Field(
        None,
        description="Router address(es) host:port this environment is served on. Default: "
        "router.listen for the first environment in the file (and for one with its own "
        "`hosts:`); router.listen's port + n for the n-th environment, counting from 0 "
        "(dev 8080, prod 8081 as `zerodown init` writes them). The router listens on all.",
        json_schema_extra=listen_schema,
    )
    hosts: tuple[str, ...] | None = Field(
        None,
        description="Host headers this environment's routes answer (replaces the services' "
        "`hosts:` here; [] = any). With hosts an environment may share router.listen.",
    )

    @field_validator("listen", mode="before")
    @classmethod
    def _listen_list(cls, value: Any) -> Any:
        return None if value is None else listen_list(value)

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is not None and not value:
            raise ValueError(f"list at least one host:port, e.g. `listen: {LISTEN_EXAMPLE}`")
        return None if value is None else tuple(check_address(item) for item in value)


class ZerodownConfig(_Model):
    """The whole of zerodown.yml."""

    project: str = Field("zerodown", description="Project name, shown in the dashboard.")
    state_dir: str = Field(".zerodown", description="Runtime state, relative to zerodown.yml.")
    store: str | None = Field(
        None, description="History database URL (default: SQLite in state_dir)."
    )
    router: RouterConfig = Field(
        default_factory=BuiltinRouterConfig,
        description="The router in front of the instances: `backend: builtin` (zerodown's own "
        "proxy, the default) or `backend: haproxy` (an HAProxy process zerodown configures).",
    )
    runtime: RuntimeConfig = Field(
        default_factory=LocalRuntimeConfig,
        description="Where instances run: `backend: local` (processes, the default) or "
        "`backend: docker` (containers of each revision's image through the Docker API).",
    )
    server: ServerConfig = Field(default_factory=ServerConfig, description="API + dashboard.")
    pipeline: PipelineConfig | None = Field(None, description="test -> build -> ... -> deploy.")
    notifications: NotificationsConfig | None = Field(None, description="Slack, webhooks.")
    services: dict[str, ServiceConfig] = Field(description="The services, by name.")
    environments: dict[str, EnvironmentConfig] = Field(
        default_factory=lambda: {"dev": EnvironmentConfig(strategy=StrategyConfig())},
        description="Environments, by name.",
    )

    @field_validator("services", "environments")
    @classmethod
    def _names(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            if not NAME.match(name):
                raise ValueError(
                    f"name {name!r}: use lowercase letters, digits and '-', starting with a letter"
                )
        return value

    @field_validator("services")
    @classmethod
    def _some_service(cls, value: dict[str, ServiceConfig]) -> dict[str, ServiceConfig]:
        if not value:
            raise ValueError("define at least one service")
        return value

    @model_validator(mode="after")
    def _routes(self) -> ZerodownConfig:
        # Each environment gets its address now (see config.routes), so every reader of the
        # config sees where it is served; then no two routes may shadow each other.
        given = {name for name, env in self.environments.items() if env.listen is not None}
        resolved = default_listen(self.router.listen, self.environments)
        for name, env in list(self.environments.items()):
            if env.listen != resolved[name]:
                self.environments[name] = env.model_copy(update={"listen": resolved[name]})
        check_routes(self, given)
        return self
