"""Git facts and checkouts for a pipeline run: the commit's files in a directory of the run's
own (never the user's work tree), tags at a commit, files changed between two commits."""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import tarfile
from pathlib import Path

from zerodown.errors import PipelineError

_GIT_ENV = {"GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
_GIT_TIMEOUT = 300.0


async def git(repo: Path, *args: str) -> tuple[int, bytes, str]:
    """Run git in `repo`: (exit code, stdout, stderr's first line)."""
    proc = await asyncio.create_subprocess_exec(
        "git",
        *args,
        cwd=repo,
        env={**os.environ, **_GIT_ENV},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), _GIT_TIMEOUT)
    except BaseException:
        proc.kill()
        await proc.wait()
        raise
    first = err.decode("utf-8", "replace").strip().splitlines()
    return proc.returncode or 0, out, first[0] if first else ""


async def resolve_commit(repo: Path, revision: str) -> str:
    """The full sha of `revision` (sha, branch, tag); `PipelineError` if unknown."""
    if not revision or revision.startswith("-") or any(c.isspace() for c in revision):
        raise PipelineError(f"{revision!r} is not a git sha, branch or tag")
    code, out, err = await git(repo, "rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}")
    if code != 0:
        raise PipelineError(f"unknown commit {revision!r} in {repo}{': ' + err if err else ''}")
    return out.decode().strip()


async def commit_subject(repo: Path, sha: str) -> str:
    """The commit's subject line ('' if git cannot say)."""
    code, out, _ = await git(repo, "log", "-1", "--format=%s", sha)
    return out.decode("utf-8", "replace").strip() if code == 0 else ""


async def tags_at(repo: Path, sha: str) -> list[str]:
    """Git tags pointing at `sha`."""
    code, out, _ = await git(repo, "tag", "--points-at", sha)
    return out.decode().split() if code == 0 else []


async def changed_files(repo: Path, base: str | None, sha: str, path: str) -> list[str] | None:
    """Paths under `path` that differ between `base` and `sha` (None: compare everything,
    because there is no base or git does not know it)."""
    if base is None or base == sha:
        return None if base is None else []
    code, out, _ = await git(repo, "diff", "--name-only", "--no-renames", base, sha, "--", path)
    if code != 0:
        return None
    return [line for line in out.decode().splitlines() if line]


async def export_commit(repo: Path, sha: str, target: Path) -> Path:
    """The files of commit `sha` (the part under `repo`'s directory) written to `target`."""
    code, prefix_out, _ = await git(repo, "rev-parse", "--show-prefix")
    prefix = prefix_out.decode().strip().rstrip("/") if code == 0 else ""
    treeish = f"{sha}:{prefix}" if prefix else sha
    code, archive, err = await git(repo, "archive", "--format=tar", treeish)
    if code != 0:
        raise PipelineError(f"cannot check out {sha[:10]} from {repo}: {err}")

    def unpack() -> None:
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:") as tar:
            tar.extractall(target, filter="data")

    await asyncio.to_thread(unpack)
    return target
