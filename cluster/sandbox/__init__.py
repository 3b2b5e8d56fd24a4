"""A sandbox for model-written Python: no network, no files outside a fresh temporary
directory, limits on CPU, memory, processes, output and wall time (docs/security.md)."""

from cluster.sandbox.command import SandboxError, SandboxUnavailableError
from cluster.sandbox.result import SandboxResult, SandboxStatus, last_exception_line
from cluster.sandbox.sandbox import Sandbox
from cluster.sandbox.settings import SandboxSettings

__all__ = [
    "Sandbox",
    "SandboxError",
    "SandboxResult",
    "SandboxSettings",
    "SandboxStatus",
    "SandboxUnavailableError",
    "last_exception_line",
]
