"""The values one verification fills into its smoke checks' `${secret:NAME}` / `${env:NAME}`.

Secrets are read through the same secret stores the deployment injected into its instances, at
most once per verification and only when a check that needs them is about to run. Every value
read is taught to a masker first; results pass through it, so a response that echoes a token
records `****`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Protocol

from zerodown.config.verify import SmokeCheck
from zerodown.domain.events import EventKind
from zerodown.engine.extensions import DeploymentContext, mask_value
from zerodown.errors import SecretsError, VerificationFailed
from zerodown.secrets.masking import SecretMasker
from zerodown.verify.placeholders import Placeholder, PlaceholderKind, placeholders_in
from zerodown.verify.results import CheckResult
from zerodown.verify.smoke import SmokeRequest


class SecretSource(Protocol):
    """Reads a deployment's secrets (`zerodown.secrets.env_source.SecretsEnvSource` is one)."""

    async def secret_values(self, ctx: DeploymentContext) -> tuple[dict[str, str], str]:
        """Every secret of the deployment's environment, and where they were looked up."""
        ...


def check_placeholders(check: SmokeCheck) -> set[Placeholder]:
    """The placeholders in a check's path, header values and body."""
    return placeholders_in([check.path, *check.headers.values(), check.body])


class PlaceholderValues:
    """Fills the placeholders of one verification's smoke checks; not shared between two."""

    def __init__(
        self,
        ctx: DeploymentContext,
        checks: Sequence[SmokeCheck],
        secrets: SecretSource | None,
    ) -> None:
        self._ctx = ctx
        self._source = secrets
        self._wanted = sorted(set().union(*(check_placeholders(c) for c in checks)))
        self._secrets: dict[str, str] | None = None
        self._where = ""
        self._failure: str | None = None  # why the secrets could not be read (kept: read once)
        self._lock = asyncio.Lock()
        self.masker = SecretMasker()

    async def request_for(self, check: SmokeCheck) -> SmokeRequest:
        """What `check` sends; `VerificationFailed` names the check and the missing name."""
        needed = sorted(check_placeholders(check))
        if not needed:
            return SmokeRequest.of(check)
        values = {placeholder: await self._value(check, placeholder) for placeholder in needed}
        return SmokeRequest.of(check, values.__getitem__)

    def mask(self, result: CheckResult) -> CheckResult:
        """`result` with every secret value read (and its encodings) replaced by `****`."""
        return replace(
            result,
            detail=self.masker.mask(result.detail),
            numbers=mask_value(self.masker, result.numbers),
        )

    async def _value(self, check: SmokeCheck, placeholder: Placeholder) -> str:
        name = placeholder.name
        if placeholder.kind is PlaceholderKind.SECRET:
            if self._source is None:
                raise VerificationFailed(
                    f"{placeholder} cannot be filled in: this verifier has no secret store",
                    checks=(check.label,),
                )
            secrets = await self._read_secrets(check)
            if name not in secrets:
                raise VerificationFailed(
                    f"secret {name} does not exist in {self._where or 'the secret store'}: "
                    f"`zerodown secrets set --env {self._ctx.record.environment} {name}` adds it",
                    checks=(check.label,),
                )
            return secrets[name]
        environment = await self._instance_environment(check)
        if name not in environment:
            raise VerificationFailed(
                f"{placeholder}: the new instances have no variable {name} (set it in `env:` "
                "of the service or environment, or as a secret)",
                checks=(check.label,),
            )
        return environment[name]

    async def _instance_environment(self, check: SmokeCheck) -> Mapping[str, str]:
        # What the fleet gives every new instance (engine/fleet.py `instance_spec`); secrets
        # only when there is a store to read them from.
        ctx = self._ctx
        secrets = await self._read_secrets(check) if self._source is not None else {}
        return {
            **ctx.service.env,
            **ctx.environment.env,
            **secrets,
            "ZERODOWN_ENVIRONMENT": ctx.record.environment,
            "ZERODOWN_DEPLOYMENT_ID": ctx.record.id,
        }

    async def _read_secrets(self, check: SmokeCheck) -> dict[str, str]:
        async with self._lock:  # one read even if two checks ask at once
            if self._secrets is None and self._failure is None and self._source is not None:
                try:
                    self._secrets, self._where = await self._source.secret_values(self._ctx)
                except SecretsError as exc:
                    environment = self._ctx.record.environment
                    self._failure = f"cannot read the secrets of {environment}: {exc}"
                else:
                    self.masker.add(*self._secrets.values())
                    await self._ctx.emit(
                        EventKind.DECISION,
                        f"verify: read the secrets of {self._ctx.record.environment} from "
                        f"{self._where} to fill {', '.join(str(p) for p in self._wanted)}",
                        {"placeholders": [str(p) for p in self._wanted], "sources": self._where},
                    )
        if self._failure is not None:
            raise VerificationFailed(self._failure, checks=(check.label,))
        return self._secrets or {}
