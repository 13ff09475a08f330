"""The secrets-grep test: deploy with secrets through the real stack, let a hook echo them, fail
a health check on purpose, then find no secret value anywhere zerodown writes or prints.

Real git repository (the demo's v1 and v3, whose health check fails), real router, LocalRuntime
instances, SQLite history, `zerodown` run as a subprocess; notifications go to a local receiver.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from zerodown.demo import make_repository
from zerodown.secrets.masking import encodings

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

SECRETS = {
    "DB_PASSWORD": "Zq9-sEcReT-db-Pa55",
    "API_TOKEN": "tok_7f3a9c1e5b2d",
    "WEBHOOK_KEY": "whk-9a8b7c6d5e4f",
}
# Every form a value is masked in: raw, URL-quoted, base64 (with and without padding).
NEEDLES = sorted({form for value in SECRETS.values() for form in encodings(value)})


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Receiver(ThreadingHTTPServer):
    """A webhook receiver that keeps every request it gets."""

    def __init__(self) -> None:
        self.payloads: list[str] = []
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.server.payloads.append(f"{self.path}\n{self.headers}\n{body.decode('utf-8')}")
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return None


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _configure(repo: Path, receiver: Receiver) -> None:
    """Hooks and an app that print the secrets; notifications to the receiver."""
    config = repo / "zerodown.yml"
    text = config.read_text()
    run = f"    run: {sys.executable} app.py\n"
    assert run in text
    hooks = (
        "    hooks:\n"
        "      AfterInstall: >-\n"
        '        echo "db=$DB_PASSWORD token=$API_TOKEN url=postgres://app:$DB_PASSWORD@db/app";\n'
        '        printf %s "$API_TOKEN" | base64\n'
    )
    text = text.replace(
        run,
        f'    run: echo "booting with DB_PASSWORD=$DB_PASSWORD"; exec {sys.executable} app.py\n'
        + hooks,
    )
    port = receiver.server_address[1]
    text += (
        "notifications:\n"
        "  channels:\n"
        f"    hook: {{type: webhook, url: 'http://127.0.0.1:{port}/hook', "
        "secret: '${secret:WEBHOOK_KEY}'}\n"
        "  routes:\n"
        "    - channel: hook\n"
        "  timeout: 2s\n"
        "  retries: 0\n"
    )
    config.write_text(text)


def _zerodown(
    repo: Path, *args: str, stdin: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zerodown", *args],
        cwd=repo,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _hits(text: str) -> list[str]:
    return [needle for needle in NEEDLES if needle in text]


def _assert_no_secret_in_files(repo: Path) -> list[Path]:
    """Every file under the state dir, read as bytes: no secret in any form."""
    files = [path for path in (repo / ".zerodown").rglob("*") if path.is_file()]
    for path in files:
        try:
            data = path.read_bytes()
        except FileNotFoundError:  # a temporary file renamed meanwhile: its target is checked
            continue
        leaked = [needle for needle in NEEDLES if needle.encode() in data]
        assert not leaked, f"{path.relative_to(repo)} holds a secret"
    return files


def _database_text(path: Path) -> str:
    """Every row of every table of the history, as text."""
    connection = sqlite3.connect(path)
    try:
        tables = [
            row[0]
            for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        ]
        return "\n".join(
            repr(row) for table in tables for row in connection.execute(f'SELECT * FROM "{table}"')
        )
    finally:
        connection.close()


def test_no_secret_value_in_files_history_cli_output_or_notifications(
    tmp_path: Path, receiver: Receiver
) -> None:
    repo = make_repository(tmp_path, _free_port())
    _configure(repo, receiver)
    outputs: list[str] = []
    try:
        for name, value in SECRETS.items():
            done = _zerodown(repo, "secrets", "set", "--env", "prod", name, stdin=value)
            assert done.returncode == 0, done.stderr
            outputs.append(done.stdout + done.stderr)

        good = _zerodown(repo, "deploy", "web", "--env", "prod", "-r", "v1", "-v")
        outputs.append(good.stdout + good.stderr)
        assert good.returncode == 0, good.stdout + good.stderr
        assert "db=**** token=**** url=postgres://app:****@db/app" in good.stdout
        bad = _zerodown(repo, "deploy", "web", "--env", "prod", "-r", "v3", "-v")
        outputs.append(bad.stdout + bad.stderr)
        assert bad.returncode == 1, bad.stdout + bad.stderr
        assert "rolled_back" in bad.stdout

        for args in (
            ("history", "--json"),
            ("logs", "web", "--env", "prod", "-n", "200"),
            ("secrets", "list", "--env", "prod"),
            ("secrets", "get", "--env", "prod", "DB_PASSWORD"),
        ):
            done = _zerodown(repo, *args)
            assert done.returncode == 0, done.stderr
            outputs.append(done.stdout + done.stderr)
        history, logs = json.loads(outputs[-4]), outputs[-3]
        assert [h["state"] for h in history] == ["rolled_back", "succeeded"]
        assert "booting with DB_PASSWORD=****" in logs  # the app printed it; its log masks it
        # while instances run (`stop` removes their directories, logs included)
        files = _assert_no_secret_in_files(repo)
        assert any(path.name == "output.log" for path in files)
    finally:
        _zerodown(repo, "stop")

    state_dir = repo / ".zerodown"
    _assert_no_secret_in_files(repo)
    database = _database_text(state_dir / "history.db")
    assert "hook_output" in database
    assert not _hits(database), "the history database holds a secret"
    for output in outputs:
        assert not _hits(output), f"CLI output leaks a secret:\n{output}"
    assert receiver.payloads, "no notification arrived"
    for payload in receiver.payloads:
        assert not _hits(payload), f"a notification leaks a secret:\n{payload}"
