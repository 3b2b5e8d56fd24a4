"""Answer agreement across chains: the signal self-consistency votes on."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from cluster.answers import normalize_answer
from cluster.search.tree import Chain


def vote_counts(chains: Sequence[Chain]) -> Counter[str]:
    """How many chains reached each normalised answer (chains without one abstain)."""
    return Counter(normalize_answer(c.answer) for c in chains if c.answer is not None)


def agreement(chain: Chain, counts: Counter[str]) -> int:
    return counts[normalize_answer(chain.answer)] if chain.answer is not None else 0
