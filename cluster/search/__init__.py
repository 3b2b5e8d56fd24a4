"""Search strategies: one module each, registered by name and driven by the controller.

A new strategy is one module with a `@register_strategy` class, listed here.
"""

from cluster.search import (
    beam_search,
    best_of_n,
    compute_optimal,
    dvts,
    mcts,
    self_consistency,
    single_chain,
)
from cluster.search.base import SearchOutcome, SearchStrategy, build_strategy, strategy_names
from cluster.search.context import SearchContext, SearchServices
from cluster.search.expander import BudgetExhausted, Generator
from cluster.search.scoring import VerifierService
from cluster.search.tree import Chain

__all__ = [
    "BudgetExhausted",
    "Chain",
    "Generator",
    "SearchContext",
    "SearchOutcome",
    "SearchServices",
    "SearchStrategy",
    "VerifierService",
    "beam_search",
    "best_of_n",
    "build_strategy",
    "compute_optimal",
    "dvts",
    "mcts",
    "self_consistency",
    "single_chain",
    "strategy_names",
]
