"""The `SecretStore` seam: an environment's secrets, by name, from one backend.

Backends (one module each): `local` (an encrypted file per project), `aws_ssm` (Parameter Store
by path) and `aws_secretsmanager`. Each translates its library's errors into `SecretsError` with a
sentence a user can act on, and no error, repr or event ever carries a secret value.
"""

from __future__ import annotations

import re
from typing import Protocol

from zerodown.errors import SecretsError

VARIABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class SecretStore(Protocol):
    """Reads and writes the secrets of an environment; values are environment variable values."""

    def describe(self, environment: str) -> str:
        """Where the secrets of `environment` live, for messages (e.g. `ssm:/app/prod/`)."""
        ...

    async def values(self, environment: str) -> dict[str, str]:
        """Every secret of `environment` as {VARIABLE_NAME: value} (what a deployment injects)."""
        ...

    async def get(self, environment: str, name: str) -> str:
        """One secret's value; `SecretsError` when there is no such secret."""
        ...

    async def list(self, environment: str) -> tuple[str, ...]:
        """The variable names of `environment`'s secrets, sorted (never their values)."""
        ...

    async def set(self, environment: str, name: str, value: str) -> None:
        """Create or replace one secret."""
        ...

    async def remove(self, environment: str, name: str) -> None:
        """Delete one secret; `SecretsError` when there is no such secret."""
        ...


def variable_name(raw: str, prefix: str = "") -> str:
    """An environment variable name from a parameter or JSON key: upper-cased, non-alphanumerics
    as `_`, never starting with a digit (`db-password` -> DB_PASSWORD)."""
    name = re.sub(r"[^A-Za-z0-9]", "_", raw).upper()
    name = prefix + name
    return f"_{name}" if name[:1].isdigit() else name


def check_name(name: str) -> str:
    """`name` if it is a valid environment variable name, else `SecretsError` saying why."""
    if not VARIABLE_NAME.match(name):
        raise SecretsError(
            f"{name!r} is not an environment variable name: use letters, digits and '_', "
            "not starting with a digit (e.g. DB_PASSWORD)"
        )
    return name


def not_found(name: str, where: str) -> SecretsError:
    """The error for a missing secret, naming where it was looked up."""
    return SecretsError(
        f"no secret {name} in {where}: `zerodown secrets list` shows what exists, "
        "`zerodown secrets set` adds it"
    )
