"""AWS Secrets Manager: a JSON secret expands to one variable per key, a plain string to one.

JSON keys become variable names like SSM parameters do (`db-password` -> DB_PASSWORD); a plain
string secret is named after the last segment of its secret id (`prod/api-token` -> API_TOKEN).
Non-string JSON values are passed on as JSON text.
"""

from __future__ import annotations

import json
from typing import Any

from zerodown.config.secrets import SecretSourceConfig
from zerodown.errors import SecretsError
from zerodown.secrets.aws_client import AwsClient, error_code
from zerodown.secrets.base import check_name, not_found, variable_name


class SecretsManagerStore:
    """Secrets of an environment from one Secrets Manager secret."""

    def __init__(self, config: SecretSourceConfig) -> None:
        self.config = config
        self._aws = AwsClient("secretsmanager", config)

    def __repr__(self) -> str:
        return f"SecretsManagerStore({self.config.secret_id!r})"

    def describe(self, environment: str) -> str:
        """`secretsmanager:<secret id>`."""
        return self.config.describe(environment)

    async def values(self, environment: str) -> dict[str, str]:
        """The secret's variables."""
        document = await self._read(environment)
        if document is None:
            raise SecretsError(
                f"there is no secret {self.config.resolved_secret_id(environment)} in Secrets "
                "Manager: create it (`zerodown secrets set` does) or fix `secret_id:`"
            )
        if isinstance(document, str):
            return {self._plain_name(environment): document}
        return {
            variable_name(key, self.config.prefix): value
            if isinstance(value, str)
            else json.dumps(value)
            for key, value in document.items()
        }

    async def get(self, environment: str, name: str) -> str:
        """One variable's value."""
        values = await self.values(environment)
        if name not in values:
            raise not_found(name, self.describe(environment))
        return values[name]

    async def list(self, environment: str) -> tuple[str, ...]:
        """The secret's variable names."""
        return tuple(sorted(await self.values(environment)))

    async def set(self, environment: str, name: str, value: str) -> None:
        """Set one key of the JSON secret (creating the secret if it does not exist)."""
        check_name(name)
        secret_id = self.config.resolved_secret_id(environment)
        document = await self._read(environment)
        if document is None:
            text = json.dumps({name.removeprefix(self.config.prefix): value})
            await self._aws.call(
                f"create {secret_id}",
                lambda client: client.create_secret(Name=secret_id, SecretString=text),
                value,
            )
            return
        if isinstance(document, str):
            if name != self._plain_name(environment):
                raise SecretsError(
                    f"{secret_id} holds one plain value ({self._plain_name(environment)}); "
                    "store it as a JSON object to keep several variables in it"
                )
            text = value
        else:
            key = self._key_for(document, name) or name.removeprefix(self.config.prefix)
            text = json.dumps({**document, key: value})
        await self._write(secret_id, text, value)

    async def remove(self, environment: str, name: str) -> None:
        """Remove one key of the JSON secret."""
        secret_id = self.config.resolved_secret_id(environment)
        document = await self._read(environment)
        key = self._key_for(document, name) if isinstance(document, dict) else None
        if document is None or key is None:
            raise not_found(name, self.describe(environment))
        assert isinstance(document, dict)
        remaining = {k: v for k, v in document.items() if k != key}
        await self._write(secret_id, json.dumps(remaining))

    def _key_for(self, document: dict[str, Any], name: str) -> str | None:
        return next(
            (key for key in document if variable_name(key, self.config.prefix) == name), None
        )

    def _plain_name(self, environment: str) -> str:
        secret_id = self.config.resolved_secret_id(environment)
        if secret_id.startswith("arn:"):
            secret_id = secret_id.split(":secret:", 1)[-1].rsplit("-", 1)[0]
        return variable_name(secret_id.rsplit("/", 1)[-1], self.config.prefix)

    async def _write(self, secret_id: str, text: str, *secrets: str) -> None:
        await self._aws.call(
            f"write {secret_id}",
            lambda client: client.put_secret_value(SecretId=secret_id, SecretString=text),
            text,
            *secrets,
        )

    async def _read(self, environment: str) -> dict[str, Any] | str | None:
        """The secret as a JSON object or a plain string; None when it does not exist."""
        secret_id = self.config.resolved_secret_id(environment)

        def fetch(client: Any) -> dict[str, Any] | None:
            try:
                answer: dict[str, Any] = client.get_secret_value(SecretId=secret_id)
            except Exception as exc:
                if error_code(exc) == "ResourceNotFoundException":
                    return None
                raise
            return answer

        answer = await self._aws.call(f"read {secret_id}", fetch)
        if answer is None:
            return None
        text = answer.get("SecretString")
        if text is None:
            raise SecretsError(
                f"{secret_id} is a binary secret: zerodown reads string or JSON secrets only"
            )
        try:
            document = json.loads(text)
        except ValueError:
            return str(text)
        return document if isinstance(document, dict) else str(text)
