"""The affinity router's choice: rendezvous hashing of tree ids, the imbalance margin, fallback."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from cluster.types import GenerationRequest
from deployments.routing import (
    affinity_key,
    affinity_target,
    overloaded,
    preferred_replica,
    two_choices,
)

pytestmark = pytest.mark.unit

REPLICAS = ("r-a1", "r-b2", "r-c3", "r-d4")
KEYS = [f"tree-{i}" for i in range(2000)]


def _request(key: str | None) -> GenerationRequest:
    return GenerationRequest(prompt="p", n=1, max_tokens=1, temperature=0.0, affinity_key=key)


def _placement(replicas: tuple[str, ...]) -> dict[str, str]:
    return {key: preferred_replica(key, replicas) for key in KEYS}


def test_affinity_key_comes_from_a_generation_request_first_argument() -> None:
    assert affinity_key([_request("tree-1")]) == "tree-1"
    assert affinity_key([_request(None)]) is None
    assert affinity_key([]) is None
    assert affinity_key(["tree-1"]) is None
    assert affinity_key([None, _request("tree-1")]) is None


def test_a_key_always_picks_the_same_replica_whatever_the_order() -> None:
    chosen = preferred_replica("tree-7", REPLICAS)
    assert chosen in REPLICAS
    assert all(preferred_replica("tree-7", order) == chosen for order in (REPLICAS[::-1], set(REPLICAS)))


def test_keys_spread_evenly_over_replicas() -> None:
    counts = Counter(_placement(REPLICAS).values())
    assert set(counts) == set(REPLICAS)
    expected = len(KEYS) / len(REPLICAS)
    assert all(abs(count - expected) < 0.2 * expected for count in counts.values()), counts


def test_removing_a_replica_moves_only_its_own_keys() -> None:
    before = _placement(REPLICAS)
    after = _placement(REPLICAS[1:])
    moved = {key for key in KEYS if before[key] != after[key]}
    assert moved == {key for key in KEYS if before[key] == REPLICAS[0]}


def test_adding_a_replica_moves_keys_only_onto_it() -> None:
    before = _placement(REPLICAS)
    after = _placement((*REPLICAS, "r-e5"))
    moved = [key for key in KEYS if before[key] != after[key]]
    assert moved and all(after[key] == "r-e5" for key in moved)


def test_no_replica_is_an_error_that_names_the_key() -> None:
    with pytest.raises(ValueError, match="tree-9"):
        preferred_replica("tree-9", [])


def test_overloaded_past_the_margin_over_the_least_loaded_replica() -> None:
    loads = {"r-a1": 5, "r-b2": 2, "r-c3": 9}
    assert not overloaded("r-a1", loads, max_imbalance=3)
    assert overloaded("r-a1", loads, max_imbalance=2)
    assert overloaded("r-c3", loads, max_imbalance=6)
    assert not overloaded("r-b2", loads, max_imbalance=0)


def test_a_replica_of_unknown_load_keeps_its_keys() -> None:
    assert not overloaded("r-d4", {"r-a1": 0}, max_imbalance=0)


def test_target_is_the_keys_replica_until_it_is_overloaded() -> None:
    preferred = preferred_replica("tree-3", REPLICAS)
    idle = dict.fromkeys(REPLICAS, 0)
    assert affinity_target("tree-3", REPLICAS, idle, max_imbalance=4) == preferred
    busy = {**idle, preferred: 5}
    assert affinity_target("tree-3", REPLICAS, busy, max_imbalance=4) is None
    assert affinity_target("tree-3", REPLICAS, busy, max_imbalance=5) == preferred


def test_two_choices_are_two_distinct_candidates() -> None:
    rng = random.Random(0)
    pairs = [two_choices(REPLICAS, rng) for _ in range(200)]
    assert all(len(pair) == 2 and len(set(pair)) == 2 for pair in pairs)
    assert {r for pair in pairs for r in pair} == set(REPLICAS)
    assert two_choices(["only"], rng) == ["only"]
    assert two_choices([], rng) == []
