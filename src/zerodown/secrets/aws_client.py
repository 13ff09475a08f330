"""boto3 for the AWS secret backends: imported lazily, errors translated to `SecretsError`.

boto3 loads only when an AWS backend is used; `endpoint_url` points it at LocalStack or
`moto_server`. Every call runs in a worker thread (boto3 blocks) so the event loop keeps serving.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from zerodown.config.secrets import SecretSourceConfig
from zerodown.errors import SecretsError

T = TypeVar("T")

_ADVICE = {
    "AccessDenied": "grant this identity read access to it (IAM)",
    "AccessDeniedException": "grant this identity read access to it (IAM)",
    "UnrecognizedClientException": "the AWS credentials are not valid",
    "InvalidSignatureException": "the AWS credentials are not valid",
    "ExpiredTokenException": "the AWS session expired: log in again",
    "ThrottlingException": "AWS throttled the request: try again in a moment",
}


class AwsClient:
    """One boto3 client of `service`, made on first use, with errors turned into SecretsError."""

    def __init__(self, service: str, config: SecretSourceConfig) -> None:
        self.service = service
        self.config = config
        self._client: Any = None

    async def call(self, doing: str, fn: Callable[[Any], T], *secrets: str) -> T:
        """Run `fn(client)` in a thread; `doing` says what for messages, `secrets` are values
        that must not appear in an error (a write's value)."""

        def run() -> T:
            return fn(self._make())

        try:
            return await asyncio.to_thread(run)
        except SecretsError:
            raise
        except Exception as exc:
            raise translate(exc, doing, self.config, secrets) from None

    def _make(self) -> Any:
        if self._client is None:
            try:
                import boto3
            except ImportError:
                raise SecretsError(
                    f"the {self.config.backend} secret backend needs boto3: "
                    "pip install 'zerodown[aws]'"
                ) from None
            session = boto3.session.Session()
            self._client = session.client(
                self.service,  # type: ignore[call-overload]  # the name is one of ssm, secretsmanager
                region_name=self.config.region,
                endpoint_url=self.config.endpoint_url,
            )
        return self._client


def error_code(exc: BaseException) -> str | None:
    """The AWS error code of a botocore ClientError, else None."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        return str(code) if code else None
    return None


def translate(
    exc: BaseException, doing: str, config: SecretSourceConfig, secrets: Iterable[str] = ()
) -> SecretsError:
    """A SecretsError with a sentence a user can act on; never a secret value."""
    name = type(exc).__name__
    code = error_code(exc)
    if code is not None:
        detail = str(getattr(exc, "response", {}).get("Error", {}).get("Message", ""))
        advice = _ADVICE.get(code, "")
        text = f"AWS {config.backend} refused to {doing}: {code}"
        if detail and code not in ("ValidationException",):  # validation echoes input values
            text += f" ({detail})"
        if advice:
            text += f"; {advice}"
        return SecretsError(_scrub(text, secrets))
    if name == "NoCredentialsError" or name == "PartialCredentialsError":
        return SecretsError(
            f"cannot {doing}: no AWS credentials; configure a profile, AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, or an instance role"
        )
    if name == "NoRegionError":
        return SecretsError(
            f"cannot {doing}: no AWS region; set `region:` in the secrets source or AWS_REGION"
        )
    if name in ("EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError"):
        where = config.endpoint_url or "AWS"
        return SecretsError(f"cannot {doing}: {where} did not answer; check the network")
    return SecretsError(_scrub(f"cannot {doing}: {name}: {exc}", secrets))


def _scrub(text: str, secrets: Iterable[str]) -> str:
    for value in secrets:
        if value:
            text = text.replace(value, "****")
    return text
