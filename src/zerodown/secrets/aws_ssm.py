"""AWS SSM Parameter Store: every parameter under a path (recursive, decrypted) is one variable.

The variable's name is the parameter's last path segment, upper-cased, every non-alphanumeric
character as `_` (`/tpt-api/prod/db-password` -> DB_PASSWORD), after the source's prefix.
"""

from __future__ import annotations

from typing import Any

from zerodown.config.secrets import SecretSourceConfig
from zerodown.errors import SecretsError
from zerodown.secrets.aws_client import AwsClient
from zerodown.secrets.base import check_name, not_found, variable_name


class SsmSecretStore:
    """Secrets of an environment from one Parameter Store path."""

    def __init__(self, config: SecretSourceConfig) -> None:
        self.config = config
        self._aws = AwsClient("ssm", config)

    def __repr__(self) -> str:
        return f"SsmSecretStore({self.config.path!r})"

    def describe(self, environment: str) -> str:
        """`ssm:<path>`."""
        return self.config.describe(environment)

    async def values(self, environment: str) -> dict[str, str]:
        """Every parameter under the path, decrypted, by variable name."""
        found = await self._parameters(environment, decrypt=True)
        return {name: str(parameter["Value"]) for name, parameter in found.items()}

    async def get(self, environment: str, name: str) -> str:
        """One parameter's value by its variable name."""
        values = await self.values(environment)
        if name not in values:
            raise not_found(name, self.describe(environment))
        return values[name]

    async def list(self, environment: str) -> tuple[str, ...]:
        """Variable names under the path (values are not decrypted for this)."""
        return tuple(sorted(await self._parameters(environment, decrypt=False)))

    async def set(self, environment: str, name: str, value: str) -> None:
        """Write `<path><name>` as a SecureString (replacing it if it exists)."""
        check_name(name)
        existing = await self._parameters(environment, decrypt=False)
        if name in existing:
            parameter = str(existing[name]["Name"])
        else:
            parameter = self.config.resolved_path(environment) + name.removeprefix(
                self.config.prefix
            )
        await self._aws.call(
            f"write {parameter}",
            lambda client: client.put_parameter(
                Name=parameter, Value=value, Type="SecureString", Overwrite=True
            ),
            value,
        )

    async def remove(self, environment: str, name: str) -> None:
        """Delete the parameter whose variable name is `name`."""
        existing = await self._parameters(environment, decrypt=False)
        if name not in existing:
            raise not_found(name, self.describe(environment))
        parameter = str(existing[name]["Name"])
        await self._aws.call(
            f"delete {parameter}", lambda client: client.delete_parameter(Name=parameter)
        )

    async def _parameters(self, environment: str, *, decrypt: bool) -> dict[str, dict[str, Any]]:
        path = self.config.resolved_path(environment)
        query = path.rstrip("/") or "/"

        def fetch(client: Any) -> list[dict[str, Any]]:
            paginator = client.get_paginator("get_parameters_by_path")
            pages = paginator.paginate(Path=query, Recursive=True, WithDecryption=decrypt)
            return [parameter for page in pages for parameter in page.get("Parameters", [])]

        parameters = await self._aws.call(f"read the parameters under {path}", fetch)
        found: dict[str, dict[str, Any]] = {}
        for parameter in parameters:
            full = str(parameter["Name"])
            name = variable_name(full.rsplit("/", 1)[-1], self.config.prefix)
            if name in found:
                raise SecretsError(
                    f"{found[name]['Name']} and {full} both become {name}: rename one of them "
                    "(the last path segment names the variable)"
                )
            found[name] = parameter
        return found
