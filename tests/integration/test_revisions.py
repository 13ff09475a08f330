"""Revisions against a real git repository in tmp_path: resolve, export, build once."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from zerodown.config.model import ServiceConfig
from zerodown.errors import BuildFailed
from zerodown.revisions import (
    BUILD_LOG,
    BUILT_MARKER,
    commit_info,
    prepare_release,
    resolve_revision,
)

ROOT = Path(__file__).resolve().parents[2]
GIT_ENV = {
    **os.environ,
    "GIT_CONFIG_GLOBAL": os.devnull,  # the developer's git config must not change the fixture
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.com",
}


def git(repo: Path, *args: str, when: int | None = None) -> str:
    env = dict(GIT_ENV)
    if when is not None:
        env["GIT_AUTHOR_DATE"] = env["GIT_COMMITTER_DATE"] = f"{when} +0000"
    done = subprocess.run(
        ["git", "-C", str(repo), *args], env=env, check=True, capture_output=True, text=True
    )
    return done.stdout.strip()


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@dataclass
class Repo:
    """A repository with history on main, a feature branch, two tags and a dirty work tree."""

    root: Path  # the directory zerodown.yml would live in
    path: Path
    first: str
    second: str
    feature: str


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    path = tmp_path / "project" / "repo"
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    write(path / "README.md", "readme\n")
    write(path / "svc" / "app.txt", "v1\n")
    write(path / "other" / "x.txt", "x\n")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "first commit", when=1_700_000_000)
    first = git(path, "rev-parse", "HEAD")
    git(path, "tag", "-a", "v1", "-m", "release 1")
    git(path, "checkout", "-q", "-b", "feature")
    write(path / "svc" / "app.txt", "feature\n")
    git(path, "commit", "-q", "-am", "feature work", when=1_700_000_100)
    feature = git(path, "rev-parse", "HEAD")
    git(path, "checkout", "-q", "main")
    write(path / "svc" / "app.txt", "v2\n")
    write(path / "svc" / "lib" / "new.txt", "new\n")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "second commit\n\nwith a body", when=1_700_000_200)
    second = git(path, "rev-parse", "HEAD")
    git(path, "tag", "v2")
    # The user's work in progress: a modified file, a staged file, an untracked file.
    write(path / "svc" / "app.txt", "dirty\n")
    write(path / "other" / "x.txt", "staged\n")
    git(path, "add", "other/x.txt")
    write(path / "svc" / "untracked.txt", "untracked\n")
    return Repo(root=tmp_path / "project", path=path, first=first, second=second, feature=feature)


def service(**fields: Any) -> ServiceConfig:
    values: dict[str, Any] = {"run": "python app.py", "source": {"repo": "repo", "path": "svc"}}
    values.update(fields)
    return ServiceConfig.model_validate(values)


def files_under(path: Path) -> dict[str, str]:
    return {
        str(item.relative_to(path)): item.read_text()
        for item in sorted(path.rglob("*"))
        if item.is_file()
    }


async def test_resolves_sha_short_sha_branch_and_tags(repo: Repo) -> None:
    """Full and short shas, branches, annotated and lightweight tags all give the full sha."""
    assert await resolve_revision(repo.path, repo.first) == repo.first
    assert await resolve_revision(repo.path, repo.second[:8]) == repo.second
    assert await resolve_revision(repo.path, "main") == repo.second
    assert await resolve_revision(repo.path, "feature") == repo.feature
    assert await resolve_revision(repo.path, "v1") == repo.first  # annotated: peeled to commit
    assert await resolve_revision(repo.path, "v2") == repo.second


async def test_unknown_revision_fails_naming_it(repo: Repo, tmp_path: Path) -> None:
    """An unknown name, an option-like name and a non-repository each fail with a clear sentence."""
    with pytest.raises(BuildFailed, match=r"unknown revision 'v9' in .*repo: use a sha"):
        await resolve_revision(repo.path, "v9")
    with pytest.raises(BuildFailed, match="is not a git sha, branch or tag"):
        await resolve_revision(repo.path, "--all")
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(BuildFailed, match="is not a git repository"):
        await resolve_revision(plain, "main")


async def test_commit_info_gives_subject_and_time(repo: Repo) -> None:
    """The subject line (not the body) and the commit's unix time."""
    assert await commit_info(repo.path, repo.second) == ("second commit", 1_700_000_200.0)


async def test_export_holds_only_the_service_path_at_that_commit(
    repo: Repo, tmp_path: Path
) -> None:
    """Files of svc/ at v1 only: no other paths, no uncommitted or untracked changes."""
    state = tmp_path / "state"
    release = await prepare_release(
        "api", service(), root=repo.root, state_dir=state, revision="v1"
    )
    assert release.path == state / "releases" / "api" / repo.first
    assert files_under(release.path) == {"app.txt": "v1\n"}
    assert (release.sha, release.message, release.commit_time) == (
        repo.first,
        "first commit",
        1_700_000_000.0,
    )
    assert (release.built, release.cached) == (False, False)

    newer = await prepare_release(
        "api", service(), root=repo.root, state_dir=state, revision="main"
    )
    assert files_under(newer.path) == {"app.txt": "v2\n", "lib/new.txt": "new\n"}
    again = await prepare_release("api", service(), root=repo.root, state_dir=state, revision="v1")
    assert again.cached and again.path == release.path
    assert not list((state / "releases" / "api").glob(".*.tmp-*"))  # no temp dir left behind


async def test_repository_root_and_missing_path(repo: Repo, tmp_path: Path) -> None:
    """path '.' exports the whole tree; a path missing at that commit fails naming it."""
    state = tmp_path / "state"
    whole = service(source={"repo": "repo", "path": "."})
    release = await prepare_release("web", whole, root=repo.root, state_dir=state, revision="v1")
    assert files_under(release.path) == {
        "README.md": "readme\n",
        "other/x.txt": "x\n",
        "svc/app.txt": "v1\n",
    }
    missing = service(source={"repo": "repo", "path": "svc/lib"})
    with pytest.raises(BuildFailed, match=r"source.path 'svc/lib' does not exist at commit"):
        await prepare_release("lib", missing, root=repo.root, state_dir=state, revision="v1")
    assert not (state / "releases" / "lib" / repo.first).exists()


async def test_users_work_tree_and_index_are_unchanged(repo: Repo, tmp_path: Path) -> None:
    """`git status --porcelain` and the index file are byte-for-byte the same after a prepare."""
    status = git(repo.path, "status", "--porcelain", "-uall")
    index = (repo.path / ".git" / "index").read_bytes()
    head = git(repo.path, "rev-parse", "--abbrev-ref", "HEAD")
    await prepare_release(
        "api", service(), root=repo.root, state_dir=tmp_path / "state", revision="feature"
    )
    assert (repo.path / ".git" / "index").read_bytes() == index
    assert git(repo.path, "status", "--porcelain", "-uall") == status
    assert git(repo.path, "rev-parse", "--abbrev-ref", "HEAD") == head
    assert (repo.path / "svc" / "app.txt").read_text() == "dirty\n"


async def test_build_runs_once_per_revision(repo: Repo, tmp_path: Path) -> None:
    """The build runs in the release with its output logged; a second prepare reuses it."""
    state = tmp_path / "state"
    runs = tmp_path / "runs"
    config = service(
        build=f'echo run >> {runs}; echo "building $ZERODOWN_REVISION"; cp app.txt out'
    )
    lines: list[str] = []
    first = await prepare_release(
        "api", config, root=repo.root, state_dir=state, revision="v2", on_line=lines.append
    )
    assert (first.built, first.cached) == (True, False)
    assert lines == [f"building {repo.second}"]
    assert (first.path / BUILD_LOG).read_text() == f"building {repo.second}\n"
    assert (first.path / "out").read_text() == "v2\n"
    assert (first.path / BUILT_MARKER).exists()
    second = await prepare_release("api", config, root=repo.root, state_dir=state, revision="v2")
    assert (second.built, second.cached) == (True, True)
    assert runs.read_text() == "run\n"


async def test_failing_build_reports_its_tail_and_runs_again(repo: Repo, tmp_path: Path) -> None:
    """A failed build raises with its last lines; the next prepare builds again in a clean tree."""
    state = tmp_path / "state"
    runs = tmp_path / "runs"
    config = service(
        build=f"echo run >> {runs}; test -e junk && echo dirty; touch junk; "
        "echo compiling; echo 'error: boom' >&2; exit 4"
    )
    for attempt in (1, 2):
        with pytest.raises(BuildFailed) as failure:
            await prepare_release("api", config, root=repo.root, state_dir=state, revision="v1")
        message = str(failure.value)
        assert "failed with exit code 4" in message
        assert "| compiling" in message and "| error: boom" in message
        assert "dirty" not in message  # the retry started from a fresh export
        assert runs.read_text() == "run\n" * attempt


@pytest.mark.timeout(30)
async def test_build_timeout_fails_the_build(repo: Repo, tmp_path: Path) -> None:
    """A build past build_timeout is killed and reported as timed out with its output."""
    config = service(build="echo started; sleep 60", build_timeout=0.5)
    with pytest.raises(BuildFailed, match=r"timed out after \d+ s") as failure:
        await prepare_release(
            "api", config, root=repo.root, state_dir=tmp_path / "state", revision="v1"
        )
    assert "| started" in str(failure.value)


async def test_without_source_the_workdir_is_built_every_time(tmp_path: Path) -> None:
    """No source: run from workdir as it is, the revision is a label, the build always runs."""
    workdir = tmp_path / "app"
    workdir.mkdir()
    runs = tmp_path / "runs"
    config = ServiceConfig.model_validate(
        {"run": "python app.py", "workdir": "app", "build": f"echo $ZERODOWN_REVISION >> {runs}"}
    )
    for _ in range(2):
        release = await prepare_release(
            "api", config, root=tmp_path, state_dir=tmp_path / "state", revision="dev-1"
        )
        assert (release.sha, release.path, release.message, release.commit_time) == (
            "dev-1",
            workdir,
            "",
            None,
        )
        assert (release.built, release.cached) == (True, False)
    assert runs.read_text() == "dev-1\ndev-1\n"


PREPARE = """
import asyncio, sys
from pathlib import Path
from zerodown.config.model import ServiceConfig
from zerodown.revisions import prepare_release

config = ServiceConfig.model_validate({
    "run": "python app.py", "source": {"repo": "repo", "path": "svc"}, "build": sys.argv[3]})
release = asyncio.run(prepare_release(
    "api", config, root=Path(sys.argv[1]), state_dir=Path(sys.argv[2]), revision="v2"))
print(release.cached)
"""


async def test_concurrent_prepares_in_two_processes_build_once(repo: Repo, tmp_path: Path) -> None:
    """Two processes preparing one sha at once: one exports and builds, the other reuses it."""
    state = tmp_path / "state"
    runs = tmp_path / "runs"
    build = f"echo run >> {runs}; sleep 0.5; echo built > out"
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            PREPARE,
            str(repo.root),
            str(state),
            build,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(2)
    ]
    results = await asyncio.wait_for(asyncio.gather(*(p.communicate() for p in procs)), 60)
    assert [p.returncode for p in procs] == [0, 0], results
    assert sorted(out.decode().strip() for out, _ in results) == ["False", "True"]
    assert runs.read_text() == "run\n"
    release = state / "releases" / "api" / repo.second
    assert files_under(release) == {
        "app.txt": "v2\n",
        "lib/new.txt": "new\n",
        "out": "built\n",
        BUILD_LOG: "",
        BUILT_MARKER: (release / BUILT_MARKER).read_text(),
    }
