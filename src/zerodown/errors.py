"""The one error tree of zerodown.

    ZerodownError
    ├── ConfigError              bad zerodown.yml / bad input: exit code 2, nothing started
    ├── HealthCheckFailed        an instance did not become (or stay) healthy
    ├── HookFailed               a lifecycle hook exited non-zero or timed out
    ├── BuildFailed              resolving, exporting or building a revision failed
    ├── DeploymentAborted        a user aborted the deployment (Ctrl-C, `zerodown abort`)
    ├── IllegalTransition        a state machine was asked for a move its table forbids
    ├── LockHeld                 another deployment holds the service+environment lock: exit 2
    ├── RouterError              the router (any backend) refused or could not be reached
    │   └── RouterUnavailable    no router answers on the control socket
    ├── RuntimeBackendError      a runtime backend failed to start/stop/inspect an instance
    │   └── InstanceNotFound     no instance with that id
    ├── StoreError               the history store failed
    ├── AlarmTriggered           an alarm went to ALARM during a deployment or its bake window
    ├── VerificationFailed       a post-deploy check (smoke, dependency, log scan) failed
    ├── SecretsError             a secret store failed (the message never holds a value)
    ├── ImageRegistryError       a container registry refused or could not be reached
    ├── PlatformError            a managed platform (ECS) refused, failed or rolled back
    ├── NotificationFailed       a notifier could not deliver (never fails a deployment)
    ├── PipelineError            a pipeline run could not go on (a gate refused, a job failed)
    │   └── PipelineDefinitionError  the `pipeline:` jobs are not a valid DAG: exit code 2
    └── AnalysisFailed           a canary's analysis failed (or stayed inconclusive too long)

Errors from foreign libraries are translated at the seam that calls them and carry a sentence
a user can act on. Only the CLI turns them into exit codes.
"""

from __future__ import annotations


class ZerodownError(Exception):
    """Base of every error zerodown raises on purpose."""

    exit_code = 1


class ConfigError(ZerodownError):
    """Bad configuration or bad input; the message names file, line, field and what to do."""

    exit_code = 2

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.path = path
        self.line = line
        self.field = field
        self.reason = message
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        what = f"{field}: " if field else ""
        super().__init__(f"{where}{what}{message}")


class HealthCheckFailed(ZerodownError):
    """An instance did not pass its health check (deadline, threshold, or exit)."""


class HookFailed(ZerodownError):
    """A lifecycle hook exited non-zero or ran past its timeout."""


class BuildFailed(ZerodownError):
    """A revision could not be resolved, exported or built."""


class DeploymentAborted(ZerodownError):
    """The deployment was aborted by a user."""


class IllegalTransition(ZerodownError):
    """A state machine was asked to move between two states its table does not connect."""

    def __init__(self, machine: str, current: str, wanted: str) -> None:
        self.machine = machine
        self.current = current
        self.wanted = wanted
        super().__init__(f"{machine}: cannot go from {current!r} to {wanted!r}")


class LockHeld(ZerodownError):
    """Another deployment holds the lock of this service and environment. The request is
    refused (exit code 2) and never becomes a deployment."""

    exit_code = 2


class RouterError(ZerodownError):
    """The router refused a command or failed to apply it."""


class RouterUnavailable(RouterError):
    """No router answers on the control socket."""


class RuntimeBackendError(ZerodownError):
    """A runtime backend could not start, stop or inspect an instance."""


class InstanceNotFound(RuntimeBackendError):
    """No instance with the given id exists in this runtime."""


class StoreError(ZerodownError):
    """The history store failed."""


class VerificationFailed(ZerodownError):
    """A post-deploy check failed (smoke check, dependency, log scan); the message names it."""

    def __init__(self, message: str, *, checks: tuple[str, ...] = ()) -> None:
        self.checks = checks  # the names of the failed checks, in the order they ran
        super().__init__(message)


class SecretsError(ZerodownError):
    """A secret store could not be read or written; the message never contains a secret value."""


class ImageRegistryError(ZerodownError):
    """A container image registry (plain v2 API or ECR) refused a call or could not be reached."""


class PlatformError(ZerodownError):
    """A managed platform (ECS) refused a call, could not be reached, or its rollout failed."""


class PipelineError(ZerodownError):
    """A pipeline run could not go on: a gate refused it, a job failed, or it was cancelled."""


class PipelineDefinitionError(PipelineError):
    """The pipeline's jobs are not a valid DAG (unknown need, cycle); the message names them."""

    exit_code = 2


class NotificationFailed(ZerodownError):
    """A notifier could not deliver a notification; the message never holds a URL or secret."""


class AlarmTriggered(ZerodownError):
    """An alarm went to ALARM during a deployment or its bake window; the message names it."""

    def __init__(self, message: str, *, alarm: str, value: float | None = None) -> None:
        self.alarm = alarm
        self.value = value
        super().__init__(message)


class AnalysisFailed(ZerodownError):
    """A canary analysis judged the new revision worse than its baseline; the message has the
    numbers."""
