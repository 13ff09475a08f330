"""`platform:` of a service in zerodown.yml: where it runs when not behind zerodown's own
runtime and router. Without `platform:` zerodown drives the rollout itself (today's engine).

Each platform's implementation is imported only when used (`zerodown.platforms.registry`).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from zerodown.config.units import Duration

DIGEST_REF = re.compile(r"^[^@\s]+@sha256:[0-9a-f]{64}$")
DIGEST_EXAMPLE = "123456789012.dkr.ecr.ap-northeast-2.amazonaws.com/ai@sha256:<64 hex digits>"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def check_digest_ref(value: str) -> str:
    """`value` when it is an image reference pinned by digest; ValueError naming the fix."""
    if not DIGEST_REF.match(value):
        raise ValueError(
            f"{value!r} is not pinned by digest: ECS resolves a tag once per deployment, so a "
            f"re-pushed tag deploys something else; write repo@sha256:..., e.g. {DIGEST_EXAMPLE}"
        )
    return value


class EcsTargetConfig(_Model):
    """The ECS service of one environment, where it differs from the service's own."""

    cluster: str | None = Field(None, description="ECS cluster name or ARN in this environment.")
    service: str | None = Field(None, description="ECS service name in this environment.")
    region: str | None = Field(None, description="AWS region in this environment.")


class EcsPlatformConfig(_Model):
    """An ECS (Fargate) service: ECS runs the rolling update, zerodown registers the task
    definition revision, follows its own deployment and rolls back to the recorded one."""

    kind: Literal["ecs"] = Field(description="Platform kind: ecs (AWS ECS, Fargate or EC2).")
    cluster: str = Field(description="ECS cluster name or ARN.")
    service: str = Field(description="ECS service name.")
    container: str = Field(description="The container of the task definition whose image changes.")
    region: str | None = Field(None, description="AWS region (default: the AWS profile's).")
    endpoint_url: str | None = Field(
        None, description="Another ECS endpoint (moto_server, LocalStack); default: AWS."
    )
    image: str | None = Field(
        None,
        description="For a service that does not build an image: the image to deploy, pinned "
        "by digest (repo@sha256:...). A service with `build.image` deploys the one it built.",
    )
    alarms: tuple[str, ...] = Field(
        (), description="CloudWatch alarm names ECS watches during the rollout (rollback on)."
    )
    poll_interval: Duration = Field(10.0, description="How often the rollout is looked at.")
    start_allowance: Duration = Field(
        120.0, description="Added to the derived timeout for provisioning and the image pull."
    )
    timeout: Duration | None = Field(
        None,
        description="Give up following the rollout after this long (default: derived from the "
        "health check, grace period, deregistration delay and stopTimeout, printed up front).",
    )
    environments: dict[str, EcsTargetConfig] = Field(
        default_factory=dict, description="Per environment: another cluster/service/region."
    )

    @field_validator("image")
    @classmethod
    def _pinned(cls, value: str | None) -> str | None:
        return None if value is None else check_digest_ref(value)

    def for_environment(self, environment: str) -> EcsPlatformConfig:
        """These settings with `environment`'s overrides applied."""
        target = self.environments.get(environment)
        if target is None:
            return self
        update = {k: v for k, v in target.model_dump().items() if v is not None}
        return self.model_copy(update=update)


PlatformConfig = EcsPlatformConfig  # one kind so far; a discriminated union when there are more
