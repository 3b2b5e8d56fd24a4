"""Search strategies and the controller on a scripted engine, with the real Redis store."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from cluster.config import ClusterConfig, load_config
from cluster.search.context import SearchServices
from cluster.search.controller import DeadlineExceeded, SearchController
from cluster.store import TOKENS, VERIFIER_CALLS, BudgetLedger, KeySpace, TreeMeta, TreeStore
from cluster.types import ChatMessage, Effort, Problem, SolveRequest, SolveResult
from cluster.verifiers import build_verifier
from cluster.verifiers.service import VerificationService
from tests.scripted import ScriptedGenerator

pytestmark = pytest.mark.integration

RIGHT = "Each pencil costs 45 / 3 = 15 cents. Seven cost 7 * 15 = 105 cents. The answer is 105."
WRONG = "Each pencil costs 45 / 3 = 12 cents. Seven cost 7 * 12 = 84 cents. The answer is 84."
RAMBLE = "Pencils are made of wood and graphite and people like them a lot"


def self_consistency_config() -> ClusterConfig:
    """The chain strategies' tests: medium effort as self-consistency over 4 chains of 256."""
    return config_with("medium", "self_consistency", 4, 256, [])


def config_with(
    effort: str, strategy: str, branches: int, per_branch: int, verifiers: list[str], deadline_s: float = 5
) -> ClusterConfig:
    budget = {
        "strategy": strategy,
        "max_branches": branches,
        "max_tokens_per_branch": per_branch,
        "max_reasoning_tokens": branches * per_branch,
        "max_verifier_calls": branches if verifiers else 0,
        "deadline_s": deadline_s,
        "verifiers": verifiers,
    }
    return load_config().with_overrides({"efforts": {effort: budget}})


async def solve(
    redis: Redis,
    config: ClusterConfig,
    generator: ScriptedGenerator,
    effort: Effort,
    problem: Problem | None = None,
    max_tokens: int | None = None,
) -> tuple[SolveResult, TreeStore, BudgetLedger, str]:
    keys = KeySpace("test")
    store, ledger = TreeStore(redis, keys), BudgetLedger(redis, keys)
    budget = config.budget_for(effort)
    tokens = max_tokens or budget.max_reasoning_tokens
    tree_id = f"tree-{effort.value}-{len(generator.batches)}"
    await store.create_tree(TreeMeta(tree_id, "tenant", effort.value, budget.strategy), 600)
    await ledger.grant(tree_id, {TOKENS: tokens, VERIFIER_CALLS: budget.max_verifier_calls})
    verifiers = VerificationService(
        {n: build_verifier(n) for n in ("arithmetic", "game24", "game24_steps", "numeric")}
    )
    controller = SearchController(config, SearchServices(store, ledger, generator, verifiers))
    problem = problem or Problem((ChatMessage("user", "3 pencils cost 45 cents; what do 7 cost?"),))
    request = SolveRequest(tree_id, "tenant", effort, problem, "PROMPT", tokens)
    return await controller.solve(request), store, ledger, tree_id


async def test_single_chain_takes_its_only_chain(redis_client: Redis) -> None:
    config = config_with("low", "single_chain", 1, 64, ["arithmetic"])
    generator = ScriptedGenerator([[RIGHT]])
    result, store, _, tree_id = await solve(redis_client, config, generator, Effort.LOW)
    assert (result.answer, result.branches, result.verifier_calls) == ("105", 1, 1)
    assert generator.requests[0].n == 1
    tree = await store.get_tree(tree_id)
    assert tree is not None and tree.meta.status == "done"
    assert [n.status for n in tree.nodes] == ["won", "won"]
    assert tree.nodes[1].scores == {"arithmetic": 1.0}


async def test_self_consistency_votes_on_normalised_answers(redis_client: Redis) -> None:
    chains = ["So 7 cost $1.05. The answer is 105.", WRONG, "The answer is 105 cents.", RAMBLE]
    generator = ScriptedGenerator([chains])
    result, store, ledger, tree_id = await solve(
        redis_client, self_consistency_config(), generator, Effort.MEDIUM
    )
    assert result.answer == "105"
    assert result.strategy == "self_consistency"
    assert "2 of 3 answered chains agree" in result.summary
    assert generator.requests[0].n == 4
    tree = await store.get_tree(tree_id)
    assert tree is not None
    assert len(tree.nodes) == 5 and tree.winning_path == list(result.winning_path)
    spent = sum(node.completion_tokens for node in tree.nodes)
    assert spent == result.usage.completion_tokens == (await ledger.snapshot(tree_id)).spent[TOKENS]


async def test_best_of_n_picks_the_verified_chain_over_the_majority(redis_client: Redis) -> None:
    config = config_with("high", "best_of_n", 4, 100, ["arithmetic"])
    generator = ScriptedGenerator([[WRONG, WRONG, RIGHT, WRONG]])
    result, store, _, tree_id = await solve(redis_client, config, generator, Effort.HIGH)
    assert result.answer == "105"
    assert result.verifier_calls == 4
    tree = await store.get_tree(tree_id)
    assert tree is not None
    scores = sorted(n.score for n in tree.nodes if n.score is not None)
    assert scores[-1] == 1.0 and scores[0] < 1.0


async def test_game24_best_of_n_is_judged_by_the_exact_checker(redis_client: Redis) -> None:
    config = config_with("high", "best_of_n", 3, 100, ["game24", "arithmetic"])
    problem = Problem((ChatMessage("user", "4 9 10 13"),), "game24", (4, 9, 10, 13))
    chains = [
        "Answer: (10 - 4) * (13 - 9) + 0 = 24",
        "Answer: (10 - 4) * (13 - 9) = 24",
        "Answer: 4 * 9 - 13 = 24",
    ]
    result, *_ = await solve(redis_client, config, ScriptedGenerator([chains]), Effort.HIGH, problem)
    assert result.answer.replace(" ", "") == "(10-4)*(13-9)"


async def test_budget_shrinks_the_expansion_to_what_is_left(redis_client: Redis) -> None:
    generator = ScriptedGenerator([[RIGHT] * 4])
    result, _, ledger, tree_id = await solve(
        redis_client, self_consistency_config(), generator, Effort.MEDIUM, max_tokens=40
    )
    request = generator.requests[0]
    # 40 tokens cannot pay for one 256-token chain: one chain, capped at what is left.
    assert (request.n, request.max_tokens) == (1, 40)
    snapshot = await ledger.snapshot(tree_id)
    assert snapshot.spent[TOKENS] == result.usage.completion_tokens <= 40
    assert snapshot.reserved.get(TOKENS, 0) == 0


async def test_a_failing_engine_fails_the_tree_and_releases_the_budget(redis_client: Redis) -> None:
    generator = ScriptedGenerator([], fail_with=RuntimeError("engine died"))
    with pytest.raises(RuntimeError, match="engine died"):
        await solve(redis_client, self_consistency_config(), generator, Effort.MEDIUM)
    store, ledger = TreeStore(redis_client, KeySpace("test")), BudgetLedger(redis_client, KeySpace("test"))
    tree_id = "tree-medium-0"
    meta = await store.get_meta(tree_id)
    assert meta is not None and meta.status == "failed"
    snapshot = await ledger.snapshot(tree_id)
    assert snapshot.spent.get(TOKENS, 0) == 0 and snapshot.reserved.get(TOKENS, 0) == 0


async def test_deadline_stops_the_search_and_releases_the_budget(redis_client: Redis) -> None:
    config = config_with("medium", "self_consistency", 2, 100, [], deadline_s=0.2)
    generator = ScriptedGenerator([[RIGHT, RIGHT]], delay_s=5)
    with pytest.raises(DeadlineExceeded, match=r"deadline of 0\.2 s"):
        await solve(redis_client, config, generator, Effort.MEDIUM)
    ledger = BudgetLedger(redis_client, KeySpace("test"))
    snapshot = await ledger.snapshot("tree-medium-1")
    assert snapshot.reserved.get(TOKENS, 0) == 0 and snapshot.spent.get(TOKENS, 0) == 0
