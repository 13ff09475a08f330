"""Built-in scanners without running them: the `scanner:` config, the argv zerodown builds, and
how a run's output is read (report, no advisory data, failure). Runs of the real binaries are
in tests/integration/test_pipeline_scan.py."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from zerodown.config import parse_config
from zerodown.config.scanners import NpmAuditScanner, PipAuditScanner
from zerodown.errors import ConfigError, PipelineError
from zerodown.pipeline.stages import scanners
from zerodown.pipeline.stages.scanners import ScannerResult, Unreachable

DATA = Path(__file__).resolve().parents[1] / "data" / "scan"
PIPELINE = """\
services:
  api:
    run: python app.py
pipeline:
  jobs:
    scan:
      kind: scan
"""


def _scan_job(extra: str) -> object:
    loaded = parse_config(PIPELINE + extra, Path("zerodown.yml"), environ={})
    assert loaded.config.pipeline is not None
    return loaded.config.pipeline.jobs["scan"].scanner


def _config_error(extra: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(PIPELINE + extra, Path("zerodown.yml"), environ={})
    return str(info.value)


def test_scanner_by_name_is_short_for_its_settings_with_their_defaults() -> None:
    scanner = _scan_job("      scanner: pip-audit\n")
    assert scanner == PipAuditScanner()
    assert isinstance(scanner, PipAuditScanner)
    assert scanner.requirement_files == ("requirements.txt",)
    assert scanner.unreachable == "fail"
    npm = _scan_job("      scanner: {tool: npm-audit, omit: [dev]}\n")
    assert npm == NpmAuditScanner(omit=("dev",))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("", "zerodown.yml:7: pipeline.jobs.scan: a scan job needs `scanner:` (pip-audit or"),
        ("      scanner: trivy\n", "'trivy' is not a built-in scanner: write pip-audit or"),
        ("      scanner: {requirements: [r.txt]}\n", "`scanner:` needs `tool: pip-audit`"),
        (
            "      scanner: {tool: pip-audit, unreachable: ignore}\n",
            "zerodown.yml:8: pipeline.jobs.scan.scanner.pip-audit.unreachable: must be 'fail'",
        ),
        (
            "      scanner: {tool: pip-audit, python: .venv/bin/python, requirements: [r.txt]}\n",
            "audits `requirements:` or `python:`, not both",
        ),
        (
            "      scanner: {tool: pip-audit, osv_url: http://x}\n",
            "`osv_url:` needs `service: osv`",
        ),
        ("      command: trivy fs .\n", "a scan job needs `report:`"),
        (
            "      scanner: npm-audit\n      format: sarif\n",
            "`format:` comes from `scanner: npm-audit`",
        ),
    ],
)
def test_a_bad_scanner_fails_in_one_line_naming_the_spot(extra: str, message: str) -> None:
    error = _config_error(extra)
    assert message in error and "\n" not in error


def test_pip_audit_audits_pinned_files_as_they_are(tmp_path: Path) -> None:
    """Pinned requirements: no resolver, no index, nothing installed; the cache is zerodown's."""
    (tmp_path / "requirements.txt").write_text("jinja2==2.10\n")
    env: dict[str, str] = {}
    scanner = PipAuditScanner(ignore=("PYSEC-2019-217",), service="osv", osv_url="http://o/q")
    argv = scanners.pip_audit_command(scanner, tmp_path, tmp_path / "r.json", tmp_path / "c", env)
    joined = " ".join(argv)
    assert f"--requirement {tmp_path / 'requirements.txt'}" in joined
    assert argv[-2:] == ["--no-deps", "--disable-pip"]
    assert "--vulnerability-service osv --osv-url http://o/q" in joined
    assert "--ignore-vuln PYSEC-2019-217" in joined and f"--cache-dir {tmp_path / 'c'}" in joined
    assert f"--format json --output {tmp_path / 'r.json'}" in joined
    assert env == {}


def test_pip_audit_of_an_interpreter_reads_its_packages_through_pip_api(tmp_path: Path) -> None:
    python = tmp_path / "venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text("#!/bin/sh\n")
    python.chmod(0o755)
    env: dict[str, str] = {}
    scanner = PipAuditScanner(python="venv/bin/python")
    argv = scanners.pip_audit_command(scanner, tmp_path, tmp_path / "r.json", tmp_path, env)
    assert env["PIPAPI_PYTHON_LOCATION"] == str(python)
    assert "--requirement" not in argv and "--no-deps" not in argv


def test_missing_inputs_and_binaries_say_what_to_install_or_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(PipelineError, match=r"requirements.txt not found .*uv export"):
        scanners.pip_audit_command(PipAuditScanner(), tmp_path, tmp_path / "r", tmp_path, {})
    with pytest.raises(PipelineError, match="pip-audit not found at /nowhere/pip-audit"):
        scanners.pip_audit_executable("/nowhere/pip-audit", path="")
    # Neither on PATH nor installed with zerodown:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(PipelineError, match=r"pip-audit is not installed: `pip install pip-audit`"):
        scanners.pip_audit_executable(None, path=str(tmp_path))
    with pytest.raises(PipelineError, match=r"package-lock.json not found .*npm install"):
        scanners.npm_audit_command(NpmAuditScanner(), tmp_path, path=None)
    (tmp_path / "package-lock.json").write_text("{}")
    with pytest.raises(PipelineError, match=r"npm is not installed: install Node.js with npm"):
        scanners.npm_audit_command(NpmAuditScanner(), tmp_path, path=str(tmp_path))


def test_pip_audit_that_audited_nothing_is_not_a_pass() -> None:
    """Recorded on this machine: PyPI's per-version JSON answers 404 here, pip-audit skips every
    dependency and says "No known vulnerabilities found" (exit 0). zerodown calls it what it is."""
    got = scanners.read_pip_audit(PipAuditScanner(), DATA / "pip-audit-pypi-not-found.json", "", 0)
    assert isinstance(got, Unreachable)
    assert got.reason == (
        "pip-audit audited none of 2 dependencies against PyPI's advisory service (jinja2: "
        "Dependency not found on PyPI and could not be audited: jinja2 (2.10))"
    )


def test_pip_audit_that_skipped_some_dependencies_lists_them(tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    deps = [
        {"name": "jinja2", "version": "2.10", "vulns": [{"id": "PYSEC-2019-217"}]},
        {"name": "internal-lib", "skip_reason": "Dependency not found on PyPI"},
    ]
    report.write_text(json.dumps({"dependencies": deps, "fixes": []}))
    got = scanners.read_pip_audit(PipAuditScanner(), report, "", 1)
    assert isinstance(got, ScannerResult)
    assert [f.id for f in got.report.findings] == ["PYSEC-2019-217"]
    assert got.skipped == ["internal-lib: Dependency not found on PyPI"]
    assert got.audited == 1


@pytest.mark.parametrize(
    ("last_line", "expected"),
    [
        (
            "requests.exceptions.ConnectionError: HTTPConnectionPool(host='127.0.0.1', port=1): "
            "Max retries exceeded with url: /v1/query (Caused by NewConnectionError(\"...: "
            '[Errno 111] Connection refused"))',
            Unreachable("pip-audit could not reach PyPI's advisory service: Connection refused"),
        ),
        (
            "requests.exceptions.ProxyError: HTTPSConnectionPool(host='pypi.org', port=443): "
            "Max retries exceeded (Caused by ProxyError('Unable to connect to proxy', "
            "NewConnectionError('...: [Errno -2] Name or service not known')))",
            Unreachable("pip-audit could not reach PyPI's advisory service: Name or service not "
                        "known"),
        ),
    ],
)  # fmt: skip
def test_pip_audit_without_a_network_is_one_sentence(
    tmp_path: Path, last_line: str, expected: Unreachable
) -> None:
    got = scanners.read_pip_audit(PipAuditScanner(), tmp_path / "none.json", last_line, 1)
    assert got == expected


def test_pip_audit_failing_otherwise_is_a_failure_with_its_message(tmp_path: Path) -> None:
    line = "ERROR:pip_audit._cli:requirement jinja2 is not pinned to an exact version: jinja2>=2"
    with pytest.raises(PipelineError) as info:
        scanners.read_pip_audit(PipAuditScanner(), tmp_path / "none.json", line, 1)
    assert str(info.value) == (
        "pip-audit failed (exit code 1): requirement jinja2 is not pinned to an exact version: "
        "jinja2>=2"
    )


@pytest.mark.parametrize(
    ("printed", "expected"),
    [
        (  # what npm 11 printed here when nothing listened on the registry's port
            {"message": "request to http://127.0.0.1:1/-/npm/v1/security/advisories/bulk failed, "
                        "reason: connect ECONNREFUSED 127.0.0.1:1",
             "error": {"summary": "", "detail": ""}},
            "npm audit could not get advisory data from http://r/: request to http://127.0.0.1:1"
            "/-/npm/v1/security/advisories/bulk failed, reason: connect ECONNREFUSED 127.0.0.1:1",
        ),
        (  # what npm printed here against registry.npmjs.org (its proxy refuses the POST)
            {"message": "405 Method Not Allowed - POST https://registry.npmjs.org/-/npm/v1/"
                        "security/advisories/bulk",
             "uri": "https://registry.npmjs.org/-/npm/v1/security/advisories/bulk",
             "statusCode": 405, "error": {"summary": "", "detail": ""}},
            "npm audit could not get advisory data from https://registry.npmjs.org/-/npm/v1/"
            "security/advisories/bulk: 405 Method Not Allowed - POST https://registry.npmjs.org"
            "/-/npm/v1/security/advisories/bulk",
        ),
    ],
)  # fmt: skip
def test_npm_audit_without_advisory_data_is_one_sentence(
    tmp_path: Path, printed: dict[str, object], expected: str
) -> None:
    report = tmp_path / "npm.json"
    report.write_text(json.dumps(printed))
    got = scanners.read_npm_audit(NpmAuditScanner(registry="http://r/"), report, 1)
    assert got == Unreachable(expected)


def test_npm_audit_failing_otherwise_is_a_failure(tmp_path: Path) -> None:
    report = tmp_path / "npm.json"
    report.write_text(json.dumps({"error": {"code": "EJSONPARSE", "summary": "bad lock file"}}))
    with pytest.raises(PipelineError, match="npm audit failed: bad lock file"):
        scanners.read_npm_audit(NpmAuditScanner(), report, 1)
    report.write_text("")
    with pytest.raises(PipelineError, match="npm audit failed: exit code 1"):
        scanners.read_npm_audit(NpmAuditScanner(), report, 1)


def test_a_traceback_is_kept_out_of_the_log_but_its_last_line_is_kept() -> None:
    logged: list[str] = []
    output = scanners.TracebackFilter(logged.append)
    for line in ["Found 2 dependencies", "Traceback (most recent call last):", '  File "x"',
                 "requests.exceptions.ConnectionError: refused", ""]:  # fmt: skip
        output.line(line)
    output.finish()
    assert output.last_line == "requests.exceptions.ConnectionError: refused"
    assert logged == [
        "Found 2 dependencies",
        "[zerodown] 4 lines of a pip-audit traceback left out; it ended with: "
        "requests.exceptions.ConnectionError: refused",
    ]
