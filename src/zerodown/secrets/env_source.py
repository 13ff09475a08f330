"""`SecretsEnvSource`: an environment's secrets, resolved at deploy time, for its instances.

Values go to the new instances' environment (and to hooks), never to a file; the masker learns
each of them first, so no event, log line or printed message carries one. The instances also get
`ZERODOWN_SECRET_NAMES` (names only), which tells their supervisor what to mask in their log.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

from zerodown.config.secrets import SecretSourceConfig
from zerodown.domain.events import EventKind
from zerodown.engine.extensions import DeploymentContext
from zerodown.secrets import effective_sources, open_secret_store
from zerodown.secrets.base import SecretStore
from zerodown.secrets.masking import SECRET_NAMES_ENV, SecretMasker, global_masker

StoreOpener = Callable[[SecretSourceConfig], SecretStore]


class SecretsEnvSource:
    """An `EnvSource`: reads every source of the deployment's environment, later ones winning."""

    def __init__(
        self,
        state_dir: Path,
        root: Path,
        *,
        masker: SecretMasker | None = None,
        opener: StoreOpener | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.masker = masker if masker is not None else global_masker()
        self._environ = os.environ if environ is None else environ
        self._open: StoreOpener = opener or (
            lambda config: open_secret_store(
                config, state_dir=state_dir, root=root, environ=self._environ
            )
        )

    async def environment(self, ctx: DeploymentContext) -> Mapping[str, str]:
        """The secrets of `ctx`'s environment, plus `ZERODOWN_SECRET_NAMES`; SecretsError fails
        the deployment before anything changes."""
        resolved, read, _ = await self._resolve(ctx)
        if not resolved:
            return {}
        names = sorted(resolved)
        await ctx.emit(
            EventKind.DECISION,
            f"secrets: {len(names)} variable(s) from {', '.join(read)}: {', '.join(names)}",
            {"secrets": names, "sources": read},
        )
        return {**resolved, SECRET_NAMES_ENV: ",".join(names)}

    async def secret_values(self, ctx: DeploymentContext) -> tuple[dict[str, str], str]:
        """The secrets of `ctx`'s environment read again, with no event, and where they were
        looked up (for messages): for post-deploy checks that send one (`${secret:NAME}`)."""
        resolved, _, looked_in = await self._resolve(ctx)
        return resolved, ", ".join(looked_in)

    async def _resolve(self, ctx: DeploymentContext) -> tuple[dict[str, str], list[str], list[str]]:
        environment = ctx.record.environment
        resolved: dict[str, str] = {}
        read: list[str] = []
        looked_in: list[str] = []
        for config in effective_sources(ctx.environment.secrets):
            store = self._open(config)
            values = await store.values(environment)
            self.masker.add(*values.values())  # before anything could print or record them
            resolved.update(values)
            looked_in.append(store.describe(environment))
            if values:
                read.append(f"{looked_in[-1]} ({len(values)})")
        return resolved, read, looked_in
