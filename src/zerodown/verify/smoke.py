"""Smoke checks: one HTTP request per check and target, judged on status, body and latency.

Targets are the new instances themselves (host:port, so a bad instance cannot hide behind a good
one) and, when a check asks for it, the router with the route's Host header (what users reach).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from zerodown.clock import Clock
from zerodown.config.verify import JsonAssertion, SmokeCheck
from zerodown.runtimes.base import InstanceInfo
from zerodown.verify.jsonpath import MISSING, json_equal
from zerodown.verify.placeholders import Placeholder, render
from zerodown.verify.results import CheckResult, shown


@dataclass(frozen=True)
class SmokeTarget:
    """Where a smoke check is sent: a base URL, and the Host header the route expects."""

    name: str  # an instance id, or "router"
    base_url: str  # http://127.0.0.1:41234
    host_header: str | None = None

    @classmethod
    def of_instance(cls, info: InstanceInfo) -> SmokeTarget:
        """An instance, addressed directly."""
        host = f"[{info.host}]" if ":" in info.host else info.host
        return cls(info.instance_id, f"http://{host}:{info.port}")


def router_target(listen: str, hosts: Sequence[str]) -> SmokeTarget:
    """The router at `listen` (host:port as in zerodown.yml), with the route's first Host."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    # A wildcard listen address is not an address to connect to; loopback reaches it.
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    shown_host = f"[{host}]" if ":" in host else host
    return SmokeTarget("router", f"http://{shown_host}:{port}", hosts[0] if hosts else None)


def check_assertion(assertion: JsonAssertion, document: Any) -> str | None:
    """None when the assertion holds on `document`, else a sentence saying what was found."""
    path = assertion.path
    value = assertion.json_path().find(document)
    if not assertion.exists:
        return None if value is MISSING else f"{path} should be absent, found {shown(value)}"
    if value is MISSING:
        return f"{path} is missing"
    if assertion.checks_equality and not json_equal(value, assertion.equals):
        return f"{path} is {shown(value)}, want {shown(assertion.equals)}"
    if assertion.matches is not None:
        text = value if isinstance(value, str) else json.dumps(value)
        if re.search(assertion.matches, text) is None:
            return f"{path} is {shown(value)}, which does not match /{assertion.matches}/"
    return None


@dataclass(frozen=True, repr=False)
class SmokeRequest:
    """What a check actually sends: its path, headers and body with placeholders filled in.

    It may hold secret values, so its repr shows none of them; results name the check as
    configured (`check.path`, `check.label`), never this.
    """

    path: str
    headers: Mapping[str, str]
    body: Any

    @classmethod
    def of(
        cls, check: SmokeCheck, lookup: Callable[[Placeholder], str] | None = None
    ) -> SmokeRequest:
        """`check`'s request, placeholders replaced by `lookup` (none without placeholders)."""

        def refuse(placeholder: Placeholder) -> str:
            raise KeyError(f"no value given for {placeholder}")

        fill = lookup or refuse
        return cls(
            render(check.path, fill),
            {name: render(value, fill) for name, value in check.headers.items()},
            render(check.body, fill),
        )

    def __repr__(self) -> str:
        return f"SmokeRequest({len(self.headers)} header(s), values hidden)"


def _request_arguments(
    check: SmokeCheck, request: SmokeRequest, target: SmokeTarget
) -> dict[str, Any]:
    headers = dict(request.headers)
    if target.host_header and not any(name.lower() == "host" for name in headers):
        headers["Host"] = target.host_header
    arguments: dict[str, Any] = {"headers": headers, "timeout": check.timeout}
    if isinstance(request.body, str):
        arguments["content"] = request.body.encode()
        if not any(name.lower() == "content-type" for name in headers):
            headers["Content-Type"] = "text/plain; charset=utf-8"
    elif request.body is not None:
        arguments["json"] = request.body
    return arguments


async def run_smoke_check(
    check: SmokeCheck,
    target: SmokeTarget,
    client: httpx.AsyncClient,
    clock: Clock,
    request: SmokeRequest | None = None,
) -> CheckResult:
    """Send the check's request (`request`: with its placeholders filled in) to `target` and
    judge the answer; never raises for the app's failures (they are the result)."""
    sent = request or SmokeRequest.of(check)
    numbers: dict[str, Any] = {"method": check.method, "path": check.path}
    started = clock.monotonic()
    try:
        response = await client.request(
            check.method, target.base_url + sent.path, **_request_arguments(check, sent, target)
        )
    except httpx.TimeoutException:
        detail = f"no answer within {check.timeout:g} s"
        return CheckResult(check.label, "smoke", target.name, False, detail, numbers)
    except httpx.HTTPError as exc:
        detail = f"request failed: {exc or type(exc).__name__}"
        return CheckResult(check.label, "smoke", target.name, False, detail, numbers)
    latency_ms = (clock.monotonic() - started) * 1000
    numbers |= {
        "status": response.status_code,
        "latency_ms": round(latency_ms, 1),
        "bytes": len(response.content),
    }
    problems = _judge(check, response, latency_ms)
    detail = "; ".join(problems) or f"{response.status_code} in {latency_ms:.0f} ms"
    return CheckResult(check.label, "smoke", target.name, not problems, detail, numbers)


def _judge(check: SmokeCheck, response: httpx.Response, latency_ms: float) -> list[str]:
    problems: list[str] = []
    if response.status_code not in check.status:
        wanted = " or ".join(str(s) for s in check.status)
        problems.append(f"status {response.status_code}, want {wanted}")
    if check.max_latency is not None and latency_ms > check.max_latency * 1000:
        problems.append(f"latency {latency_ms:.0f} ms > budget {check.max_latency * 1000:.0f} ms")
    if check.expect_json:
        try:
            document = response.json()
        except ValueError:
            problems.append(f"body is not JSON: {shown(response.text)}")
        else:
            for assertion in check.expect_json:
                problem = check_assertion(assertion, document)
                if problem is not None:
                    problems.append(problem)
    if check.expect_text is not None and check.expect_text not in response.text:
        problems.append(f"body does not contain {check.expect_text!r}")
    return problems
