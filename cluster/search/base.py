"""The strategy interface the planner drives, and the registry that picks one by name."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, TypeVar

from cluster.search.context import Chain, SearchContext


@dataclass(frozen=True, slots=True)
class SearchOutcome:
    """The chain a strategy chose, and why."""

    winner: Chain
    # How many chains agreed with the winner's answer, out of how many gave one.
    votes: int
    answered: int
    score: float | None
    reason: str


class SearchStrategy(ABC):
    name: ClassVar[str]

    @abstractmethod
    async def run(self, ctx: SearchContext) -> SearchOutcome:
        """Search until an answer is chosen or the budget is spent; the root is already written."""


_STRATEGIES: dict[str, type[SearchStrategy]] = {}
S = TypeVar("S", bound=type[SearchStrategy])


def register_strategy(cls: S) -> S:
    _STRATEGIES[cls.name] = cls
    return cls


def build_strategy(name: str) -> SearchStrategy:
    try:
        return _STRATEGIES[name]()
    except KeyError:
        known = ", ".join(sorted(_STRATEGIES))
        raise ValueError(f"unknown search strategy {name!r}; known: {known}") from None


def strategy_names() -> list[str]:
    return sorted(_STRATEGIES)
