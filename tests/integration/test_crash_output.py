"""An app that raises at import: its traceback reaches the failure reason, the INSTANCE_FAILED
event and `zerodown logs`, even after the rollback removed the instance; its secret stays masked.

Real git repository, real router, real instances (LocalRuntime supervisors), SQLite history,
`zerodown` run as a subprocess like CI runs it.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

SECRET = "Crash-sEcReT-9f8e7d"
APP = """\
import os
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

if os.path.exists("CRASH"):
    print("connecting with DB_PASSWORD=" + os.environ.get("DB_PASSWORD", "?"), flush=True)
    print("about to divide", flush=True)
    ratio = 1 / 0


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


print("serving", flush=True)
HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=repo,
        check=True,
        capture_output=True,
    )


def _zerodown(repo: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zerodown", *args],
        cwd=repo,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Path]:
    """`good` serves; `crash` prints the secret, then raises ZeroDivisionError at import."""
    repo = tmp_path / "crashy"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    (repo / "app.py").write_text(APP)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "good")
    _git(repo, "tag", "good")
    (repo / "CRASH").write_text("yes\n")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "crash at import")
    _git(repo, "tag", "crash")
    (repo / "zerodown.yml").write_text(
        textwrap.dedent(
            f"""\
            project: crashy
            router:
              listen: ["127.0.0.1:{_free_port()}"]
            services:
              api:
                source: {{repo: ., path: .}}
                run: {sys.executable} app.py
                instances: 1
                health: {{path: /, start_interval: 0.1s, healthy_threshold: 1}}
                stop_timeout: 5s
            environments:
              prod:
                strategy: {{type: rolling, batch: 1, surge: true}}
            """
        )
    )
    done = _zerodown(repo, "secrets", "set", "--env", "prod", "DB_PASSWORD", stdin=SECRET)
    assert done.returncode == 0, done.stdout + done.stderr
    yield repo
    _zerodown(repo, "stop")


def _failed_events(repo: Path) -> list[dict[str, object]]:
    connection = sqlite3.connect(repo / ".zerodown" / "history.db")
    try:
        rows = connection.execute(
            "SELECT message, data FROM events WHERE kind = 'instance_failed'"
        ).fetchall()
    finally:
        connection.close()
    return [{"message": message, "data": json.loads(data)} for message, data in rows]


def test_import_crash_traceback_reaches_reason_event_and_logs_masked(repo: Path) -> None:
    good = _zerodown(repo, "deploy", "api", "--env", "prod", "-r", "good")
    assert good.returncode == 0, good.stdout + good.stderr

    bad = _zerodown(repo, "deploy", "api", "--env", "prod", "-r", "crash", "-v")
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "rolled_back" in bad.stdout
    # deploy -v prints the INSTANCE_FAILED event and the final reason, both with the traceback
    assert bad.stdout.count("ZeroDivisionError: division by zero") >= 2, bad.stdout
    assert "last output:" in bad.stdout
    # without -v the state lines that repeat the reason do not repeat the output
    quiet = _zerodown(repo, "deploy", "api", "--env", "prod", "-r", "crash")
    assert quiet.returncode == 1
    assert quiet.stdout.count("ZeroDivisionError: division by zero") == 2, quiet.stdout
    status = _zerodown(repo, "status")  # one line per environment, the reason cut to one line
    assert "ZeroDivisionError" not in status.stdout and "last: rolled_back" in status.stdout

    history = _zerodown(repo, "history", "--json")
    assert history.returncode == 0, history.stderr
    reason = json.loads(history.stdout)[0]["reason"]
    assert "exited with code" in reason
    assert "last output:" in reason
    assert "Traceback (most recent call last):" in reason
    assert "ZeroDivisionError: division by zero" in reason
    assert "connecting with DB_PASSWORD=****" in reason

    events = _failed_events(repo)
    assert len(events) == 2, events  # the -v deploy's and the quiet one's
    output = events[0]["data"]["output"]  # type: ignore[index]
    assert isinstance(output, list)
    assert output[-1] == "ZeroDivisionError: division by zero"
    assert "connecting with DB_PASSWORD=****" in output
    assert len(output) <= 20 and sum(len(line) + 1 for line in output) <= 4096

    # the rollback removed the crashed instance; `logs` still shows its output, as exited
    logs = _zerodown(repo, "logs", "api", "--env", "prod")
    assert logs.returncode == 0, logs.stdout + logs.stderr
    crashed = [line for line in logs.stdout.splitlines() if "(exited)" in line]
    assert any("ZeroDivisionError: division by zero" in line for line in crashed), logs.stdout
    assert any("connecting with DB_PASSWORD=****" in line for line in crashed), logs.stdout
    assert any("serving" in line and "(exited)" not in line for line in logs.stdout.splitlines())

    for text in (bad.stdout, bad.stderr, history.stdout, logs.stdout, json.dumps(events)):
        assert SECRET not in text
