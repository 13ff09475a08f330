"""`${secret:NAME}` in channel settings, read from the secret store of one environment.

The environment is `notifications.secrets_environment` (default: the first one in zerodown.yml);
its `secrets:` sources are asked newest-first, as deployments let later sources win. A value
found is taught to the process-wide masker, so a webhook URL never shows up in any output.
"""

from __future__ import annotations

import logging

from zerodown.config.loader import LoadedConfig
from zerodown.errors import SecretsError
from zerodown.notifiers.base import ReferenceResolver, SecretLookup

log = logging.getLogger(__name__)


def secret_lookup(loaded: LoadedConfig) -> SecretLookup:
    """Looks a name up in the notification secrets' environment."""
    config = loaded.config
    notifications = config.notifications
    chosen = notifications.secrets_environment if notifications else None
    environment = chosen or next(iter(config.environments))

    async def lookup(name: str) -> str | None:
        from zerodown.secrets import effective_sources, open_secret_store
        from zerodown.secrets.masking import global_masker

        env_config = config.environments.get(environment)
        sources = effective_sources(env_config.secrets if env_config else [])
        for source in reversed(sources):
            store = open_secret_store(source, state_dir=loaded.state_dir, root=loaded.root)
            try:
                value = await store.get(environment, name)
            except SecretsError as exc:
                log.debug("%s not in %s: %s", name, store.describe(environment), exc)
                continue
            global_masker().add(value)
            return value
        return None

    return lookup


def secret_resolver(loaded: LoadedConfig) -> ReferenceResolver:
    """A resolver for `${env:NAME}` and `${secret:NAME}` in zerodown.yml's channels."""
    return ReferenceResolver(secret_lookup=secret_lookup(loaded))
