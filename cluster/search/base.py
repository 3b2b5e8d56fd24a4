"""The strategy interface the planner drives, and the registry that picks one by name.

A strategy is one module: a `SearchStrategy` subclass decorated with `@register_strategy`,
and its module listed in `cluster/search/__init__.py`. The config accepts every registered
name (see `cluster.config.EffortBudget`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, TypeVar

from cluster.search.context import SearchContext
from cluster.search.tree import Chain


@dataclass(frozen=True, slots=True)
class SearchOutcome:
    """The chain a strategy chose, and why."""

    winner: Chain
    # How many chains agreed with the winner's answer, out of how many gave one.
    votes: int
    answered: int
    score: float | None
    reason: str
    # Why the search stopped before it was done (`budget`, `deadline`, ...); None when it was.
    incomplete: str | None = None


class SearchStrategy(ABC):
    name: ClassVar[str]
    # Grows chains step by step, as a tree deeper than one level (beam_width applies).
    grows_tree: ClassVar[bool] = False

    @abstractmethod
    async def run(self, ctx: SearchContext) -> SearchOutcome:
        """Search until an answer is chosen or the budget is spent; the root is already written."""


_STRATEGIES: dict[str, type[SearchStrategy]] = {}
S = TypeVar("S", bound=type[SearchStrategy])


def register_strategy(cls: S) -> S:
    _STRATEGIES[cls.name] = cls
    return cls


def strategy_class(name: str) -> type[SearchStrategy]:
    try:
        return _STRATEGIES[name]
    except KeyError:
        known = ", ".join(sorted(_STRATEGIES))
        raise ValueError(f"unknown search strategy {name!r}; known: {known}") from None


def build_strategy(name: str) -> SearchStrategy:
    return strategy_class(name)()


def strategy_names() -> list[str]:
    return sorted(_STRATEGIES)
