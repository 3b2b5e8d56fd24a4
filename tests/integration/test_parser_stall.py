"""Hostile model output cannot stall other trees: one tree's chains are 3,000 repetitions of
`1+` (which the old expression extraction needed minutes for), while another tree on the same
event loop keeps writing progress events without a pause and neither loses its lease."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field

import pytest
from redis.asyncio import Redis

from cluster.search.context import SearchServices
from cluster.search.controller import SearchController
from cluster.store import TOKENS, VERIFIER_CALLS, BudgetLedger, KeySpace, TreeLeases, TreeMeta, TreeStore
from cluster.tasks import pose
from cluster.types import ChatMessage, Completion, Effort, GenerationRequest, GenerationResult, SolveRequest
from cluster.verifiers import build_verifier
from cluster.verifiers.service import VerificationService
from tests.integration.test_tree_search import tree_config
from tests.scripted import ScriptedGenerator

pytestmark = pytest.mark.integration

HOSTILE = "1+" * 3000
# A lease this short is lost by a planner whose event loop stalls for longer than it.
LEASE_TTL_S = 0.6


@dataclass
class SteadySteps:
    """Distinct free-text steps, a little engine time each: a search that never runs out."""

    delay_s: float = 0.02
    counter: itertools.count[int] = field(default_factory=itertools.count)

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        await asyncio.sleep(self.delay_s)
        completions = tuple(
            Completion(f"step {next(self.counter)}", 2, "stop", -0.5, stop_reason="\n")
            for _ in range(request.n)
        )
        return GenerationResult(completions, prompt_tokens=20, cached_tokens=0, replica="scripted")


async def test_a_hostile_chain_does_not_pause_another_tree(redis_client: Redis) -> None:
    keys = KeySpace("stall")
    store, ledger = TreeStore(redis_client, keys), BudgetLedger(redis_client, keys)
    leases = TreeLeases(redis_client, keys, ttl_s=LEASE_TTL_S)
    verifiers = VerificationService({n: build_verifier(n) for n in ("game24_steps", "game24", "arithmetic")})

    async def solve(tree_id: str, strategy: str, task: str, question: str, engine: object) -> None:
        config = tree_config(strategy, tokens=400).with_overrides(
            {"efforts": {"high": {"max_tokens_per_branch": 400, "max_depth": 64, "deadline_s": 30}}}
        )
        budget = config.budget_for(Effort.HIGH)
        await store.create_tree(TreeMeta(tree_id, "tenant", "high", strategy), 600)
        await ledger.grant(tree_id, {TOKENS: budget.max_reasoning_tokens, VERIFIER_CALLS: 1000})
        services = SearchServices(store, ledger, engine, verifiers, leases=leases)  # type: ignore[arg-type]
        problem = pose((ChatMessage("user", question),), task)
        request = SolveRequest(tree_id, "tenant", Effort.HIGH, problem, "PROMPT", budget.max_reasoning_tokens)
        await SearchController(config, services).solve(request)

    hostile = ScriptedGenerator([[HOSTILE] * 4 for _ in range(4)])
    await asyncio.gather(
        solve("hostile", "best_of_n", "game24", "4 9 10 13", hostile),
        solve("steady", "beam_search", "general", "Count.", SteadySteps()),
    )

    events = await store.read_events("steady", count=10_000)
    times = [event["ts"] for _, event in events]
    assert len(times) > 20
    assert max(later - earlier for earlier, later in itertools.pairwise(times)) < 1.0
    for tree_id in ("hostile", "steady"):
        meta = await store.get_meta(tree_id)
        assert meta is not None and meta.status == "done"  # neither lost its lease mid-search
