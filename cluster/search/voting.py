"""Answer agreement across chains: the signal self-consistency votes on."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

from cluster.search.tree import Chain


class Votes:
    """How many chains reached each answer; answers agree when the task's vote key does
    ("$105" and "105 cents" are one vote in math). Chains without an answer abstain."""

    def __init__(self, chains: Sequence[Chain], key: Callable[[str], str]) -> None:
        self._key = key
        self.counts = Counter(key(c.answer) for c in chains if c.answer is not None)

    def of(self, chain: Chain) -> int:
        """How many chains agree with this one's answer (itself included)."""
        return self.counts[self._key(chain.answer)] if chain.answer is not None else 0

    @property
    def cast(self) -> int:
        return sum(self.counts.values())

    @property
    def top(self) -> int:
        return max(self.counts.values(), default=0)
