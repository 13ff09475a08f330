"""`RouterOps`: the built-in router's control ops (the protocol is in `control`), over its table,
event log, metrics recorder and state file.

Reads (`ping`, `status`, `events`, `metrics`) are answered at any time. `handoff` and `retire`
are the process's own (a hitless restart) and go to the `RouterProcess` that owns these ops;
while it hands off, `listen` and every change of the table are refused with `RetryLater`. A
change is answered once `state.json` has it, so an answered change survives a crash.
"""

from __future__ import annotations

import os
import time
from typing import Any, Protocol

from zerodown import __version__
from zerodown.routers.base import RouteSpec, TargetSpec
from zerodown.routers.builtin.control import (
    ControlChannel,
    FdReply,
    RetryLater,
    drain_result_to_dict,
    route_status_to_dict,
)
from zerodown.routers.builtin.recorder import MetricsRecorder
from zerodown.routers.builtin.state import EventLog, StateFile
from zerodown.routers.builtin.table import RoutingTable


class RouterProcess(Protocol):
    """What the ops need of the router process that owns them (`RouterDaemon`)."""

    @property
    def listen(self) -> list[str]:
        """The addresses it listens on now."""
        ...

    @property
    def handing_off(self) -> bool:
        """True while a successor takes over (from `handoff` until it retires or gives up)."""
        ...

    async def add_listeners(self, addresses: list[str]) -> dict[str, Any]:
        """Also listen on those of `addresses` not listened on yet."""
        ...

    async def handoff(self, channel: ControlChannel) -> FdReply:
        """Give the listening sockets and the table to the successor on `channel`."""
        ...

    def retire(self, channel: ControlChannel) -> dict[str, Any]:
        """Stop, once the successor that asked for the handoff on `channel` serves."""
        ...


class RouterOps:
    """The `ControlOps` the router's control server dispatches to."""

    def __init__(
        self,
        process: RouterProcess,
        *,
        table: RoutingTable,
        events: EventLog,
        metrics: MetricsRecorder,
        state: StateFile,
    ) -> None:
        self.process = process
        self.table = table
        self.events = events
        self.metrics = metrics
        self.state = state
        self._started = time.monotonic()

    async def call(self, op: str, args: dict[str, Any], channel: ControlChannel) -> Any:
        """Run one control op; see `zerodown.routers.builtin.control` for the protocol."""
        if op == "ping":
            return {
                "version": __version__,
                "pid": os.getpid(),
                "uptime": round(time.monotonic() - self._started, 3),
                "listen": self.process.listen,
                "handing_off": self.process.handing_off,
            }
        if op == "status":
            service = args.get("service")
            return [route_status_to_dict(s) for s in self.table.status(service)]
        if op == "events":
            return self.events.since(int(args.get("since", 0)), int(args.get("limit", 500)))
        if op == "metrics":
            since = args.get("since")
            return self.metrics.snapshot(None if since is None else float(since))
        if op == "handoff":
            return await self.process.handoff(channel)
        if op == "retire":
            return self.process.retire(channel)
        if self.process.handing_off:
            raise RetryLater("the router is being restarted; ask again in a moment")
        if op == "listen":
            return await self.process.add_listeners([str(a) for a in args["addresses"]])
        return await self._mutate(op, args)

    async def _mutate(self, op: str, args: dict[str, Any]) -> Any:
        result: Any = None
        if op == "apply_route":
            route = RouteSpec.from_dict(args["route"])
            self.table.apply_route(route)
            self.events.record("route", service=route.service, route=route.to_dict())
        elif op == "remove_route":
            self.table.remove_route(str(args["service"]))
            self.events.record("route_removed", service=str(args["service"]))
        elif op == "add_target":
            target = TargetSpec.from_dict(args["target"])
            self.table.add_target(target, healthy=bool(args.get("healthy", False)))
            self.events.record(
                "target",
                service=target.service,
                target=target.to_dict(),
                healthy=bool(args.get("healthy", False)),
            )
        elif op == "set_pool_weights":
            weights = {str(k): int(v) for k, v in dict(args["weights"]).items()}
            self.table.set_pool_weights(str(args["service"]), weights)
            self.events.record("pool_weights", service=str(args["service"]), weights=weights)
        elif op == "drain_target":
            service, target_id = str(args["service"]), str(args["target_id"])
            timeout = args.get("timeout")
            self.events.record("drain_started", service=service, target_id=target_id)
            drained = await self.table.drain_target(
                service, target_id, None if timeout is None else float(timeout)
            )
            result = drain_result_to_dict(drained)
            self.events.record("drained", service=service, **result)
        await self.state.flush()  # the answer promises the change survives a crash
        return result
