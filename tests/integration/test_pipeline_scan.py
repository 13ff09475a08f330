"""Scan jobs with a built-in scanner: zerodown runs the real pip-audit and npm binaries on a
Python service's pinned requirements and on a package-lock.json, and gates on what they find.

The advisory data comes from a server on 127.0.0.1, reached through the scanners' own options
(pip-audit `--vulnerability-service osv --osv-url`, npm `--registry`). It serves real advisory
records — PyPA's for jinja2, GitHub's for lodash — and lodash's packument as recorded from
registry.npmjs.org; tests/data/scan/README.md says where each file comes from and why the
endpoints could not be recorded themselves (this machine gets 404/405 from them).
"""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pip
import pytest
import yaml
from tests.integration.pipeline_fixtures import commit, free_port, make_pipeline_repo

from zerodown.config import load_config
from zerodown.pipeline.history import PipelineHistory
from zerodown.pipeline.model import JobRecord, JobState, RunRecord, RunState
from zerodown.pipeline.runner import PipelineRunner
from zerodown.store.sql import open_store

DATA = Path(__file__).resolve().parents[1] / "data" / "scan"
BULK = "/-/npm/v1/security/advisories/bulk"
VULNERABLE_PY = "jinja2==2.10\nmarkupsafe==1.1.1\n"
CLEAN_PY = "jinja2==3.1.6\nmarkupsafe==3.0.2\n"

pytestmark = pytest.mark.timeout(120)


def _records(ecosystem: str, name: str) -> list[dict[str, Any]]:
    folder = DATA / "advisories" / ecosystem / name
    files = sorted(folder.iterdir()) if folder.is_dir() else []
    return [yaml.safe_load(f.read_text()) if f.suffix == ".yaml" else json.loads(f.read_text())
            for f in files]  # fmt: skip


def _npm_advisory(record: dict[str, Any], package: str) -> dict[str, Any] | None:
    """The fields npm's bulk endpoint gives for `record`, as npm reads them."""
    for affected in record["affected"]:
        if affected["package"]["name"] != package:
            continue
        events = affected["ranges"][0]["events"]
        introduced = next(e["introduced"] for e in events if "introduced" in e)
        fixed = next(e["fixed"] for e in events if "fixed" in e)
        below = f"<{fixed}"
        return {
            "id": zlib.crc32(record["id"].encode()),
            "url": f"https://github.com/advisories/{record['id']}",
            "title": record["summary"],
            "severity": record["database_specific"]["severity"].lower(),
            "vulnerable_versions": below if introduced == "0" else f">={introduced} {below}",
            "cwe": record["database_specific"]["cwe_ids"],
            "cvss": {"vectorString": record["severity"][0]["score"]},
        }
    return None


@dataclass
class AdvisoryServer:
    """OSV's query API and npm's bulk advisory endpoint + packuments, from tests/data/scan."""

    port: int
    refuse_npm_bulk: bool = False  # answer 405 as the proxy in front of these machines does
    requests: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
def advisories() -> Iterator[AdvisoryServer]:
    state = AdvisoryServer(port=0)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            """Quiet."""

        def _answer(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("content-length", 0)))
            if self.headers.get("content-encoding") == "gzip":  # npm gzips its bulk request
                raw = gzip.decompress(raw)
            query = json.loads(raw or b"{}")
            state.requests.append(f"POST {self.path} {json.dumps(query, sort_keys=True)}")
            if self.path == "/v1/query":
                package, version = query["package"], query["version"]
                vulns = [
                    r
                    for r in _records(package["ecosystem"], package["name"])
                    if any(version in a.get("versions", []) for a in r["affected"])
                ]
                return self._answer(200, json.dumps({"vulns": vulns} if vulns else {}).encode())
            if self.path == BULK:
                if state.refuse_npm_bulk:
                    return self._answer(405, b"")
                found: dict[str, list[dict[str, Any]]] = {}
                for name in query:
                    for record in _records("npm", name):
                        advisory = _npm_advisory(record, name)
                        if advisory is not None:
                            found.setdefault(name, []).append(advisory)
                return self._answer(200, json.dumps(found).encode())
            return self._answer(404, b"{}")

        def do_GET(self) -> None:
            state.requests.append(f"GET {self.path}")
            packument = DATA / "registry" / f"{self.path.strip('/')}.json"
            if "/" not in self.path.strip("/") and packument.is_file():
                return self._answer(200, packument.read_bytes())
            return self._answer(404, b'{"error": "not found"}')

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@dataclass
class ScanRun:
    run: RunRecord
    job: JobRecord
    log: list[str]


def _scan_repo(root: Path, job: dict[str, Any], files: dict[str, str]) -> Path:
    """A pipeline repo whose only job is `job` (named scan), with `files` on main and develop."""
    root.mkdir(parents=True, exist_ok=True)
    repo = make_pipeline_repo(root, free_port(), approvals=0)
    config = yaml.safe_load((repo / "zerodown.yml").read_text())
    config["pipeline"]["jobs"] = {"scan": job}
    files = {**files, "zerodown.yml": yaml.safe_dump(config)}
    commit(repo, "scan setup", files, branch="main")
    commit(repo, "scan setup", files, branch="develop")
    return repo


async def run_scan(
    root: Path, job: dict[str, Any], files: dict[str, str], *, branch: str = "main"
) -> ScanRun:
    """Run the scan pipeline on `branch`: main deploys to prod, where the scan is required;
    develop to dev, where it is optional."""
    loaded = load_config(_scan_repo(root, job, files) / "zerodown.yml")
    store = open_store(loaded.store_url)
    try:
        history = PipelineHistory(store)
        runner = PipelineRunner(loaded, history)
        run = await runner.execute((await runner.create(branch=branch)).id)
        (scan,) = await history.jobs(run.id)
        log = [line.line for line in await history.logs(run.id)]
        return ScanRun(run, scan, log)
    finally:
        await store.close()


def _pip_audit(server: AdvisoryServer, **options: Any) -> dict[str, Any]:
    scanner = {"tool": "pip-audit", "service": "osv", "osv_url": f"{server.url}/v1/query"}
    return {"kind": "scan", "scanner": {**scanner, **options}}


def _npm_audit(root: Path, registry: str, **options: Any) -> dict[str, Any]:
    # A cache of the test's own: nothing comes from (or goes to) ~/.npm.
    env = {"npm_config_cache": str(root / "npm-cache"), "npm_config_fetch_retries": "0"}
    scanner = {"tool": "npm-audit", "registry": registry, "lockfile": "web/package-lock.json"}
    return {"kind": "scan", "scanner": {**scanner, **options}, "env": env}


def _lock(folder: str) -> dict[str, str]:
    return {f"web/{f.name}": f.read_text() for f in (DATA / folder).iterdir()}


async def test_pip_audit_finds_the_jinja2_2_10_advisories_and_the_prod_gate_fails(
    tmp_path: Path, advisories: AdvisoryServer
) -> None:
    """jinja2 2.10 is hit by PYSEC-2019-217 and PYSEC-2021-66 (not PYSEC-2019-220, fixed in
    2.8.1): pip-audit reports both, the required prod gate fails the run."""
    scanned = await run_scan(tmp_path, _pip_audit(advisories), {"requirements.txt": VULNERABLE_PY})
    assert scanned.run.state is RunState.FAILED
    assert scanned.job.state is JobState.FAILED
    assert "security scan gate: 2 HIGH" in (scanned.job.reason or "")
    blocking = scanned.job.summary["blocking"]
    assert sorted(blocking) == ["HIGH PYSEC-2019-217 jinja2 2.10", "HIGH PYSEC-2021-66 jinja2 2.10"]
    assert scanned.job.summary["scanner"] == "pip-audit"
    assert scanned.job.summary["audited"] == 2
    queried = [r for r in advisories.requests if r.startswith("POST /v1/query")]
    assert len(queried) == 2 and any('"version": "2.10"' in r for r in queried)
    assert not any("Traceback" in line for line in scanned.log)


async def test_pip_audit_passes_a_clean_set(tmp_path: Path, advisories: AdvisoryServer) -> None:
    """jinja2 3.1.6 and markupsafe 3.0.2 match none of the records: the gate passes."""
    scanned = await run_scan(tmp_path, _pip_audit(advisories), {"requirements.txt": CLEAN_PY})
    assert scanned.run.state is RunState.SUCCEEDED, scanned.run.reason
    assert scanned.job.summary["counts"]["HIGH"] == 0
    assert "[zerodown] scan: no findings (gate: CRITICAL, HIGH)" in scanned.log
    assert len([r for r in advisories.requests if "/v1/query" in r]) == 2


async def test_pip_audit_ignore_leaves_out_the_named_vulnerabilities(
    tmp_path: Path, advisories: AdvisoryServer
) -> None:
    job = _pip_audit(advisories, ignore=["PYSEC-2019-217", "CVE-2020-28493"])  # id or alias
    scanned = await run_scan(tmp_path, job, {"requirements.txt": VULNERABLE_PY})
    assert scanned.run.state is RunState.SUCCEEDED, scanned.run.reason
    assert scanned.job.summary["counts"]["HIGH"] == 0


def _interpreter_with_jinja2_2_10(root: Path) -> Path:
    """A venv whose pip lists Jinja2 2.10: pip copied in from zerodown's own environment, and
    Jinja2's installed-distribution record (its METADATA) without the package's code."""
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    (site,) = (venv / "lib").glob("python3*/site-packages")
    shutil.copytree(Path(pip.__file__).parent, site / "pip")
    record = site / "jinja2-2.10.dist-info"
    record.mkdir()
    (record / "METADATA").write_text("Metadata-Version: 2.1\nName: Jinja2\nVersion: 2.10\n")
    (record / "RECORD").write_text("")
    return venv / "bin" / "python"


async def test_pip_audit_of_an_interpreter_audits_what_is_installed_there(
    tmp_path: Path, advisories: AdvisoryServer
) -> None:
    """`python:` makes pip-audit list that interpreter's packages (not zerodown's own, which has
    jinja2 3.1.6): Jinja2 2.10 is found there."""
    python = _interpreter_with_jinja2_2_10(tmp_path)
    scanned = await run_scan(tmp_path, _pip_audit(advisories, python=str(python)), {})
    assert scanned.run.state is RunState.FAILED
    assert "security scan gate: 2 HIGH" in (scanned.job.reason or "")
    assert [r for r in advisories.requests if "/v1/query" in r] == [
        'POST /v1/query {"package": {"ecosystem": "PyPI", "name": "jinja2"}, "version": "2.10"}'
    ]


async def test_pip_audit_offline_fails_the_job_in_one_sentence_or_warns_when_told(
    tmp_path: Path,
) -> None:
    """Nothing listens on the OSV URL: by default the job fails and says so in one line (no
    traceback in the reason nor in the log); with `unreachable: warn` the run goes on, marked."""
    dead = f"http://127.0.0.1:{free_port()}"
    job = {"kind": "scan", "scanner": {"tool": "pip-audit", "service": "osv",
                                       "osv_url": f"{dead}/v1/query"}}  # fmt: skip
    failed = await run_scan(tmp_path / "fail", job, {"requirements.txt": VULNERABLE_PY})
    assert failed.run.state is RunState.FAILED
    reason = failed.job.reason or ""
    assert reason.startswith(f"not scanned: pip-audit could not reach the OSV service at {dead}")
    assert "Connection refused" in reason and "\n" not in reason
    assert not any(line.startswith("Traceback") for line in failed.log)
    assert any("lines of a pip-audit traceback left out" in line for line in failed.log)

    job["scanner"]["unreachable"] = "warn"
    warned = await run_scan(tmp_path / "warn", job, {"requirements.txt": VULNERABLE_PY})
    assert warned.run.state is RunState.SUCCEEDED, warned.run.reason
    assert warned.job.summary["warning"].startswith("not scanned: pip-audit could not reach")


async def test_a_missing_scanner_binary_or_requirements_file_says_what_to_do(
    tmp_path: Path, advisories: AdvisoryServer
) -> None:
    missing = _pip_audit(advisories, binary=str(tmp_path / "nowhere" / "pip-audit"))
    scanned = await run_scan(tmp_path / "a", missing, {"requirements.txt": CLEAN_PY})
    assert scanned.job.state is JobState.FAILED
    assert "pip-audit not found at" in (scanned.job.reason or "")
    scanned = await run_scan(tmp_path / "b", _pip_audit(advisories), {"README": "no reqs\n"})
    assert "requirements.txt not found" in (scanned.job.reason or "")
    assert "uv export" in (scanned.job.reason or "")


async def test_npm_audit_finds_the_lodash_4_17_4_advisories_and_the_prod_gate_fails(
    tmp_path: Path, advisories: AdvisoryServer
) -> None:
    """lodash 4.17.4 is hit by GHSA-jf85-cpcp-j695 (critical) and GHSA-35jh-r3h4-6jhm (high):
    npm asks the bulk endpoint, reads lodash's packument, and reports lodash as critical."""
    job = _npm_audit(tmp_path, f"{advisories.url}/")
    scanned = await run_scan(tmp_path, job, _lock("npm-vulnerable"))
    assert scanned.run.state is RunState.FAILED
    assert "security scan gate: 1 CRITICAL" in (scanned.job.reason or "")
    assert scanned.job.summary["blocking"] == ["CRITICAL lodash lodash"]
    assert scanned.job.summary["audited"] == 1
    assert f'POST {BULK} {{"lodash": ["4.17.4"]}}' in advisories.requests
    assert "GET /lodash" in advisories.requests


async def test_npm_audit_passes_lodash_4_17_21_and_warns_only_on_dev(
    tmp_path: Path, advisories: AdvisoryServer
) -> None:
    """4.17.21 is past both fixes: npm (not the server) decides it is not affected. On dev the
    scan is optional: the vulnerable lock only warns."""
    clean = await run_scan(tmp_path / "clean", _npm_audit(tmp_path, f"{advisories.url}/"),
                           _lock("npm-clean"))  # fmt: skip
    assert clean.run.state is RunState.SUCCEEDED, clean.run.reason
    assert clean.job.summary["counts"]["CRITICAL"] == 0
    assert "GET /lodash" in advisories.requests  # npm itself checked the versions

    dev = await run_scan(tmp_path / "dev", _npm_audit(tmp_path, f"{advisories.url}/"),
                         _lock("npm-vulnerable"), branch="develop")  # fmt: skip
    assert dev.run.state is RunState.SUCCEEDED, dev.run.reason
    assert "optional here" in dev.job.summary["warning"]


async def test_npm_audit_without_advisory_data_fails_or_warns_in_one_sentence(
    tmp_path: Path, advisories: AdvisoryServer
) -> None:
    """The bulk endpoint answers 405 (as the proxy in front of these machines does), then no
    registry listens at all: one sentence each; `unreachable: warn` lets the run go on."""
    advisories.refuse_npm_bulk = True
    refused = await run_scan(tmp_path / "a", _npm_audit(tmp_path, f"{advisories.url}/"),
                             _lock("npm-vulnerable"))  # fmt: skip
    assert refused.job.state is JobState.FAILED
    reason = refused.job.reason or ""
    assert reason.startswith(
        f"not scanned: npm audit could not get advisory data from {advisories.url}/"
    )
    assert "405" in reason and "\n" not in reason

    dead = f"http://127.0.0.1:{free_port()}/"
    job = _npm_audit(tmp_path, dead, unreachable="warn")
    warned = await run_scan(tmp_path / "b", job, _lock("npm-vulnerable"))
    assert warned.run.state is RunState.SUCCEEDED, warned.run.reason
    assert "ECONNREFUSED" in warned.job.summary["warning"]
    assert warned.job.summary["warning"].endswith("(scanner.unreachable: warn)")
