"""Hooks a search calls as it goes; `cluster` knows nothing of metrics.

The planner deployment passes in an observer (monitoring.metrics implements one) that turns
these calls into Prometheus metrics. Observers must be cheap and must never raise.
"""

from __future__ import annotations

from cluster.types import SolveRequest


class SearchObserver:
    """The default observer does nothing."""

    def first_progress(self, request: SolveRequest, elapsed_s: float) -> None:
        """The first chains of the tree are written (its first progress event)."""

    def chains_generated(self, request: SolveRequest, count: int, tokens: int) -> None:
        """One expansion came back with `count` chains of `tokens` tokens in all."""

    def chains_verified(self, request: SolveRequest, count: int) -> None:
        """`count` chains were scored by the verifiers."""

    def search_finished(
        self,
        request: SolveRequest,
        strategy: str,
        outcome: str,
        nodes: int,
        depth: int,
        discarded: int,
        elapsed_s: float,
    ) -> None:
        """The search ended: `outcome` is done, failed, deadline or cancelled; `discarded`
        chains were grown but not chosen (the pruned branches of a finished tree)."""


NULL_OBSERVER = SearchObserver()
