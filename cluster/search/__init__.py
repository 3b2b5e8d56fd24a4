"""Search strategies: one module each, registered by name and driven by the controller."""

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
from cluster.search.context import (
    BudgetExhausted,
    Chain,
    Generator,
    SearchContext,
    SearchServices,
    VerifierService,
)

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
