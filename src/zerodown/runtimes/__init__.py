"""Runtimes start, stop and inspect instances. One module per backend; the engine sees `Runtime`."""

from zerodown.runtimes.base import InstanceInfo, InstanceSpec, InstanceState, Runtime

__all__ = ["InstanceInfo", "InstanceSpec", "InstanceState", "Runtime"]
