"""Secrets behind the `SecretStore` seam: a local encrypted store, AWS SSM, AWS Secrets Manager.

`open_secret_store` picks the backend a `secrets:` entry names and imports it lazily (boto3 and
cryptography load only when used); `masking` keeps every resolved value out of what is printed,
logged or recorded.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

# Nothing heavy at import: the instance supervisor imports `zerodown.secrets.masking`.
if TYPE_CHECKING:
    from zerodown.config.secrets import SecretSourceConfig
    from zerodown.secrets.base import SecretStore

__all__ = ["effective_sources", "open_secret_store"]


def effective_sources(configured: Sequence[SecretSourceConfig]) -> list[SecretSourceConfig]:
    """The sources of an environment: as configured, or the local store when none are."""
    from zerodown.config.secrets import SecretSourceConfig

    return list(configured) or [SecretSourceConfig(backend="local")]


def open_secret_store(
    config: SecretSourceConfig,
    *,
    state_dir: Path,
    root: Path,
    environ: Mapping[str, str] | None = None,
) -> SecretStore:
    """The store one `secrets:` entry describes (`root`: zerodown.yml's directory)."""
    if config.backend == "ssm":
        from zerodown.secrets.aws_ssm import SsmSecretStore

        return SsmSecretStore(config)
    if config.backend == "secretsmanager":
        from zerodown.secrets.aws_secretsmanager import SecretsManagerStore

        return SecretsManagerStore(config)
    from zerodown.secrets.local import KEY_FILE, STORE_FILE, LocalSecretStore

    key_file = root / config.key_file if config.key_file else state_dir / KEY_FILE
    return LocalSecretStore(
        state_dir / STORE_FILE,
        key_file=key_file,
        environ=os.environ if environ is None else environ,
    )
