"""Release retention: more deployments than `keep_releases` leave only the releases that can
still matter (live, rollback target, in use, the last used), and builds share one cache.

Real git repository, real router and instances, `zerodown` run as a subprocess; the retention
rule itself is checked on plain values.
"""

from __future__ import annotations

import fcntl
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from zerodown.config.model import ServiceConfig, SourceConfig
from zerodown.revisions import (
    CACHE_DIR,
    USED_STAMP,
    StoredRelease,
    plan_release_prune,
    prepare_release,
    prune_releases,
)
from zerodown.runtimes.base import InstanceSpec, ReleaseDirectory
from zerodown.runtimes.local import LocalRuntime

APP = """\
import os
from http.server import BaseHTTPRequestHandler, HTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(open("VERSION").read().encode())

    def log_message(self, *args):
        pass


HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"""
VERSIONS = [f"c{n}" for n in range(6)]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=repo,
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip()


def _zerodown(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zerodown", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Path]:
    """Six commits c0..c5 of a tiny app; `keep_releases: 1`; a build that records its cache."""
    repo = tmp_path / "svc"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    (repo / "app.py").write_text(APP)
    for version in VERSIONS:
        (repo / "VERSION").write_text(version)
        _git(repo, "add", "-A")
        _git(repo, "commit", "-q", "-m", version)
        _git(repo, "tag", version)
    (repo / "zerodown.yml").write_text(
        textwrap.dedent(
            f"""\
            router:
              listen: ["127.0.0.1:{_free_port()}"]
            services:
              api:
                source: {{repo: ., path: .}}
                build: echo "$PIP_CACHE_DIR" > pip-cache.txt
                run: {sys.executable} app.py
                keep_releases: 1
                health: {{path: /, start_interval: 0.1s, healthy_threshold: 1}}
                stop_timeout: 5s
            environments:
              prod:
                strategy: {{type: rolling, batch: 1, surge: true}}
            """
        )
    )
    yield repo
    _zerodown(repo, "stop")  # every instance, the orphan started below included


def _releases(repo: Path) -> dict[str, Path]:
    service_dir = repo / ".zerodown" / "releases" / "api"
    return {p.name: p for p in service_dir.iterdir() if len(p.name) == 40}


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_deploys_past_the_limit_delete_old_releases_but_keep_live_target_and_in_use(
    repo: Path,
) -> None:
    sha = {version: _git(repo, "rev-parse", version) for version in VERSIONS}
    assert _zerodown(repo, "deploy", "api", "--env", "prod", "-r", "c0").returncode == 0
    # An instance outside every configured environment (one removed from zerodown.yml) still
    # runs from c0's release: that release is in use.
    runtime = LocalRuntime(repo / ".zerodown")
    await runtime.start(
        InstanceSpec(
            service="api",
            revision=sha["c0"],
            instance_id="api-gone-c0",
            artifact=ReleaseDirectory(f"{sys.executable} app.py", str(_releases(repo)[sha["c0"]])),
            labels={"environment": "gone"},
        )
    )
    for version in VERSIONS[1:]:
        done = _zerodown(repo, "deploy", "api", "--env", "prod", "-r", version)
        assert done.returncode == 0, done.stdout + done.stderr

    kept = _releases(repo)
    # c5 live (and the last used), c4 its rollback target, c0 in use; c1..c3 went
    assert set(kept) == {sha["c5"], sha["c4"], sha["c0"]}
    # every build saw the same shared cache dir under the state dir
    caches = {(path / "pip-cache.txt").read_text().strip() for path in kept.values()}
    assert caches == {str(repo / ".zerodown" / CACHE_DIR / "pip")}

    # `zerodown artifacts prune` applies the same policy: once nothing runs c0 it may go
    await runtime.stop("api-gone-c0")
    await runtime.remove("api-gone-c0")
    dry = _zerodown(repo, "artifacts", "prune", "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert f"would delete release {sha['c0'][:10]} of api" in dry.stdout
    assert sha["c0"] in _releases(repo)
    done = _zerodown(repo, "artifacts", "prune")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"deleted release {sha['c0'][:10]} of api" in done.stdout
    assert set(_releases(repo)) == {sha["c5"], sha["c4"]}


def _release(sha: str, used: float) -> StoredRelease:
    return StoredRelease("api", sha, Path("/nowhere") / sha, used)


def test_plan_keeps_protected_and_the_last_used_and_deletes_the_rest() -> None:
    releases = [_release(c * 40, n) for n, c in enumerate("abcdef")]  # f used last
    doomed = plan_release_prune(releases, protected={"b" * 40}, keep_last=2)
    assert [r.sha[0] for r in doomed] == ["d", "c", "a"]
    assert plan_release_prune(releases, protected=[], keep_last=10) == []


async def test_a_release_being_prepared_is_not_deleted(tmp_path: Path) -> None:
    """A prepare holds the release's flock while it exports and builds: prune skips it."""
    service_dir = tmp_path / "releases" / "api"
    for n, name in enumerate(("a" * 40, "b" * 40, "c" * 40)):
        (service_dir / name).mkdir(parents=True)
        stamp = service_dir / USED_STAMP.format(sha=name)
        stamp.touch()
        os.utime(stamp, (1000.0 + n, 1000.0 + n))
    with (service_dir / f".{'a' * 40}.lock").open("ab") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        deleted = await prune_releases(tmp_path, "api", protected=(), keep_last=1)
    assert [r.sha for r in deleted] == ["b" * 40]
    assert sorted(p.name for p in service_dir.iterdir() if not p.name.startswith(".")) == [
        "a" * 40,
        "c" * 40,
    ]


async def test_a_cache_the_user_chose_wins_over_the_shared_one(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIP_CACHE_DIR", str(tmp_path / "mine"))
    service = ServiceConfig(
        source=SourceConfig(repo=".", path="."),
        build='echo "$PIP_CACHE_DIR" > pip-cache.txt; echo "$npm_config_cache" >> pip-cache.txt',
        run="true",
    )
    release = await prepare_release(
        "api", service, root=repo, state_dir=tmp_path / "state", revision="c1"
    )
    assert (release.path / "pip-cache.txt").read_text().split() == [
        str(tmp_path / "mine"),
        str(tmp_path / "state" / CACHE_DIR / "npm"),
    ]
