"""`secrets:` of an environment: where its secrets come from (one entry per source, in order).

```yaml
environments:
  prod:
    secrets:
      - backend: ssm                 # the seeds' Parameter Store path, recursive, decrypted
        path: /tpt-api/prod/
        region: ap-northeast-2
      - backend: secretsmanager      # a JSON secret expands to one variable per key
        secret_id: tpt-api/prod/db
      - backend: local               # `zerodown secrets set --env prod NAME`
```
Later sources win when two define the same variable. Without `secrets:` an environment reads the
local encrypted store, so `zerodown secrets set` works with no configuration at all.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

SecretBackend = Literal["local", "ssm", "secretsmanager"]


class SecretSourceConfig(BaseModel):
    """One place an environment's secrets come from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: SecretBackend = Field(
        "local", description="local (encrypted file), ssm (Parameter Store), secretsmanager."
    )
    path: str | None = Field(
        None,
        description="ssm: parameter path read recursively, e.g. /tpt-api/prod/; "
        "`{environment}` is replaced by the environment's name.",
    )
    secret_id: str | None = Field(
        None,
        description="secretsmanager: secret name or ARN; `{environment}` is replaced. A JSON "
        "object expands to one variable per key, a plain string to one variable.",
    )
    region: str | None = Field(None, description="AWS region (default: the AWS configuration).")
    endpoint_url: str | None = Field(
        None, description="AWS endpoint override, e.g. http://127.0.0.1:4566 for LocalStack."
    )
    prefix: str = Field("", description="Prepended to every variable name, e.g. APP_.")
    key_file: str | None = Field(
        None,
        description="local: the key file, relative to zerodown.yml (default: "
        "<state_dir>/secret.key); ZERODOWN_SECRET_KEY wins when set.",
    )

    @model_validator(mode="after")
    def _check_backend(self) -> SecretSourceConfig:
        if self.backend == "ssm":
            if not self.path or not self.path.startswith("/"):
                raise ValueError("backend ssm needs `path:`, a parameter path such as /app/prod/")
        elif self.path is not None:
            raise ValueError(f"`path:` is for backend ssm, not {self.backend}")
        if self.backend == "secretsmanager" and not self.secret_id:
            raise ValueError("backend secretsmanager needs `secret_id:` (a secret name or ARN)")
        if self.backend != "secretsmanager" and self.secret_id is not None:
            raise ValueError(f"`secret_id:` is for backend secretsmanager, not {self.backend}")
        if self.backend != "local" and self.key_file is not None:
            raise ValueError(f"`key_file:` is for backend local, not {self.backend}")
        if self.prefix and not self.prefix.replace("_", "A").isalnum():
            raise ValueError(f"prefix must be letters, digits and '_', not {self.prefix!r}")
        return self

    def describe(self, environment: str) -> str:
        """Where this source reads, for messages (never a value)."""
        if self.backend == "ssm":
            return f"ssm:{self.resolved_path(environment)}"
        if self.backend == "secretsmanager":
            return f"secretsmanager:{self.resolved_secret_id(environment)}"
        return "local"

    def resolved_path(self, environment: str) -> str:
        """The SSM path with `{environment}` filled in, ending in '/'."""
        path = (self.path or "/").replace("{environment}", environment)
        return path if path.endswith("/") else path + "/"

    def resolved_secret_id(self, environment: str) -> str:
        """The Secrets Manager id with `{environment}` filled in."""
        return (self.secret_id or "").replace("{environment}", environment)
