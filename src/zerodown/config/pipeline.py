"""The `pipeline:` section of zerodown.yml: jobs (a DAG), per-environment gates, retention.

Defaults come from the seeds: prod needs 2 approvers and waits 5 minutes, and must pass a
security scan; dev needs neither. Artifacts keep `latest` + the last 10, untagged ones 7 days,
dev builds 30 days.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from zerodown.config.scanners import ScannerConfig, scanner_by_name
from zerodown.config.units import Duration

JobKind = Literal["command", "test", "build", "scan", "migrations", "publish", "deploy"]
Severity = Literal["CRITICAL", "HIGH", "MEDIUM", "LOW", "UNKNOWN"]
ScanFormat = Literal["auto", "trivy", "pip-audit", "npm-audit", "sarif"]
PRODUCTION_NAMES = frozenset({"prod", "production"})
_JOB_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_NEEDS_COMMAND = ("command", "test", "build")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class PipelineJobConfig(_Model):
    """One job: a command (or a built-in check) that runs once its `needs` have succeeded."""

    kind: JobKind = Field("command", description="Built-in stage kind, or a plain command.")
    command: str | None = Field(None, description="Shell command (test, build, scan, command).")
    needs: tuple[str, ...] = Field((), description="Jobs that must succeed before this one.")
    cwd: str = Field(".", description="Working directory, relative to the checked-out commit.")
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment.")
    timeout: Duration = Field(1800.0, description="The job fails after this long.")
    condition: str | None = Field(
        None,
        alias="if",
        description="Run only when true, e.g. \"branch == 'main' and inputs.fast != 'true'\".",
    )
    junit: tuple[str, ...] = Field(
        ("**/TEST-*.xml", "**/junit*.xml"), description="test: JUnit XML report globs (cwd)."
    )
    output: str | None = Field(None, description="build: the directory or file it produces.")
    scanner: ScannerConfig | None = Field(
        None,
        description="scan: a scanner zerodown runs itself (pip-audit, npm-audit) after `command:`, "
        "if any; without it `command:` runs the scanner and writes `report:`.",
    )
    report: str | None = Field(
        None,
        description="scan: the report file the scanner writes (with `scanner:`, where zerodown "
        "writes it; default .zerodown-scan-<job>.json).",
    )
    format: ScanFormat = Field("auto", description="scan: report format (auto-detected).")
    fail_on: tuple[Severity, ...] = Field(
        ("CRITICAL", "HIGH"), description="scan: severities that fail the gate."
    )
    path: str = Field("db/migration", description="migrations: folder of V<n>__<desc>.sql files.")
    dialect: str | None = Field(None, description="migrations: SQL dialect (mysql, postgres...).")
    services: tuple[str, ...] = Field((), description="deploy: services to deploy (default all).")

    _scanner_by_name = field_validator("scanner", mode="before")(scanner_by_name)

    @model_validator(mode="after")
    def _check_kind(self) -> PipelineJobConfig:
        if self.kind in _NEEDS_COMMAND and not (self.command or "").strip():
            raise ValueError(f"a {self.kind} job needs `command:`")
        if self.kind == "scan" and self.scanner is None:
            if not (self.command or "").strip():
                raise ValueError(
                    "a scan job needs `scanner:` (pip-audit or npm-audit, run by zerodown) or "
                    "`command:` with `report:`"
                )
            if not self.report:
                raise ValueError(
                    "a scan job needs `report:` (the SARIF/JSON file its command writes)"
                )
        if self.scanner is not None and self.kind != "scan":
            raise ValueError("`scanner:` belongs to a scan job (kind: scan)")
        if self.scanner is not None and self.format != "auto":
            raise ValueError(f"`format:` comes from `scanner: {self.scanner.tool}`: leave it out")
        return self


class PipelineEnvironmentConfig(_Model):
    """Gates in front of deploying to one environment (unset: the seeds' defaults)."""

    approvals: int | None = Field(
        None, ge=0, le=20, description="Distinct approvers needed (default: prod 2, others 0)."
    )
    wait_timer: Duration | None = Field(
        None,
        description="Wait before deploying (default: 5 minutes where approvals are required, "
        "i.e. prod; 0 otherwise, also with `approvals: 0`).",
    )
    scan: Literal["required", "optional"] | None = Field(
        None, description="Whether a failed/missing scan blocks (default: prod required)."
    )
    approval_timeout: Duration = Field(86400.0, description="A run waiting longer fails.")


class RetentionConfig(_Model):
    """Which published revisions `zerodown artifacts prune` keeps."""

    keep_last: int = Field(10, ge=1, description="The newest revisions always kept.")
    untagged_days: float = Field(7, ge=0, description="Revisions without a version tag.")
    dev_days: float = Field(30, ge=0, description="dev-<timestamp> builds.")


class PipelineConfig(_Model):
    """The pipeline zerodown runs for a push: test -> build -> scan -> publish -> deploy."""

    jobs: dict[str, PipelineJobConfig] = Field(description="Jobs by name; `needs` makes a DAG.")
    max_parallel: int = Field(4, ge=1, le=64, description="Jobs running at once.")
    environments: dict[str, PipelineEnvironmentConfig] = Field(
        default_factory=dict, description="Per-environment gates."
    )
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    webhook_secret_env: str = Field(
        "ZERODOWN_WEBHOOK_SECRET",
        description="Environment variable holding the GitHub webhook secret.",
    )
    allow_skip_tests: bool = Field(
        True, description="Accept the recorded emergency input skip_tests=true."
    )

    @model_validator(mode="after")
    def _check_graph(self) -> PipelineConfig:
        from zerodown.errors import PipelineDefinitionError
        from zerodown.pipeline.conditions import check as check_condition
        from zerodown.pipeline.dag import check_graph  # the DAG lives with the runner

        for name in self.jobs:
            if not _JOB_NAME.match(name):
                raise ValueError(f"job name {name!r}: use lowercase letters, digits, - and _")
        try:
            check_graph({name: job.needs for name, job in self.jobs.items()})
            for job in self.jobs.values():
                check_condition(job.condition)  # a bad `if:` fails at load, not mid-run
        except PipelineDefinitionError as exc:  # pydantic reports ValueErrors with the field
            raise ValueError(str(exc)) from exc
        return self

    def gates(self, environment: str) -> ResolvedGates:
        """The gates of `environment`, with the seeds' defaults filled in."""
        given = self.environments.get(environment, PipelineEnvironmentConfig())
        prod = environment in PRODUCTION_NAMES
        approvals = given.approvals if given.approvals is not None else (2 if prod else 0)
        # The seeds' 5-minute timer is a window to react before an approved deploy starts:
        # without approvals it would only be an unannounced wait.
        default_timer = 300.0 if approvals else 0.0
        return ResolvedGates(
            approvals=approvals,
            wait_timer=given.wait_timer if given.wait_timer is not None else default_timer,
            scan_required=(given.scan or ("required" if prod else "optional")) == "required",
            approval_timeout=given.approval_timeout,
        )


class ResolvedGates(BaseModel):
    """`PipelineEnvironmentConfig` with every default applied."""

    model_config = ConfigDict(frozen=True)

    approvals: int
    wait_timer: float
    scan_required: bool
    approval_timeout: float
