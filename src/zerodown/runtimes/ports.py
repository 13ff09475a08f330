"""Free ports for instances: a port bound to 0 and closed again is reserved by nothing, so two
quick starts could get the same one; what was handed out stays promised until the instance's
own records (spec file, container labels) hold it."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable

from zerodown.errors import RuntimeBackendError

_ATTEMPTS = 50


class PortReservations:
    """Ports handed out by this process and not yet released; thread-safe (starts run in
    worker threads, possibly two at once)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reserved: set[tuple[str, int]] = set()

    def allocate(self, host: str, taken: Callable[[], set[int]]) -> int:
        """A port free on `host` now, not in `taken()` (read under the lock), not promised."""
        with self._lock:
            busy = {port for _, port in self._reserved} | taken()
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            for _ in range(_ATTEMPTS):
                with socket.socket(family, socket.SOCK_STREAM) as probe:
                    try:
                        probe.bind((host, 0))
                    except OSError as exc:
                        raise RuntimeBackendError(f"cannot bind on host {host!r}: {exc}") from exc
                    port: int = probe.getsockname()[1]
                if port not in busy:
                    self._reserved.add((host, port))
                    return port
        raise RuntimeBackendError(f"no free port found on {host!r} after {_ATTEMPTS} attempts")

    def release(self, host: str, port: int) -> None:
        """Forget the promise of `port` (its instance holds it now, or never started)."""
        with self._lock:
            self._reserved.discard((host, port))


RESERVATIONS = PortReservations()  # one per process: the starts of every runtime share it
