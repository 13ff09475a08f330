"""`scanner:` of a scan job: a scanner zerodown runs itself (pip-audit, npm audit), each with its
own settings. The scan job then reads the report it wrote and gates on it as on any report."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from zerodown.config.units import Duration

Unreachable = Literal["fail", "warn"]
_UNREACHABLE_HELP = (
    "When the scanner cannot reach its advisory data (offline, a blocked endpoint): `fail` the "
    "job, or `warn` and let the run go on unscanned. Never a silent pass."
)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PipAuditScanner(_Model):
    """`scanner: {tool: pip-audit}`: audit a Python service's pinned requirements or the packages
    installed for one interpreter against an advisory service (PyPI's by default)."""

    tool: Literal["pip-audit"] = "pip-audit"
    requirements: tuple[str, ...] = Field(
        (),
        description="Fully pinned requirement/lock files relative to the job's cwd (`pip freeze`, "
        "`uv export`, `pip-compile` output); nothing is installed. Default: requirements.txt "
        "unless `python:` is set.",
    )
    python: str | None = Field(
        None,
        description="Audit what is installed for this interpreter instead (e.g. .venv/bin/python); "
        "it needs pip.",
    )
    service: Literal["pypi", "osv"] = Field(
        "pypi", description="Advisory service: PyPI's JSON API, or the OSV API."
    )
    osv_url: str | None = Field(
        None, description="service osv: the OSV query URL of a mirror (default: OSV's own)."
    )
    ignore: tuple[str, ...] = Field((), description="Vulnerability IDs to ignore (PYSEC-, GHSA-).")
    request_timeout: Duration = Field(15.0, gt=0, description="Per request to the service.")
    unreachable: Unreachable = Field("fail", description=_UNREACHABLE_HELP)
    binary: str | None = Field(
        None,
        description="The pip-audit executable (default: `pip-audit` on PATH, else the one "
        "installed with zerodown's `scan` extra).",
    )

    @model_validator(mode="after")
    def _check_source(self) -> PipAuditScanner:
        if self.requirements and self.python:
            raise ValueError("pip-audit audits `requirements:` or `python:`, not both")
        if self.osv_url and self.service != "osv":
            raise ValueError("`osv_url:` needs `service: osv`")
        return self

    @property
    def requirement_files(self) -> tuple[str, ...]:
        """The files to audit (requirements.txt when neither files nor `python:` are given)."""
        if self.requirements or self.python:
            return self.requirements
        return ("requirements.txt",)


class NpmAuditScanner(_Model):
    """`scanner: {tool: npm-audit}`: `npm audit` of a package-lock.json against the registry's
    advisory endpoint (no node_modules needed)."""

    tool: Literal["npm-audit"] = "npm-audit"
    lockfile: str = Field("package-lock.json", description="The lock file, relative to cwd.")
    registry: str | None = Field(
        None, description="Registry whose advisory endpoint answers (default: npm's configured)."
    )
    omit: tuple[Literal["dev", "optional", "peer"], ...] = Field(
        (), description="Dependency types left out of the audit (e.g. [dev])."
    )
    unreachable: Unreachable = Field("fail", description=_UNREACHABLE_HELP)
    binary: str | None = Field(None, description="The npm executable (default: `npm` on PATH).")


ScannerConfig = Annotated[PipAuditScanner | NpmAuditScanner, Field(discriminator="tool")]


SCANNER_TOOLS = ("pip-audit", "npm-audit")


def scanner_by_name(value: Any) -> Any:
    """`scanner: pip-audit` is short for `scanner: {tool: pip-audit}`; any other tool is refused
    with what to write instead."""
    given = {"tool": value} if isinstance(value, str) else value
    if not isinstance(given, dict):
        return given  # pydantic says what is wrong with it
    if "tool" not in given:
        raise ValueError("`scanner:` needs `tool: pip-audit` or `tool: npm-audit`")
    tool = given["tool"]
    if tool not in SCANNER_TOOLS:
        raise ValueError(
            f"{tool!r} is not a built-in scanner: write pip-audit or npm-audit, or run it in "
            "`command:` and name its report in `report:`"
        )
    return given
