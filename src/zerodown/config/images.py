"""`build:` of a service in zerodown.yml: a command, an image per revision, its registry.

`build: "make"` (the old form) is `build: {command: make}`. `build: {image: {...}}` builds a
container image for every revision (once per git sha) from the service's Dockerfile or a preset,
pushes it to `registry:` and deploys it pinned by the registry's manifest digest. The models are
plain pydantic; the Docker, registry and AWS clients load only when an image is built
(`zerodown.images`).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from zerodown.config.units import Duration

_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_REPOSITORY = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$")
_ADDRESS = re.compile(r"^[A-Za-z0-9.-]+(?::\d{1,5})?$")
# The seeds' JVM options (the Spring Boot team's Dockerfile).
SEED_JAVA_OPTS = "-Xms512m -Xmx1024m -XX:+UseG1GC -XX:MaxGCPauseMillis=200"

Preset = Literal["fastapi", "spring-boot"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PlainRegistryConfig(_Model):
    """A registry speaking the Docker Registry HTTP API v2 (Distribution, `registry:2`, Harbor)."""

    kind: Literal["plain"] = Field("plain", description="A Docker Registry v2 API at `address`.")
    address: str = Field(description="host[:port] as image references spell it, e.g. reg:5000.")
    insecure: bool = Field(
        False,
        description="Plain http instead of https. Always on for 127.0.0.0/8 and localhost, as "
        "Docker itself assumes; the engine must allow it too (insecure-registries).",
    )
    username: str | None = Field(None, description="Basic auth user (none: anonymous).")
    password_env: str | None = Field(
        None, description="Environment variable that holds the password (never the password)."
    )

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        if not _ADDRESS.fullmatch(value):
            raise ValueError(f"write host[:port], e.g. 127.0.0.1:5000, not {value!r}")
        return value


class EcrRegistryConfig(_Model):
    """Amazon ECR: logs in with boto3 (`get_authorization_token`), prunes with its image API."""

    kind: Literal["ecr"] = Field(description="Amazon ECR.")
    region: str = Field(description="AWS region of the registry, e.g. ap-northeast-2.")
    registry_id: str | None = Field(None, description="Account id (default: the caller's).")
    endpoint_url: str | None = Field(None, description="ECR API endpoint (tests: moto_server).")
    create_repository: bool = Field(True, description="Create the repository when missing.")


RegistryConfig = Annotated[PlainRegistryConfig | EcrRegistryConfig, Field(discriminator="kind")]


class ImageRetentionConfig(_Model):
    """What `zerodown images prune` (and each publish) keeps: the seeds' ECR lifecycle policy.

    Never deleted, whatever the rules: `latest`, and every digest a running instance or a
    recorded live/rollback revision uses.
    """

    enabled: bool = Field(True, description="Prune after each publish.")
    keep_last: int = Field(
        10, ge=1, description="Release images (tagged, not dev-only) kept, newest first."
    )
    untagged_days: float = Field(7, ge=0, description="Untagged images go after this many days.")
    dev_days: float = Field(
        30, ge=0, description="Images tagged only dev-<timestamp> (and <sha>) go after this long."
    )


class ImageBuildConfig(_Model):
    """A container image built for every revision, pushed, and deployed by digest."""

    dockerfile: str | None = Field(
        None,
        description="Dockerfile, relative to the service's directory. Default: `Dockerfile` "
        "there if it exists, else the `preset`.",
    )
    preset: Preset | None = Field(
        None,
        description="Hardened Dockerfile used when the service has none: `fastapi` (Python, "
        "non-root, uvicorn, HEALTHCHECK) or `spring-boot` (Gradle -> JRE, uid 1001, dumb-init, "
        "HEALTHCHECK on /actuator/health, JAVA_OPTS).",
    )
    base: str | None = Field(
        None,
        description="Base image of the preset (its runtime stage). Default: built locally once "
        "from Debian bookworm with debootstrap (no public registry is needed).",
    )
    builder: str | None = Field(
        None, description="spring-boot: the build stage's image (a JDK with Gradle)."
    )
    base_packages: tuple[str, ...] | None = Field(
        None,
        description="Debian packages of the locally built base (default per preset: python3 / "
        "openjdk-17-jre-headless, dumb-init, curl).",
    )
    mirror: str = Field(
        "http://deb.debian.org/debian", description="Debian mirror for the local base."
    )
    context: str = Field(".", description="Build context, relative to the service's directory.")
    build_args: dict[str, str] = Field(default_factory=dict, description="--build-arg values.")
    repository: str | None = Field(
        None, description="Repository in the registry (default: the service's name)."
    )
    registry: RegistryConfig = Field(description="Where images are pushed and pinned from.")
    engine: str | None = Field(
        None,
        description="Docker API that builds (and pushes): a unix:// or tcp:// URL. Default: "
        "$DOCKER_HOST, else unix:///var/run/docker.sock. Podman's `podman system service` works.",
    )
    production: tuple[str, ...] = Field(
        ("prod",), description="Environments whose successful deploys move the `latest` tag."
    )
    retention: ImageRetentionConfig = Field(default_factory=ImageRetentionConfig)
    timeout: Duration = Field(1800.0, description="A build (and push) fails after this long.")
    # Preset knobs.
    app: str = Field("main:app", description="fastapi: the ASGI app uvicorn serves, module:attr.")
    port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="Port the app listens on when $PORT is unset (fastapi 8000, spring-boot 8080).",
    )
    health_path: str | None = Field(
        None,
        description="HEALTHCHECK path (fastapi: /health, spring-boot: /actuator/health).",
    )
    java_opts: str = Field(SEED_JAVA_OPTS, description="spring-boot: JAVA_OPTS of the image.")

    @field_validator("registry", mode="before")
    @classmethod
    def _plain_by_default(cls, value: Any) -> Any:
        if isinstance(value, dict) and "kind" not in value:
            return {**value, "kind": "plain"}
        return value

    @field_validator("repository")
    @classmethod
    def _repository(cls, value: str | None) -> str | None:
        if value is not None and not _REPOSITORY.fullmatch(value):
            raise ValueError(f"lower-case path components like team/web, not {value!r}")
        return value

    @field_validator("health_path")
    @classmethod
    def _health_path(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"/[A-Za-z0-9/_.~-]*", value):
            raise ValueError(
                f"write a path like /health (letters, digits, / _ . ~ -), not {value!r}"
            )
        return value


class BuildConfig(_Model):
    """How a revision is built: a shell command in its directory, an image, or both."""

    command: str | None = Field(None, description="Command run once per revision to build it.")
    image: ImageBuildConfig | None = Field(
        None, description="Build a container image per revision (after `command`, if any)."
    )

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, data: Any) -> Any:
        if isinstance(data, str):  # the old form; "" built nothing, and still builds nothing
            return {"command": data if data.strip() else None}
        return data


def valid_tag(tag: str) -> bool:
    """Whether `tag` is a Docker tag (128 chars of [A-Za-z0-9_.-], not starting with . or -)."""
    return bool(_TAG.fullmatch(tag))
