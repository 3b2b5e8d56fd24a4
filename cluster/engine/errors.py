"""Errors an engine call can end with, as every process sees them (they cross Ray by pickle)."""

from __future__ import annotations


class EngineUnavailable(RuntimeError):
    """The replica's engine is dead (its process died or failed): the call did not run and the
    replica is about to be replaced; the same call on another or the restarted replica may."""
