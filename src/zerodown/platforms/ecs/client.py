"""boto3 for the ECS platform: imported lazily, one client per AWS service, every call in a
worker thread (boto3 blocks), and every botocore error turned into one `PlatformError` sentence.

Throttling is retried by botocore (its `standard` retry mode, with backoff); what is left of it
arrives as `Throttled`, which the rollout follower retries on its own, slower clock.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from zerodown.errors import PlatformError

RETRIES = {"mode": "standard", "total_max_attempts": 5}  # botocore backs off between them

_SERVICE_NAMES = {"ecs": "ECS", "elbv2": "ELB"}
_THROTTLED = {"ThrottlingException", "Throttling", "RequestLimitExceeded", "TooManyRequests"}
_DENIED = {"AccessDeniedException", "AccessDenied", "UnauthorizedOperation"}
_BAD_CREDENTIALS = {
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "InvalidClientTokenId",
    "ExpiredTokenException",
}


class Throttled(PlatformError):
    """AWS still throttled a call after botocore's retries."""


class AwsApi(Protocol):
    """The AWS calls the ECS platform makes (boto3 method names, keyword parameters)."""

    async def call(self, aws_service: str, operation: str, /, **params: Any) -> dict[str, Any]:
        """`operation` of `aws_service` (`ecs`, `elbv2`); PlatformError with a sentence on
        failure."""
        ...

    def input_members(self, service: str, operation: str) -> frozenset[str]:
        """The input member names of `operation` in the installed botocore's service model."""
        ...


class BotoApi:
    """`AwsApi` over boto3 clients, made on first use."""

    def __init__(
        self,
        *,
        region: str | None,
        endpoint_url: str | None,
        clients: dict[str, Any] | None = None,
    ) -> None:
        self.region = region
        self.endpoint_url = endpoint_url
        self._clients: dict[str, Any] = dict(clients or {})  # given: botocore Stubbers in tests

    async def call(self, aws_service: str, operation: str, /, **params: Any) -> dict[str, Any]:
        """Run one call in a thread; errors become PlatformError sentences."""

        def run() -> dict[str, Any]:
            return dict(getattr(self.client(aws_service), operation)(**params))

        try:
            return await asyncio.to_thread(run)
        except PlatformError:
            raise
        except Exception as exc:
            action = self.api_name(aws_service, operation)
            raise translate(exc, aws_service, action, self) from None

    def input_members(self, service: str, operation: str) -> frozenset[str]:
        """Read from botocore's model at run time, so new input fields need no zerodown change."""
        model = self.client(service).meta.service_model
        shape = model.operation_model(self.api_name(service, operation)).input_shape
        return frozenset(shape.members)

    def api_name(self, service: str, operation: str) -> str:
        """`describe_services` -> `DescribeServices`, as botocore maps it."""
        mapping: dict[str, str] = self.client(service).meta.method_to_api_mapping
        return mapping.get(operation, operation)

    def client(self, service: str) -> Any:
        """The boto3 client of `service` (boto3 is imported here, on first use)."""
        if service not in self._clients:
            try:
                import boto3
                from botocore.config import Config
            except ImportError:
                raise PlatformError(
                    "the ecs platform needs boto3: pip install 'zerodown[aws]'"
                ) from None
            try:
                self._clients[service] = boto3.session.Session().client(
                    service,  # type: ignore[call-overload]  # one of ecs, elbv2
                    region_name=self.region,
                    endpoint_url=self.endpoint_url,
                    config=Config(retries=RETRIES),  # type: ignore[arg-type]  # a TypedDict
                )
            except Exception as exc:
                raise translate(exc, service, "connect", self) from None
        return self._clients[service]


def translate(exc: BaseException, service: str, action: str, api: BotoApi) -> PlatformError:
    """One sentence a user can act on, naming the action (`ecs:UpdateService`)."""
    name = type(exc).__name__
    what = f"{service}:{action}"
    label = _SERVICE_NAMES.get(service, service)
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and response.get("Error", {}).get("Code"):
        code = str(response["Error"]["Code"])
        detail = str(response["Error"].get("Message", "")).strip()
        if detail.startswith("<"):  # an HTML error page (a proxy, moto's HTTP 500) says nothing
            detail = ""
        detail = detail.splitlines()[0] if detail else ""
        if code in _THROTTLED:
            return Throttled(
                f"AWS throttled {what} after {RETRIES['total_max_attempts']} attempts; "
                "try again in a minute, or raise the account's API rate limit"
            )
        if code in _DENIED:
            return PlatformError(
                f"access denied to {what}: allow the action {what} for this identity (IAM)"
                + (f" ({detail})" if detail else "")
            )
        if code in _BAD_CREDENTIALS:
            return PlatformError(
                f"AWS refused the credentials for {what} ({code}): log in again or fix "
                "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / the profile"
            )
        if code == "ClusterNotFoundException":
            return PlatformError(
                f"{label} has no such cluster in {api.region or 'the default region'} ({what}): "
                "check `platform.cluster` and `platform.region`"
            )
        if code in ("ServiceNotFoundException", "ServiceNotActiveException"):
            return PlatformError(
                f"{label} has no active service for {what}: check `platform.service` and "
                "`platform.cluster`"
            )
        return PlatformError(f"{label} refused {what}: {code}" + (f": {detail}" if detail else ""))
    if name in ("NoCredentialsError", "PartialCredentialsError"):
        return PlatformError(
            f"cannot call {what}: no AWS credentials; configure a profile, AWS_ACCESS_KEY_ID "
            "and AWS_SECRET_ACCESS_KEY, or a role"
        )
    if name == "NoRegionError":
        return PlatformError(
            f"cannot call {what}: no AWS region; set `platform.region` or AWS_REGION"
        )
    if name in ("EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError"):
        where = api.endpoint_url or f"{label} in {api.region or 'the default region'}"
        return PlatformError(f"cannot call {what}: {where} did not answer; check the network")
    if name == "ParamValidationError":  # botocore checks input client-side
        return PlatformError(f"zerodown sent {what} input botocore refused: {exc}")
    return PlatformError(f"cannot call {what}: {name}: {exc}")
