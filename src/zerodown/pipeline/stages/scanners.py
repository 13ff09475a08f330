"""Built-in scanners of the scan stage: zerodown runs pip-audit or `npm audit` itself, writes the
report where `scan.read_report` reads it, and tells "found nothing" apart from "could not ask".

A scanner that cannot reach its advisory data (offline, a proxy that refuses the endpoint, a
service that knows none of the packages) comes back as `Unreachable` with one sentence; the job
fails or warns on it as configured (`unreachable: fail | warn`), it never passes silently.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import shlex
import shutil
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zerodown.config.scanners import NpmAuditScanner, PipAuditScanner, ScannerConfig
from zerodown.errors import PipelineError
from zerodown.pipeline.stages.scan import ScanReport, read_report
from zerodown.shell import ShellResult, run_shell

OnLine = Callable[[str], None]

# How requests (pip-audit) and npm say that the service could not be reached at all.
_PIP_AUDIT_UNREACHABLE = re.compile(
    r"ConnectionError|ProxyError|ConnectTimeout|ReadTimeout|SSLError|Max retries exceeded|"
    r"Could not connect|NameResolution"
)
_NET_CODES = frozenset(
    {"ECONNREFUSED", "ECONNRESET", "ENOTFOUND", "EAI_AGAIN", "ETIMEDOUT", "ENETUNREACH",
     "EHOSTUNREACH", "ECONNABORTED", "EPROXY", "ENOAUDIT"}
)  # fmt: skip
_ERRNO_TEXT = re.compile(r"\[Errno -?\d+\] ([^\"')\]]+)")


@dataclass(frozen=True)
class Unreachable:
    """The scanner ran but could not get advisory data; `reason` is one sentence."""

    reason: str


@dataclass(frozen=True)
class ScannerResult:
    """The report a built-in scanner wrote, read, plus what it could not audit."""

    report: ScanReport
    audited: int | None = None  # dependencies the scanner checked, when it says
    skipped: list[str] = field(default_factory=list)


async def run_scanner(
    scanner: ScannerConfig,
    *,
    cwd: Path,
    report: Path,
    env: Mapping[str, str],
    timeout: float,
    cache_dir: Path,
    on_line: OnLine,
) -> ScannerResult | Unreachable:
    """Run `scanner` in `cwd`, writing its JSON report to `report`; raise `PipelineError` when it
    is not installed, is misconfigured, or fails for a reason other than the network."""
    _clear(report)
    if isinstance(scanner, PipAuditScanner):
        run_env = dict(env)
        argv = pip_audit_command(scanner, cwd, report, cache_dir, run_env)
        output = TracebackFilter(on_line)
        result = await _run(argv, cwd, run_env, timeout, output.line)
        output.finish()
        return read_pip_audit(scanner, report, output.last_line, result.exit_code)
    argv = npm_audit_command(scanner, cwd, env.get("PATH"))
    # npm prints the report (or an error object) on stdout and its warnings on stderr.
    result = await _run(argv, (cwd / scanner.lockfile).parent, env, timeout, on_line, stdout=report)
    return read_npm_audit(scanner, report, result.exit_code)


# -- pip-audit ----------------------------------------------------------------------------------


def pip_audit_executable(binary: str | None, path: str | None) -> list[str]:
    """The argv that starts pip-audit: `binary`, else `pip-audit` on `path`, else the module
    installed next to zerodown (the `scan` extra)."""
    if binary:
        return [_existing(binary, "pip-audit")]
    found = shutil.which("pip-audit", path=path)
    if found:
        return [found]
    if importlib.util.find_spec("pip_audit") is not None:
        return [sys.executable, "-m", "pip_audit"]
    raise PipelineError(
        "pip-audit is not installed: `pip install pip-audit` (or zerodown's extra: "
        "`pip install 'zerodown[scan]'`), or set scanner.binary to its path"
    )


def pip_audit_command(
    scanner: PipAuditScanner, cwd: Path, report: Path, cache_dir: Path, env: dict[str, str]
) -> list[str]:
    """pip-audit's argv for `scanner`; sets in `env` what it reads from there."""
    if scanner.python:
        # pip-audit lists another interpreter's packages through pip-api, which reads this.
        env["PIPAPI_PYTHON_LOCATION"] = _existing(
            str(cwd / scanner.python), "python", "scanner.python"
        )
    args = pip_audit_executable(scanner.binary, env.get("PATH"))
    args += ["--format", "json", "--output", str(report), "--progress-spinner", "off"]
    args += ["--cache-dir", str(cache_dir), "--timeout", str(math.ceil(scanner.request_timeout))]
    args += ["--vulnerability-service", scanner.service]
    if scanner.osv_url:
        args += ["--osv-url", scanner.osv_url]
    for vuln in scanner.ignore:
        args += ["--ignore-vuln", vuln]
    for name in scanner.requirement_files:
        path = cwd / name
        if not path.is_file():
            raise PipelineError(
                f"pip-audit: {name} not found in {cwd}: write the pinned requirements there "
                "(e.g. `uv export --no-hashes -o requirements.txt` or `pip freeze`) or set "
                "scanner.requirements"
            )
        args += ["--requirement", str(path)]
    if scanner.requirement_files:
        # Pinned files are audited as they are: no resolver, no index, nothing installed.
        args += ["--no-deps", "--disable-pip"]
    return args


def read_pip_audit(
    scanner: PipAuditScanner, report: Path, last_line: str, exit_code: int
) -> ScannerResult | Unreachable:
    """What pip-audit's run says: a report, no advisory data, or a failure (`PipelineError`)."""
    service = (
        f"the OSV service at {scanner.osv_url}"
        if scanner.osv_url
        else ("OSV's service" if scanner.service == "osv" else "PyPI's advisory service")
    )
    if not report.is_file():
        last = last_line or "no output"
        if _PIP_AUDIT_UNREACHABLE.search(last):
            return Unreachable(f"pip-audit could not reach {service}: {_network_cause(last)}")
        raise PipelineError(f"pip-audit failed (exit code {exit_code}): {_strip_log(last)}")
    data = _read_json(report, "pip-audit")
    deps = [d for d in data.get("dependencies") or [] if isinstance(d, dict)]
    skipped = [f"{d.get('name')}: {d['skip_reason']}" for d in deps if d.get("skip_reason")]
    if skipped and not any("version" in d for d in deps):
        # PyPI answers 404 for every version where its JSON API is not served (a mirror, a
        # proxy): pip-audit then says "no known vulnerabilities" having checked nothing.
        return Unreachable(
            f"pip-audit audited none of {len(skipped)} dependencies against {service} "
            f"({skipped[0]})"
        )
    audited = sum(1 for d in deps if "version" in d)
    return ScannerResult(read_report(report, "pip-audit"), audited, skipped)


# -- npm audit ----------------------------------------------------------------------------------


def npm_audit_command(scanner: NpmAuditScanner, cwd: Path, path: str | None) -> list[str]:
    """`npm audit`'s argv for `scanner` (run in the lock file's folder)."""
    if not (cwd / scanner.lockfile).is_file():
        raise PipelineError(
            f"npm audit: {scanner.lockfile} not found in {cwd}: commit the lock file "
            "(`npm install --package-lock-only`) or set scanner.lockfile"
        )
    if scanner.binary:
        npm = _existing(scanner.binary, "npm")
    else:
        found = shutil.which("npm", path=path)
        if found is None:
            raise PipelineError(
                "npm is not installed: install Node.js with npm (e.g. `apt-get install npm`), "
                "or set scanner.binary to its path"
            )
        npm = found
    args = [npm, "audit", "--json", "--package-lock-only"]
    if scanner.registry:
        args += ["--registry", scanner.registry]
    for kind in scanner.omit:
        args += ["--omit", kind]
    return args


def read_npm_audit(
    scanner: NpmAuditScanner, report: Path, exit_code: int
) -> ScannerResult | Unreachable:
    """What `npm audit --json` printed: a report, no advisory data, or a failure."""
    data = _read_json(report, "npm audit")
    if "auditReportVersion" in data or "advisories" in data:
        total = ((data.get("metadata") or {}).get("dependencies") or {}).get("total")
        return ScannerResult(
            read_report(report, "npm-audit"), total if isinstance(total, int) else None
        )
    error: dict[str, Any] = data["error"] if isinstance(data.get("error"), dict) else {}
    where = data.get("uri") or scanner.registry or "the npm registry"
    code = str(error.get("code") or data.get("code") or "")
    message = str(data.get("message") or error.get("summary") or "").strip()
    network = code in _NET_CODES or any(c in message for c in _NET_CODES)
    if network or data.get("statusCode") or "/-/npm/v1/security/" in message:
        cause = message.splitlines()[0] if message else code or "no answer"
        return Unreachable(f"npm audit could not get advisory data from {where}: {cause}")
    summary = message or str(error.get("detail") or "") or f"exit code {exit_code}"
    raise PipelineError(f"npm audit failed: {summary.splitlines()[0]}")


# -- plumbing -----------------------------------------------------------------------------------


async def _run(
    argv: list[str],
    cwd: Path,
    env: Mapping[str, str],
    timeout: float,
    on_line: OnLine,
    *,
    stdout: Path | None = None,
) -> ShellResult:
    # run_shell brings the process-group handling and the timeout; the argv is quoted for it.
    command = shlex.join(argv)
    if stdout is not None:
        command = f"{command} > {shlex.quote(str(stdout))}"
    result = await run_shell(command, cwd=cwd, env=env, timeout=timeout, on_line=on_line)
    if result.timed_out:
        raise PipelineError(f"{Path(argv[0]).name} timed out after {timeout:.0f} s")
    return result


def _clear(report: Path) -> None:
    # A report left by an earlier run must not pass for this one.
    report.parent.mkdir(parents=True, exist_ok=True)
    report.unlink(missing_ok=True)


def _existing(binary: str, what: str, setting: str = "scanner.binary") -> str:
    path = Path(binary)
    if path.is_file() and os.access(path, os.X_OK):
        return str(path)
    found = shutil.which(binary)
    if found:
        return found
    raise PipelineError(f"scanner: {what} not found at {binary}: install it or fix {setting}")


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8") or "{}")
    except FileNotFoundError:
        raise PipelineError(f"{what} wrote no report at {path}") from None
    except (OSError, ValueError) as exc:
        raise PipelineError(f"{what} wrote a report that is not JSON ({path}): {exc}") from exc
    if not isinstance(data, dict):
        raise PipelineError(f"{what} wrote an unexpected report at {path}")
    return data


def _network_cause(line: str) -> str:
    match = _ERRNO_TEXT.search(line)
    if match:
        return match.group(1).strip()
    if "Max retries exceeded" in line or "ConnectTimeout" in line:
        return "no connection"
    return _strip_log(line)[:200]


def _strip_log(line: str) -> str:
    return re.sub(r"^(ERROR|WARNING):[\w.]+:", "", line).strip()


class TracebackFilter:
    """Passes a scanner's output through, but keeps a Python traceback out of the job log: it
    is replaced by one line, its last (the exception), which the caller turns into a reason."""

    def __init__(self, on_line: OnLine) -> None:
        self._on_line = on_line
        self._in_traceback = False
        self._dropped = 0
        self.last_line = ""

    def line(self, text: str) -> None:
        """Take one line of output."""
        if text.startswith("Traceback (most recent call last):"):
            self._in_traceback = True
        if text.strip():
            self.last_line = text.strip()
        if self._in_traceback:
            self._dropped += 1
        else:
            self._on_line(text)

    def finish(self) -> None:
        """Log what the left-out traceback said."""
        if self._dropped:
            self._on_line(
                f"[zerodown] {self._dropped} lines of a pip-audit traceback left out; "
                f"it ended with: {self.last_line}"
            )
