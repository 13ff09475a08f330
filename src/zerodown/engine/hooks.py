"""Lifecycle hooks (CodeDeploy names): run the user's command, record it as events, fail loudly.

Every run is recorded as HOOK_STARTED, its output lines as HOOK_OUTPUT (at most MAX_OUTPUT_LINES,
then one line saying how many were dropped: a chatty hook must not flood the history), and
HOOK_FINISHED. A non-zero exit or a timeout raises HookFailed, which the engine turns into a
failed deployment (and a rollback when it is enabled).
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

from zerodown.config.model import HookConfig
from zerodown.domain.events import DeploymentEvent, EventKind
from zerodown.errors import HookFailed
from zerodown.shell import ShellResult, run_shell

MAX_OUTPUT_LINES = 1000


class HookRunner:
    """Runs one deployment's configured hooks in `cwd` and records each run as events."""

    def __init__(
        self,
        hooks: Mapping[str, HookConfig],
        *,
        cwd: Path,
        base_env: Mapping[str, str],
        emit: Callable[[DeploymentEvent], Awaitable[None]],
        deployment_id: str,
    ) -> None:
        self._hooks = dict(hooks)
        self._cwd = cwd
        self._base_env = dict(base_env)
        self._emit = emit
        self._deployment_id = deployment_id

    def has(self, name: str) -> bool:
        """True when hook `name` is configured."""
        return name in self._hooks

    def per_instance(self, name: str) -> bool:
        """Whether hook `name` runs once per instance (its `scope`), rather than once per batch."""
        hook = self._hooks.get(name)
        return hook is not None and hook.scope == "instance"

    async def run(
        self, name: str, *, instance: str | None = None, extra_env: Mapping[str, str] = {}
    ) -> None:
        """Run hook `name` (for `instance`, if given); a no-op when it is not configured.

        Raises HookFailed when the command exits non-zero, times out or cannot start.
        """
        hook = self._hooks.get(name)
        if hook is None:
            return
        where = f" on {instance}" if instance else ""
        await self._event(
            EventKind.HOOK_STARTED,
            f"hook {name}{where} started: {hook.command}",
            {"hook": name, "instance": instance, "command": hook.command},
        )
        lines: asyncio.Queue[str | None] = asyncio.Queue()
        # run_shell hands lines over synchronously; a task emits them in order, as they arrive.
        forwarder = asyncio.create_task(self._forward_output(name, instance, lines))
        try:
            result = await run_shell(
                hook.command,
                cwd=self._cwd,
                env=self._environment(name, instance, extra_env),
                timeout=hook.timeout,
                on_line=lines.put_nowait,
            )
        except OSError as exc:
            lines.put_nowait(None)
            await forwarder
            await self._finished(name, instance, None, 0.0, ok=False)
            raise HookFailed(f"hook {name}{where} could not start in {self._cwd}: {exc}") from exc
        except BaseException:
            forwarder.cancel()
            raise
        lines.put_nowait(None)
        await forwarder
        await self._finished(name, instance, result.exit_code, result.seconds, ok=result.ok)
        if not result.ok:
            raise HookFailed(_failure(name, where, hook, result))

    def _environment(
        self, name: str, instance: str | None, extra_env: Mapping[str, str]
    ) -> dict[str, str]:
        env = {**os.environ, **self._base_env, "ZERODOWN_HOOK": name}
        if instance is not None:
            env["ZERODOWN_INSTANCE"] = instance
        else:
            env.pop("ZERODOWN_INSTANCE", None)  # never one inherited from our own environment
        env.update(extra_env)
        return env

    async def _forward_output(
        self, name: str, instance: str | None, lines: asyncio.Queue[str | None]
    ) -> None:
        sent = dropped = 0
        while (line := await lines.get()) is not None:
            if sent < MAX_OUTPUT_LINES:
                sent += 1
                await self._event(
                    EventKind.HOOK_OUTPUT, line, {"hook": name, "instance": instance, "line": line}
                )
            else:
                dropped += 1
        if dropped:
            note = f"... {dropped} more output lines not recorded (limit {MAX_OUTPUT_LINES})"
            await self._event(
                EventKind.HOOK_OUTPUT, note, {"hook": name, "instance": instance, "line": note}
            )

    async def _finished(
        self, name: str, instance: str | None, exit_code: int | None, seconds: float, *, ok: bool
    ) -> None:
        where = f" on {instance}" if instance else ""
        verdict = "succeeded" if ok else "failed"
        await self._event(
            EventKind.HOOK_FINISHED,
            f"hook {name}{where} {verdict} in {seconds:.1f} s (exit code {exit_code})",
            {
                "hook": name,
                "instance": instance,
                "exit_code": exit_code,
                "seconds": round(seconds, 3),
                "ok": ok,
            },
        )

    async def _event(self, kind: EventKind, message: str, data: dict[str, object]) -> None:
        await self._emit(DeploymentEvent(self._deployment_id, kind, message, dict(data)))


def _failure(name: str, where: str, hook: HookConfig, result: ShellResult) -> str:
    """The one sentence a user reads when a hook fails."""
    if result.timed_out:
        return f"hook {name}{where} timed out after {hook.timeout:g} s"
    if result.exit_code < 0:
        try:
            signame = signal.Signals(-result.exit_code).name
        except ValueError:
            signame = str(-result.exit_code)
        reason = f"was killed by signal {signame}"
    else:
        reason = f"failed with exit code {result.exit_code}"
    last = next((line for line in reversed(result.output_tail) if line.strip()), "(no output)")
    return f"hook {name}{where} {reason}: {last}"
