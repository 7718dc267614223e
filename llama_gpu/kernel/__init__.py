"""The microkernel: lifecycle, plugins, events, models. Imports no Flask, no HTTP, no SQL."""

from .kernel import Kernel, KernelState

__all__ = ["Kernel", "KernelState"]
