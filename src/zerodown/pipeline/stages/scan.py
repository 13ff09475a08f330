"""scan stage: read a scanner's report (Trivy JSON, pip-audit JSON, npm audit JSON, SARIF) and
apply the severity gate (`fail_on: [CRITICAL, HIGH]`)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zerodown.errors import PipelineError

SEVERITIES = ("CRITICAL", "HIGH", "MEDIUM", "LOW", "UNKNOWN")
# pip-audit reports known vulnerabilities without a severity: a known, fixable vulnerability in
# a dependency is treated as HIGH so the default gate stops it.
PIP_AUDIT_SEVERITY = "HIGH"
_NPM = {"critical": "CRITICAL", "high": "HIGH", "moderate": "MEDIUM", "low": "LOW", "info": "LOW"}
_SARIF_LEVEL = {"error": "HIGH", "warning": "MEDIUM", "note": "LOW", "none": "LOW"}


@dataclass(frozen=True)
class Finding:
    """One problem a scanner found."""

    id: str
    severity: str
    where: str


@dataclass
class ScanReport:
    """The findings of one report and the gate's verdict."""

    format: str
    findings: list[Finding] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """Findings per severity (every severity listed)."""
        counted = Counter(f.severity for f in self.findings)
        return {severity: counted.get(severity, 0) for severity in SEVERITIES}

    def blocking(self, fail_on: Sequence[str]) -> list[Finding]:
        """Findings whose severity is in `fail_on`."""
        wanted = {s.upper() for s in fail_on}
        return [f for f in self.findings if f.severity in wanted]

    def describe(self, fail_on: Sequence[str]) -> str:
        """One line: '2 CRITICAL, 1 HIGH, 4 MEDIUM (gate: CRITICAL, HIGH)'."""
        counts = ", ".join(f"{n} {s}" for s, n in self.counts().items() if n) or "no findings"
        return f"{counts} (gate: {', '.join(fail_on) or 'none'})"


def read_report(path: Path, fmt: str = "auto") -> ScanReport:
    """Parse a scanner report; raise `PipelineError` if it is missing or not understood."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PipelineError(f"the scanner wrote no report at {path}") from None
    except (OSError, ValueError) as exc:
        raise PipelineError(f"the scan report {path} is not JSON: {exc}") from exc
    kind = detect_format(data) if fmt == "auto" else fmt
    parser = _PARSERS.get(kind)
    if parser is None:
        raise PipelineError(
            f"cannot tell which scanner wrote {path}: set `format:` to trivy, pip-audit, "
            "npm-audit or sarif"
        )
    return ScanReport(kind, parser(data))


def detect_format(data: Any) -> str:
    """trivy, pip-audit, npm-audit, sarif, or '' when unknown."""
    if isinstance(data, dict):
        if "runs" in data and ("$schema" in data or "version" in data):
            return "sarif"
        if "Results" in data or "SchemaVersion" in data:
            return "trivy"
        if "dependencies" in data:
            return "pip-audit"
        if "vulnerabilities" in data or "advisories" in data or "auditReportVersion" in data:
            return "npm-audit"
    if isinstance(data, list) and all(isinstance(d, dict) and "vulns" in d for d in data):
        return "pip-audit"  # pip-audit before 2.0 wrote a bare list
    return ""


def _severity(value: Any) -> str:
    text = str(value or "").upper()
    return text if text in SEVERITIES else "UNKNOWN"


def _trivy(data: dict[str, Any]) -> list[Finding]:
    found = []
    for result in data.get("Results") or []:
        target = str(result.get("Target", ""))
        for key, id_key in (
            ("Vulnerabilities", "VulnerabilityID"),
            ("Misconfigurations", "ID"),
            ("Secrets", "RuleID"),
        ):
            for item in result.get(key) or []:
                where = f"{target} {item.get('PkgName', '')}".strip()
                found.append(
                    Finding(str(item.get(id_key, "?")), _severity(item["Severity"]), where)
                )
    return found


def _pip_audit(data: Any) -> list[Finding]:
    deps = data.get("dependencies", []) if isinstance(data, dict) else data
    return [
        Finding(
            str(vuln.get("id", "?")), PIP_AUDIT_SEVERITY, f"{dep.get('name')} {dep.get('version')}"
        )
        for dep in deps
        for vuln in dep.get("vulns") or []
    ]


def _npm_audit(data: dict[str, Any]) -> list[Finding]:
    found = []
    for name, item in (data.get("vulnerabilities") or {}).items():  # npm 7+
        severity = _NPM.get(str(item.get("severity", "")).lower(), "UNKNOWN")
        found.append(Finding(name, severity, name))
    for key, item in (data.get("advisories") or {}).items():  # npm 6
        severity = _NPM.get(str(item.get("severity", "")).lower(), "UNKNOWN")
        found.append(Finding(str(key), severity, str(item.get("module_name", ""))))
    return found


def _sarif(data: dict[str, Any]) -> list[Finding]:
    found = []
    for run in data.get("runs") or []:
        rules = {
            rule.get("id"): rule
            for rule in ((run.get("tool") or {}).get("driver") or {}).get("rules") or []
        }
        for result in run.get("results") or []:
            rule = rules.get(result.get("ruleId"), {})
            score = (result.get("properties") or {}).get("security-severity") or (
                rule.get("properties") or {}
            ).get("security-severity")
            level = result.get("level") or (rule.get("defaultConfiguration") or {}).get("level")
            where = ""
            for location in result.get("locations") or []:
                physical = location.get("physicalLocation") or {}
                where = str((physical.get("artifactLocation") or {}).get("uri", ""))
                break
            found.append(
                Finding(str(result.get("ruleId", "?")), _sarif_severity(score, level), where)
            )
    return found


def _sarif_severity(score: Any, level: Any) -> str:
    # GitHub's code-scanning bands for the CVSS-like `security-severity` score.
    try:
        value = float(score)
    except (TypeError, ValueError):
        return _SARIF_LEVEL.get(str(level or "warning"), "UNKNOWN")
    if value >= 9.0:
        return "CRITICAL"
    if value >= 7.0:
        return "HIGH"
    if value >= 4.0:
        return "MEDIUM"
    return "LOW"


_PARSERS = {"trivy": _trivy, "pip-audit": _pip_audit, "npm-audit": _npm_audit, "sarif": _sarif}
