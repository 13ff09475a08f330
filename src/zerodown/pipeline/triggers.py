"""What starts a pipeline: a branch maps to the environment whose `branch:` it is (develop ->
dev, main -> prod), and `zerodown remote add NAME` makes a bare git repository whose
post-receive hook queues a run for each pushed branch, like piku."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from zerodown.config import LoadedConfig
from zerodown.config.model import NAME, ZerodownConfig
from zerodown.errors import ConfigError, PipelineError

ZERO_SHA = "0" * 40
PUSHED_REFS = "refs/zerodown/pushed"  # where pushed commits land in the project repository


def environment_for_branch(config: ZerodownConfig, branch: str) -> str | None:
    """The environment `branch` deploys to, or None: only mapped branches ever deploy."""
    for name, environment in config.environments.items():
        if environment.branch == branch:
            return name
    return None


def deploy_branches(config: ZerodownConfig) -> dict[str, str]:
    """branch -> environment for every environment with a `branch:`."""
    return {env.branch: name for name, env in config.environments.items() if env.branch}


@dataclass(frozen=True)
class Remote:
    """A push target zerodown serves."""

    name: str
    path: Path

    @property
    def url(self) -> str:
        """What to give `git remote add`."""
        return str(self.path)


def remote_path(loaded: LoadedConfig, name: str) -> Path:
    """Where remote `name`'s bare repository lives."""
    return loaded.state_dir / "remotes" / f"{name}.git"


def zerodown_command() -> list[str]:
    """How a hook calls this zerodown (the same interpreter, whatever PATH says)."""
    return [sys.executable, "-m", "zerodown"]


def hook_script(loaded: LoadedConfig) -> str:
    """The post-receive hook: for each pushed branch, copy the commit into the project
    repository under refs/zerodown/pushed/<branch> and queue a pipeline run for it."""
    project = shlex.quote(str(loaded.root))
    config = shlex.quote(str(loaded.path))
    command = " ".join(shlex.quote(part) for part in zerodown_command())
    return f"""#!/bin/sh
# Installed by `zerodown remote add`: queue a pipeline run for every pushed branch.
while read old new ref; do
    case "$ref" in refs/heads/*) ;; *) continue ;; esac
    [ "$new" = "{ZERO_SHA}" ] && continue
    branch="${{ref#refs/heads/}}"
    git push --quiet --force {project} "$new:{PUSHED_REFS}/$branch" || exit 1
    (
        unset GIT_DIR GIT_WORK_TREE GIT_INDEX_FILE GIT_OBJECT_DIRECTORY \\
            GIT_ALTERNATE_OBJECT_DIRECTORIES GIT_QUARANTINE_PATH
        cd {project} && {command} pipeline run --config {config} \\
            --branch "$branch" --sha "$new" --trigger push --detach
    ) || exit 1
done
"""


def add_remote(loaded: LoadedConfig, name: str) -> Remote:
    """Create (or refresh the hook of) the bare repository of remote `name`."""
    if not NAME.match(name):
        raise ConfigError(
            f"remote name {name!r}: use lowercase letters, digits and '-'", field="NAME"
        )
    _check_project_repository(loaded.root)
    path = remote_path(loaded, name)
    if not (path / "HEAD").exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            ["git", "init", "--quiet", "--bare", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise PipelineError(f"git init --bare {path} failed: {done.stderr.strip()}")
    hook = path / "hooks" / "post-receive"
    hook.parent.mkdir(exist_ok=True)
    hook.write_text(hook_script(loaded))
    os.chmod(hook, 0o755)
    return Remote(name, path)


def _check_project_repository(root: Path) -> None:
    done = subprocess.run(
        ["git", "rev-parse", "--git-dir"], cwd=root, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise ConfigError(
            f"{root} is not in a git repository: pushed commits are kept in the project's "
            "repository, so run `git init` there first"
        )


def spawn_run(loaded: LoadedConfig, run_id: str) -> None:
    """Execute a queued run in a background process of its own (output in the state dir), so a
    push's hook or a webhook returns at once."""
    logs = loaded.state_dir / "pipeline" / "runs"
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / f"{run_id}.out", "ab") as out:
        subprocess.Popen(
            [*zerodown_command(), "pipeline", "execute", run_id, "--config", str(loaded.path)],
            cwd=loaded.root,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # outlives the hook or request that started it
        )
