"""A throwaway git repository with the example app and a pipeline in its zerodown.yml."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

APP = Path(__file__).resolve().parents[2] / "examples" / "webapp" / "app.py"

RUN_TESTS = """\
import pathlib, sys
failing = pathlib.Path("FAIL_TEST").exists()
pathlib.Path("reports").mkdir(exist_ok=True)
case = '<testcase classname="tests.test_app" name="test_login">'
case += '<failure message="boom"/></testcase>' if failing else '</testcase>'
pathlib.Path("reports/junit.xml").write_text(
    '<testsuite name="app"><testcase classname="tests.test_app" name="test_home"/>'
    + case + '</testsuite>'
)
print("2 tests ran")
sys.exit(1 if failing else 0)
"""

SCAN = """\
import json, pathlib
vulns = []
if pathlib.Path("VULNERABLE").exists():
    vulns.append({"VulnerabilityID": "CVE-2024-0001", "PkgName": "libfoo", "Severity": "CRITICAL"})
report = {"SchemaVersion": 2, "Results": [{"Target": "app", "Vulnerabilities": vulns}]}
pathlib.Path("scan.json").write_text(json.dumps(report))
"""

GIT_ENV = {
    "GIT_AUTHOR_NAME": "dev",
    "GIT_AUTHOR_EMAIL": "dev@zerodown.local",
    "GIT_COMMITTER_NAME": "dev",
    "GIT_COMMITTER_EMAIL": "dev@zerodown.local",
}


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def git(repo: Path, *args: str) -> str:
    """Run git in `repo` as a fixed test identity; return stdout."""
    done = subprocess.run(
        ["git", *args],
        cwd=repo,
        env={**os.environ, **GIT_ENV},
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip()


def pipeline_yaml(port: int, *, approvals: int = 2) -> str:
    """zerodown.yml: one web service, dev (develop, all-at-once, on `port`) and prod (main,
    rolling, on a port of its own), and the pipeline
    test -> scan + migrations + build -> publish -> deploy."""
    return textwrap.dedent(
        f"""\
        project: shop
        state_dir: .zerodown
        router:
          listen: ["127.0.0.1:{port}"]
        services:
          web:
            source: {{repo: ., path: services/web}}
            run: {sys.executable} app.py
            instances: 2
            health: {{preset: fastapi, start_period: 1s}}
            drain_timeout: 10s
            stop_timeout: 5s
        environments:
          dev:
            branch: develop
            strategy: {{type: all-at-once}}
            auto_rollback: false
          prod:
            listen: 127.0.0.1:{free_port()}  # free now (port + 1 may not be)
            branch: main
            strategy: {{type: rolling, batch: 1, surge: true}}
        pipeline:
          max_parallel: 3
          environments:
            prod: {{approvals: {approvals}, wait_timer: 0s}}
          jobs:
            test:
              kind: test
              command: {sys.executable} ci/run_tests.py
              junit: ["reports/*.xml"]
            scan:
              kind: scan
              command: {sys.executable} ci/scan.py
              report: scan.json
            migrations:
              kind: migrations
              path: db/migration
            build:
              kind: build
              needs: [test]
              command: mkdir -p dist && cp services/web/app.py dist/
              output: dist
            publish:
              kind: publish
              needs: [build, scan, migrations]
            deploy:
              kind: deploy
              needs: [publish]
        """
    )


def make_pipeline_repo(root: Path, port: int, *, approvals: int = 2) -> Path:
    """A git repo (branches main and develop) with the app, CI scripts and a first migration."""
    repo = root / "shop"
    (repo / "services" / "web").mkdir(parents=True)
    (repo / "ci").mkdir()
    (repo / "db" / "migration").mkdir(parents=True)
    shutil.copy(APP, repo / "services" / "web" / "app.py")
    (repo / "services" / "web" / "VERSION").write_text("v1\n")
    (repo / "ci" / "run_tests.py").write_text(RUN_TESTS)
    (repo / "ci" / "scan.py").write_text(SCAN)
    (repo / "db" / "migration" / "V1__create_users.sql").write_text(
        "CREATE TABLE users (id INT PRIMARY KEY, email VARCHAR(200));\n"
    )
    (repo / "zerodown.yml").write_text(pipeline_yaml(port, approvals=approvals))
    (repo / ".gitignore").write_text(".zerodown/\n")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "v1")
    git(repo, "branch", "develop")
    return repo


def commit(repo: Path, message: str, files: dict[str, str], *, branch: str = "main") -> str:
    """Commit `files` (path -> text) on `branch` in a clone-free way; return the new sha."""
    git(repo, "checkout", "-q", branch)
    for name, text in files.items():
        path = repo / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")
