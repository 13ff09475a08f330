"""`verify:` in zerodown.yml: the checks a new revision must pass before its deployment succeeds.

A service's `verify:` applies in every environment; an environment's `verify:` adds smoke checks
(one with the same name replaces the service's), and replaces `dependencies`, `log_scan`,
`timeout` or `enabled` when it sets them (`merge_verify`).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from zerodown.config.units import Duration
from zerodown.verify.jsonpath import JsonPath, parse_json_path
from zerodown.verify.placeholders import check_body_templates, check_template

HttpMethod = Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
LogFilterPreset = Literal["error-lines", "exceptions", "slow-queries"]
# A header value may hold ${secret:NAME} / ${env:NAME}; validated per value so that an error
# points at `headers.Authorization`, not just `headers`.
HeaderValue = Annotated[str, AfterValidator(check_template)]


class _Model(BaseModel):
    # Its own base, not config.model's: model.py imports this module (one field line).
    model_config = ConfigDict(extra="forbid", frozen=True)


def _compile(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"not a regular expression: {pattern!r} ({exc})") from None
    return pattern


class _AtJsonPath(_Model):
    """A model about the value at a JSON `path` (declared by each subclass); a bare string is
    the path alone, and the path must parse."""

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, data: Any) -> Any:
        return {"path": data} if isinstance(data, str) else data

    @field_validator("path", check_fields=False)
    @classmethod
    def _path(cls, value: str) -> str:
        parse_json_path(value)
        return value


class JsonAssertion(_AtJsonPath):
    """One expectation on a JSON body: the value at `path` exists / equals / matches a regex."""

    path: str = Field(description="JSON path: $.data.token, $.items[0].id, $['a.b'].")
    exists: bool = Field(True, description="false: the path must NOT resolve.")
    equals: Any = Field(None, description="The value must equal this (JSON comparison).")
    matches: str | None = Field(None, description="The value, as text, must match this regex.")

    @field_validator("matches")
    @classmethod
    def _matches(cls, value: str | None) -> str | None:
        return None if value is None else _compile(value)

    @model_validator(mode="after")
    def _consistent(self) -> JsonAssertion:
        if not self.exists and (self.checks_equality or self.matches is not None):
            raise ValueError("exists: false cannot be combined with equals or matches")
        return self

    @property
    def checks_equality(self) -> bool:
        """Whether `equals` was given (`equals: null` is a real expectation)."""
        return "equals" in self.model_fields_set

    def json_path(self) -> JsonPath:
        """The parsed path."""
        return parse_json_path(self.path)


class SmokeCheck(_Model):
    """One HTTP request the new revision must answer as expected (the seeds' `curl` checks)."""

    name: str | None = Field(None, description="Shown in events; default 'METHOD path'.")
    method: HttpMethod = Field("GET", description="HTTP method.")
    path: str = Field(
        "/", description="Path and query, e.g. /api/login; may hold ${secret:NAME} / ${env:NAME}."
    )
    headers: dict[str, HeaderValue] = Field(
        default_factory=dict,
        description="Request headers; values may hold ${secret:NAME} (the environment's secret) "
        "or ${env:NAME} (the new instances' environment), filled in when the check runs.",
    )
    body: str | dict[str, Any] | list[Any] | None = Field(
        None,
        description="Request body: a mapping or list is sent as JSON, a string as text; its "
        "strings may hold ${secret:NAME} / ${env:NAME}.",
    )
    status: tuple[int, ...] = Field((200,), description="Accepted HTTP statuses.")
    expect_json: tuple[JsonAssertion, ...] = Field(
        (), description="Assertions on the JSON response body (a bare path means: it exists)."
    )
    expect_text: str | None = Field(None, description="Text the response body must contain.")
    max_latency: Duration | None = Field(
        None, description="Slowest acceptable response, e.g. 300ms (per request)."
    )
    timeout: Duration = Field(10.0, description="The request fails after this long.")
    via: Literal["instances", "router", "both"] = Field(
        "instances",
        description="instances: every new instance directly; router: once through the router "
        "with the route's Host header; both.",
    )

    @field_validator("status", mode="before")
    @classmethod
    def _one_status(cls, value: Any) -> Any:
        return (value,) if isinstance(value, int) else value

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"must start with '/': {value!r}")
        return check_template(value)

    @field_validator("body")
    @classmethod
    def _body(cls, value: Any) -> Any:
        return check_body_templates(value)

    @property
    def label(self) -> str:
        """The check's name in events and errors."""
        return self.name or f"{self.method} {self.path}"


class DependencyCheck(_AtJsonPath):
    """One component the app's health endpoint reports (a bare string is the path)."""

    path: str = Field(description="JSON path of its status, e.g. $.components.db.status.")
    expect: Any = Field("UP", description="The value that means the component is up.")


class DependenciesConfig(_Model):
    """DB, Redis, ... as the app's health endpoint reports them, each checked on its own."""

    endpoint: str | None = Field(
        None, description="Path of the health endpoint (default: the service's health path)."
    )
    components: dict[str, DependencyCheck] = Field(
        default_factory=dict,
        description="Name -> status path, e.g. {DB: $.components.db.status}.",
    )
    all_components: bool = Field(
        False,
        description="Also check every entry under $.components (Spring Boot actuator), "
        "expecting status UP.",
    )
    timeout: Duration = Field(10.0, description="The health request fails after this long.")

    @model_validator(mode="after")
    def _something(self) -> DependenciesConfig:
        if not self.components and not self.all_components:
            raise ValueError("name `components` or set `all_components: true`")
        if self.endpoint is not None and not self.endpoint.startswith("/"):
            raise ValueError(f"endpoint must start with '/': {self.endpoint!r}")
        return self


class LogFilterConfig(_Model):
    """An error pattern counted in the new instances' logs; more than `max` matches fail."""

    preset: LogFilterPreset | None = Field(
        None, description="error-lines (ERROR), exceptions (Exception/Traceback), slow-queries."
    )
    name: str | None = Field(None, description="Shown in events (default: the preset).")
    pattern: str | None = Field(None, description="Regular expression a line must match.")
    value_field: str | None = Field(
        None, description="A named group of `pattern` whose number must pass `threshold`."
    )
    threshold: float | None = Field(None, description="Count a line only above this value.")
    max: int = Field(0, ge=0, description="Most matches allowed in the window.")

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, data: Any) -> Any:
        return {"preset": data} if isinstance(data, str) else data

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, value: str | None) -> str | None:
        return None if value is None else _compile(value)

    @model_validator(mode="after")
    def _one_source(self) -> LogFilterConfig:
        if (self.preset is None) == (self.pattern is None):
            raise ValueError("give either `preset` or `pattern`")
        if self.pattern is not None and not self.name:
            raise ValueError("a `pattern` filter needs a `name`")
        if self.value_field and self.value_field not in re.compile(self.pattern or "").groupindex:
            raise ValueError(f"`pattern` has no group (?P<{self.value_field}>...)")
        return self

    @property
    def label(self) -> str:
        """The filter's name in events and errors."""
        return self.name or str(self.preset)


def _default_filters() -> tuple[LogFilterConfig, ...]:
    return (LogFilterConfig(preset="error-lines"),)


class LogScanConfig(_Model):
    """Error-pattern counts over the new instances' logs during a bake window."""

    window: Duration = Field(30.0, description="Bake: wait this long, then count.")
    filters: tuple[LogFilterConfig, ...] = Field(
        default_factory=_default_filters, description="Patterns and their limits."
    )


class VerifyConfig(_Model):
    """Post-deploy verification; any failed check fails the deployment (and rolls it back)."""

    enabled: bool = Field(True, description="false turns verification off (e.g. for dev).")
    smoke: tuple[SmokeCheck, ...] = Field((), description="HTTP smoke checks, run in order.")
    dependencies: DependenciesConfig | None = Field(
        None, description="Components reported by the app's health endpoint (DB, Redis)."
    )
    log_scan: LogScanConfig | None = Field(None, description="Error-log counts over a window.")
    timeout: Duration = Field(600.0, description="The whole verification fails after this long.")

    @field_validator("smoke")
    @classmethod
    def _unique(cls, value: tuple[SmokeCheck, ...]) -> tuple[SmokeCheck, ...]:
        labels = [check.label for check in value]
        duplicates = sorted({label for label in labels if labels.count(label) > 1})
        if duplicates:
            raise ValueError(f"smoke checks need distinct names: {', '.join(duplicates)}")
        return value


def merge_verify(
    service: VerifyConfig | None, environment: VerifyConfig | None
) -> VerifyConfig | None:
    """The verification one environment runs: the service's, with the environment's on top."""
    if environment is None or service is None:
        return environment or service
    replaced = {check.label: check for check in environment.smoke}
    smoke = [replaced.pop(check.label, check) for check in service.smoke]
    smoke.extend(replaced.values())
    given = environment.model_fields_set
    return VerifyConfig(
        enabled=environment.enabled if "enabled" in given else service.enabled,
        smoke=tuple(smoke),
        dependencies=environment.dependencies if "dependencies" in given else service.dependencies,
        log_scan=environment.log_scan if "log_scan" in given else service.log_scan,
        timeout=environment.timeout if "timeout" in given else service.timeout,
    )
