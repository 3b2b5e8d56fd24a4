"""Tree search strategies on a scripted engine, with the real Redis store: exact behaviour."""

from __future__ import annotations

import asyncio
import re
import time

import pytest
from redis.asyncio import Redis

from cluster.config import ClusterConfig, load_config
from cluster.search.context import SearchServices
from cluster.search.controller import SearchController
from cluster.search.mcts import priors, select_child
from cluster.store import (
    TOKENS,
    VERIFIER_CALLS,
    BudgetLedger,
    KeySpace,
    NodeDraft,
    ThoughtNode,
    TreeLeases,
    TreeMeta,
    TreeStore,
)
from cluster.tasks import pose
from cluster.types import ChatMessage, Effort, Problem, SolveRequest, SolveResult
from cluster.verifiers import build_verifier
from cluster.verifiers.service import VerificationService
from tests.scripted import Proposal, StepScript

pytestmark = pytest.mark.integration

P = Proposal
PUZZLE = pose((ChatMessage("user", "4 9 10 13"),), "game24")
SOLUTION = "(13 - 9) * (10 - 4)"
# Paths of a Game of 24 search, as the model writes its steps (without the "(left: ...)").
GAME24_SCRIPT: dict[tuple[str, ...], list[Proposal]] = {
    (): [P("13 - 9 = 4", -0.1), P("4 * 9 = 35", -0.05), P("10 - 4 = 6", -0.9), P("4 + 9 = 13", -0.5)],
    ("13 - 9 = 4",): [P("10 - 4 = 6", -0.2), P("4 * 4 = 16", -0.3)],
    ("4 + 9 = 13",): [P("13 + 13 = 26", -0.1), P("10 * 13 = 130", -0.2)],
    ("4 + 9 = 13", "13 + 13 = 26"): [P("26 - 10 = 24", -0.1), P("26 * 10 = 24", -0.2)],
    ("13 - 9 = 4", "10 - 4 = 6"): [P("4 * 6 = 24", -0.4), P("6 - 4 = 24", -0.3)],
    ("13 - 9 = 4", "4 * 4 = 16"): [P("16 + 10 = 24", -0.4), P("16 - 10 = 24", -0.3)],
    ("4 + 9 = 13", "10 * 13 = 130"): [P("130 - 13 = 24", -0.4), P("130 / 13 = 24", -0.3)],
}


def tree_config(strategy: str, tokens: int = 400, branches: int = 4, width: int = 2) -> ClusterConfig:
    budget = {
        "strategy": strategy,
        "max_branches": branches,
        "beam_width": width,
        "max_tokens_per_step": 8,
        "max_tokens_per_branch": 32,
        "max_reasoning_tokens": tokens,
        "max_verifier_calls": 100,
        "deadline_s": 10,
        "verifiers": ["game24_steps", "game24", "arithmetic"],
        "probe_branches": 3,
        "probe_tokens_per_branch": 16,
    }
    return load_config().with_overrides({"efforts": {"high": budget}})


class Harness:
    def __init__(self, redis: Redis, config: ClusterConfig, engine: StepScript, leases: bool = False) -> None:
        keys = KeySpace("test")
        self.store, self.ledger = TreeStore(redis, keys), BudgetLedger(redis, keys)
        self.leases = TreeLeases(redis, keys, ttl_s=0.6) if leases else None
        verifiers = VerificationService(
            {n: build_verifier(n) for n in ("game24_steps", "game24", "arithmetic", "numeric")}
        )
        services = SearchServices(self.store, self.ledger, engine, verifiers, leases=self.leases)
        self.controller = SearchController(config, services)
        self.config = config

    async def create(self, tree_id: str, tokens: int | None = None) -> int:
        budget = self.config.budget_for(Effort.HIGH)
        granted = tokens or budget.max_reasoning_tokens
        meta = TreeMeta(tree_id, "tenant", "high", budget.strategy, created_at=time.time())
        await self.store.create_tree(meta, 600)
        await self.ledger.grant(tree_id, {TOKENS: granted, VERIFIER_CALLS: budget.max_verifier_calls})
        return granted

    async def solve(
        self, tree_id: str, problem: Problem = PUZZLE, resume: bool = False, create: bool = True
    ) -> SolveResult:
        if create:
            await self.create(tree_id)
        budget = self.config.budget_for(Effort.HIGH)
        request = SolveRequest(
            tree_id, "tenant", Effort.HIGH, problem, "PROMPT", budget.max_reasoning_tokens, resume=resume
        )
        return await self.controller.solve(request)


def game24_engine(script: dict[tuple[str, ...], list[Proposal]] = GAME24_SCRIPT) -> StepScript:
    return StepScript("PROMPT", "\n", script)


def statuses(nodes: list[ThoughtNode]) -> dict[str, str]:
    return {n.text.split(" (left:")[0]: n.status for n in nodes if n.parent_id is not None}


async def test_beam_search_keeps_the_best_steps_and_finds_the_verified_answer(redis_client: Redis) -> None:
    engine = game24_engine()
    harness = Harness(redis_client, tree_config("beam_search"), engine)
    result = await harness.solve("beam")
    assert result.answer == SOLUTION
    assert result.strategy == "beam_search"
    tree = await harness.store.get_tree("beam")
    assert tree is not None
    # Round 1: the wrong step (4 * 9 = 35) is ruled out; of the right ones the two the model
    # was surest of are kept. Round 2: the best two of four by confidence.
    assert statuses(tree.nodes) == {
        "13 - 9 = 4": "won",
        "4 * 9 = 35": "pruned",
        "10 - 4 = 6": "won",
        "4 + 9 = 13": "expanded",
        "4 * 4 = 16": "pruned",
        "13 + 13 = 26": "expanded",
        "10 * 13 = 130": "pruned",
        "26 - 10 = 24": "answer",
        "26 * 10 = 24": "answer",
        "4 * 6 = 24": "won",
        "6 - 4 = 24": "answer",
    } | {"10 - 4 = 6": tree_status_of_duplicate(tree.nodes)}
    winner = next(n for n in tree.nodes if n.node_id == tree.winning_path[-1])
    assert winner.text == "4 * 6 = 24 (left: 24)"
    assert [n.depth for n in tree.nodes if n.node_id in tree.winning_path] == [0, 1, 2, 3]
    # Every proposal is 5 tokens; three rounds of four proposals were generated and paid for.
    snapshot = await harness.ledger.snapshot("beam")
    assert snapshot.spent[TOKENS] == result.usage.completion_tokens == 60
    assert snapshot.reserved[TOKENS] == 0


async def test_wrong_steps_are_pruned_at_once_and_repeats_never_win(redis_client: Redis) -> None:
    script = {
        (): [P("13 - 9 = 4", -0.1)],
        # The model is surer of the wrong step; the step checker rules it out before it grows.
        ("13 - 9 = 4",): [P("10 - 4 = 7", -0.01), P("10 - 4 = 6", -0.5)],
        ("13 - 9 = 4", "10 - 4 = 6"): [P("6 - 4 = 24", -0.1), P("6 - 4 = 24", -0.1)],
    }
    # Sampled steps: a batch can repeat a step (greedy ones leave out those proposed before).
    config = tree_config("beam_search", tokens=40).with_overrides(
        {"tasks": {"game24": {"step_temperature": 0.8}}}
    )
    harness = Harness(redis_client, config, game24_engine(script))
    result = await harness.solve("wrong")
    tree = await harness.store.get_tree("wrong")
    assert tree is not None
    wrong = next(n for n in tree.nodes if n.text.startswith("10 - 4 = 7"))
    assert wrong.status == "pruned" and not [n for n in tree.nodes if n.parent_id == wrong.node_id]
    finals = [n for n in tree.nodes if n.text.startswith("6 - 4 = 24")]
    winner = next(n for n in tree.nodes if n.node_id == tree.winning_path[-1])
    # The repeat is written (its tokens were spent) but pruned: only the verified copy can win.
    assert sorted(n.status for n in finals) == ["pruned", "won"]
    assert winner in finals and winner.scores["game24"] < 1.0
    assert result.answer == "(10 - 4) - (13 - 9)"


def tree_status_of_duplicate(nodes: list[ThoughtNode]) -> str:
    # "10 - 4 = 6" appears twice: pruned as a first step, won as the second step of the winner.
    first = next(n for n in nodes if n.text.startswith("10 - 4 = 6") and n.depth == 1)
    second = next(n for n in nodes if n.text.startswith("10 - 4 = 6") and n.depth == 2)
    assert (first.status, second.status) == ("pruned", "won")
    return "won"


BACKTRACK_SCRIPT: dict[tuple[str, ...], list[Proposal]] = {
    (): [P("13 - 9 = 4", -0.1), P("4 + 9 = 13", -0.5)],
    ("13 - 9 = 4",): [P("4 * 4 = 16", -0.9), P("10 - 4 = 6", -0.2)],
    ("4 + 9 = 13",): [P("13 + 13 = 26", -0.8)],
    ("13 - 9 = 4", "4 * 4 = 16"): [P("16 - 10 = 24", -0.1)],
    ("4 + 9 = 13", "13 + 13 = 26"): [P("26 * 10 = 24", -0.1)],
    ("13 - 9 = 4", "10 - 4 = 6"): [P("4 * 6 = 24", -0.1)],
}


async def test_when_the_root_has_no_step_left_the_search_backtracks_to_the_best_steps(
    redis_client: Redis,
) -> None:
    # Both first steps, then one step after each, then two wrong answers: every path ended
    # and the root has nothing new to offer. The best step chosen before gets its next step.
    harness = Harness(
        redis_client, tree_config("beam_search", branches=2, width=2), game24_engine(BACKTRACK_SCRIPT)
    )
    result = await harness.solve("backtrack")
    assert result.answer == SOLUTION
    tree = await harness.store.get_tree("backtrack")
    assert tree is not None
    by_text = {n.text.split(" (left:")[0]: n for n in tree.nodes}
    assert by_text["10 - 4 = 6"].parent_id == by_text["13 - 9 = 4"].node_id


async def test_a_search_with_nothing_left_to_propose_stops_and_keeps_the_rest_of_the_budget(
    redis_client: Redis,
) -> None:
    script = {path: steps for path, steps in BACKTRACK_SCRIPT.items() if "10 - 4 = 6" not in path}
    script[("13 - 9 = 4",)] = [P("4 * 4 = 16", -0.9)]
    harness = Harness(redis_client, tree_config("beam_search", branches=2, width=2), game24_engine(script))
    await harness.solve("dead-ends")
    snapshot = await harness.ledger.snapshot("dead-ends")
    # Six proposals of 5 tokens; the other 370 tokens of the grant are handed back.
    assert snapshot.spent[TOKENS] == 30 and snapshot.reserved[TOKENS] == 0


async def test_budget_stops_the_search_exactly(redis_client: Redis) -> None:
    # Expansions shrink to what is left (fewer proposals first) until not even one step of
    # max_tokens_per_step fits; nothing is ever spent beyond the grant.
    harness = Harness(redis_client, tree_config("beam_search"), engine := game24_engine())
    granted = await harness.create("tight", tokens=48)
    result = await harness.solve("tight", create=False)
    snapshot = await harness.ledger.snapshot("tight")
    assert snapshot.spent[TOKENS] == result.usage.completion_tokens <= granted
    assert granted - snapshot.spent[TOKENS] < 8  # less than one more step
    assert snapshot.reserved[TOKENS] == 0
    assert any(r.n < 2 for r in engine.requests[1:])  # an expansion was cut to fit
    assert result.answer  # the best path found within the budget


async def test_dvts_grows_each_subtree_greedily(redis_client: Redis) -> None:
    # Two subtrees (4 branches / width 2): each keeps only its best next step.
    script = {
        (): [P("13 - 9 = 4", -0.1), P("4 + 9 = 13", -0.5)],
        ("13 - 9 = 4",): [P("10 - 4 = 6", -0.2), P("4 * 4 = 16", -0.3)],
        ("4 + 9 = 13",): [P("13 + 13 = 26", -0.1), P("10 * 13 = 130", -0.2)],
        ("4 + 9 = 13", "13 + 13 = 26"): [P("26 - 10 = 24", -0.1), P("26 * 10 = 24", -0.2)],
        ("13 - 9 = 4", "10 - 4 = 6"): [P("6 - 4 = 24", -0.3), P("4 * 6 = 24", -0.4)],
    }
    engine = game24_engine(script)
    harness = Harness(redis_client, tree_config("dvts"), engine)
    result = await harness.solve("dvts")
    assert result.answer == SOLUTION
    tree = await harness.store.get_tree("dvts")
    assert tree is not None
    status = statuses(tree.nodes)
    assert status["4 * 4 = 16"] == "pruned" and status["10 * 13 = 130"] == "pruned"
    assert status["13 + 13 = 26"] == "expanded"  # the other subtree went on, not pruned by this one
    expanded = [n for n in tree.nodes if n.status in ("expanded", "won") and n.answer is None]
    assert all(len([c for c in tree.nodes if c.parent_id == n.node_id]) == 2 for n in expanded)


async def test_greedy_steps_come_one_per_call_each_leaving_out_those_before(redis_client: Redis) -> None:
    # At an effort that does not sample, Game of 24 steps come greedily: the model's top step,
    # then its next best, ...
    config = tree_config("beam_search", branches=3, width=1).with_overrides(
        {"efforts": {"high": {"temperature": 0.0}}}
    )
    engine = game24_engine()
    harness = Harness(redis_client, config, engine)
    await harness.solve("greedy")
    first_round = engine.requests[:3]
    assert [(r.n, r.temperature) for r in first_round] == [(1, 0.0)] * 3
    proposed = ["13 - 9 = 4", "4 * 9 = 35", "10 - 4 = 6"]
    for i, request in enumerate(first_round):
        assert request.regex is not None
        allowed = [bool(re.fullmatch(request.regex, step)) for step in proposed]
        assert allowed == [False] * i + [True] * (3 - i)
    tree = await harness.store.get_tree("greedy")
    assert tree is not None
    assert [n.text.split(" (left:")[0] for n in tree.nodes if n.depth == 1][:3] == proposed


async def test_steps_come_in_two_parts_moves_sampled_together_then_worked_out_greedily(
    redis_client: Redis,
) -> None:
    script = {
        **GAME24_SCRIPT,
        # The model samples one move twice: it is worked out once and pays for both samples.
        (): [P("13 - 9 = 4", -0.1), P("13 - 9 = 4", -0.1), P("10 - 4 = 6", -0.2)],
    }
    engine = game24_engine(script)
    harness = Harness(redis_client, tree_config("beam_search", branches=3, width=1), engine)
    await harness.solve("two-parts")
    moves, *work = engine.requests[:3]
    assert (moves.n, moves.temperature, moves.prompt) == (3, 0.8, "PROMPT")
    assert moves.regex is not None and re.fullmatch(moves.regex, "13 - 9")
    assert not re.fullmatch(moves.regex, "13 - 9 = 4")
    assert sorted((r.n, r.temperature, r.prompt) for r in work) == [
        (1, 0.0, "PROMPT10 - 4"),
        (1, 0.0, "PROMPT13 - 9"),
    ]
    assert all(r.regex is not None and re.fullmatch(r.regex, " = 4") for r in work)
    tree = await harness.store.get_tree("two-parts")
    assert tree is not None
    first = {n.text.split(" (left:")[0]: n for n in tree.nodes if n.depth == 1}
    assert sorted(first) == ["10 - 4 = 6", "13 - 9 = 4"]
    # "13 - 9" twice (3 words each), " = 4" once (2 words); "10 - 4" and " = 6" once.
    assert (first["13 - 9 = 4"].completion_tokens, first["10 - 4 = 6"].completion_tokens) == (8, 5)
    snapshot = await harness.ledger.snapshot("two-parts")
    assert snapshot.spent[TOKENS] == sum(n.completion_tokens for n in tree.nodes)


async def test_sampled_steps_come_in_one_batch_at_the_configured_temperature(redis_client: Redis) -> None:
    overrides = {"tasks": {"game24": {"step_temperature": 0.5}}}
    engine = game24_engine()
    harness = Harness(
        redis_client, tree_config("beam_search", branches=3, width=1).with_overrides(overrides), engine
    )
    await harness.solve("sampled")
    assert (engine.requests[0].n, engine.requests[0].temperature) == (3, 0.5)


def node(node_id: str, visits: int, value_sum: float, logprob: float) -> ThoughtNode:
    return ThoughtNode(node_id, "n0", 1, node_id, visits=visits, value_sum=value_sum, logprob=logprob)


def test_puct_prefers_value_then_prior_then_fewer_visits() -> None:
    good, poor = node("good", 2, 1.8, -1.0), node("poor", 2, 0.4, -1.0)
    assert select_child([poor, good], parent_visits=4, exploration=1.0).node_id == "good"
    # Equal values: the step the model is surer of wins.
    sure, unsure = node("sure", 1, 0.5, -0.1), node("unsure", 1, 0.5, -2.0)
    assert select_child([unsure, sure], parent_visits=2, exploration=1.0).node_id == "sure"
    # A rarely visited child with a slightly lower value is explored.
    fresh, worn = node("fresh", 1, 0.7, -1.0), node("worn", 30, 24.0, -1.0)
    assert select_child([worn, fresh], parent_visits=31, exploration=1.0).node_id == "fresh"
    assert select_child([worn, fresh], parent_visits=31, exploration=0.0).node_id == "worn"
    assert priors([sure, unsure])[0] > 0.8


async def test_mcts_follows_value_and_prior_and_backs_up_visits(redis_client: Redis) -> None:
    script = {
        (): [P("13 - 9 = 4", -0.1), P("4 * 9 = 35", -0.05)],
        ("13 - 9 = 4",): [P("10 - 4 = 6", -0.2), P("4 * 4 = 16", -0.3)],
        ("13 - 9 = 4", "10 - 4 = 6"): [P("4 * 6 = 24", -0.4), P("6 - 4 = 24", -0.3)],
    }
    engine = game24_engine(script)
    harness = Harness(redis_client, tree_config("mcts"), engine)
    result = await harness.solve("mcts")
    assert result.answer == SOLUTION
    # Root, then the only right step, then its likelier child: one call sampling two moves
    # each, then a greedy call working each move out.
    sampled = [r for r in engine.requests if r.n == 2]
    assert len(sampled) == 3 and len({r.prompt for r in sampled}) == 3
    assert len(engine.requests) == 3 * 3
    tree = await harness.store.get_tree("mcts")
    assert tree is not None
    by_text = {n.text.split(" (left:")[0]: n for n in tree.nodes}
    root = next(n for n in tree.nodes if n.parent_id is None)
    assert (root.visits, root.value_sum) == (3, 3.0)
    assert by_text["13 - 9 = 4"].visits == 3
    # A wrong step is pruned as soon as the step checker sees it: never visited.
    assert by_text["4 * 9 = 35"].status == "pruned" and by_text["4 * 9 = 35"].visits == 0
    assert by_text["4 * 4 = 16"].visits == 1  # evaluated once, never chosen


async def test_compute_optimal_stops_early_on_an_easy_problem(redis_client: Redis) -> None:
    problem = Problem((ChatMessage("user", "3 pencils cost 45 cents; what do 7 cost?"),), "math")
    right = "Each costs 45 / 3 = 15 cents, so 7 * 15 = 105. The answer is 105."
    engine = StepScript("PROMPT", "\n", {}, whole_chains=[right, right, "The answer is 84."])
    harness = Harness(redis_client, tree_config("compute_optimal"), engine)
    result = await harness.solve("easy", problem)
    assert result.answer == "105"
    assert len(engine.requests) == 1  # the probe was enough
    meta = await harness.store.get_meta("easy")
    assert meta is not None
    assert (meta.extra["difficulty"], meta.extra["strategy_choice"]) == ("easy", "none")
    assert "2 agree" in meta.extra["choice_reason"]
    snapshot = await harness.ledger.snapshot("easy")
    assert snapshot.spent[TOKENS] < snapshot.granted[TOKENS] // 4  # the rest is handed back


async def test_a_probe_that_spends_the_budget_answers_from_the_probe(redis_client: Redis) -> None:
    problem = Problem((ChatMessage("user", "3 pencils cost 45 cents; what do 7 cost?"),), "math")
    probe = [
        "3 * 5 = 15 and 15 * 7 = 105 so the answer is 105.",
        "Let me think about it for a while. The answer is 84.",
        "Hmm, maybe 2 + 2 = 4 here. The answer is 4.",
    ]
    engine = StepScript("PROMPT", "\n", {}, whole_chains=probe)
    harness = Harness(redis_client, tree_config("compute_optimal", tokens=48), engine)
    result = await harness.solve("spent", problem)
    # Promising enough for best-of-N, but the 8 tokens left cannot pay for another chain.
    meta = await harness.store.get_meta("spent")
    assert meta is not None and meta.extra["strategy_choice"] == "best_of_n"
    assert result.answer == "105" and len(engine.requests) == 1
    snapshot = await harness.ledger.snapshot("spent")
    assert snapshot.spent[TOKENS] == 40 and snapshot.reserved[TOKENS] == 0


async def solve_as_hard(redis: Redis, tree_id: str, probe: list[str]) -> tuple[Harness, TreeMeta]:
    """Compute-optimal after `probe`, which must judge the puzzle hard and beam search solve it."""
    engine = StepScript("PROMPT", "\n", GAME24_SCRIPT, whole_chains=probe)
    harness = Harness(redis, tree_config("compute_optimal"), engine)
    result = await harness.solve(tree_id)
    assert result.answer == SOLUTION
    meta = await harness.store.get_meta(tree_id)
    assert meta is not None
    assert (meta.extra["difficulty"], meta.extra["strategy_choice"]) == ("hard", "beam_search")
    return harness, meta


async def test_compute_optimal_searches_a_hard_problem(redis_client: Redis) -> None:
    harness, _ = await solve_as_hard(redis_client, "hard", ["I think 24", "no idea", "4 + 9 = 13"])
    events = [e["kind"] for _, e in await harness.store.read_events("hard")]
    assert "strategy" in events and "progress" in events


async def test_probe_agreeing_on_a_wrong_answer_does_not_make_a_problem_easy(redis_client: Redis) -> None:
    wrong = "Add them all: 4 + 9 + 10 + 13"
    _, meta = await solve_as_hard(redis_client, "agreeing", [wrong, wrong, wrong])
    assert "3 of them proven wrong" in meta.extra["choice_reason"]


async def test_a_resumed_search_continues_the_stored_tree(redis_client: Redis) -> None:
    engine = game24_engine()
    harness = Harness(redis_client, tree_config("beam_search"), engine, leases=True)
    await harness.create("resumed")
    # What a planner that died in round 2 left behind: two kept first steps (one never
    # scored), a reservation it never settled, and its lease, still running out.
    (root,) = await harness.store.add_nodes("resumed", None, [NodeDraft("4 9 10 13", status="expanded")])
    first, _second = await harness.store.add_nodes(
        "resumed",
        root.node_id,
        [
            NodeDraft("13 - 9 = 4 (left: 4 10 4)", completion_tokens=5, logprob=-0.1),
            NodeDraft("4 + 9 = 13 (left: 10 13 13)", completion_tokens=5, logprob=-0.5),
        ],
    )
    await harness.store.update_node("resumed", first.node_id, score=1.0)
    await harness.ledger.reserve("resumed", TOKENS, 40)
    await redis_client.set(KeySpace("test").tree("resumed").lease, "dead-planner", px=300)

    result = await harness.solve("resumed", resume=True, create=False)
    assert result.answer == SOLUTION
    # No new first steps: the search went on from the stored ones.
    asked = [engine.path_of(r.prompt) for r in engine.requests]
    assert () not in asked and ("13 - 9 = 4",) in asked
    snapshot = await harness.ledger.snapshot("resumed")
    assert snapshot.reserved[TOKENS] == 0
    events = [e for _, e in await harness.store.read_events("resumed")]
    resumed = [e["data"] for e in events if e["kind"] == "resumed"]
    assert resumed == [{"nodes": 3, "voided_reservations": 40}]
    assert await redis_client.get(KeySpace("test").tree("resumed").lease) is None  # released


async def test_a_planner_that_loses_its_lease_leaves_the_tree_alone(redis_client: Redis) -> None:
    slow = StepScript("PROMPT", "\n", GAME24_SCRIPT)
    original = slow.generate

    async def stalled(request):  # type: ignore[no-untyped-def]
        await asyncio.sleep(2.0)
        return await original(request)

    slow.generate = stalled  # type: ignore[method-assign]
    harness = Harness(redis_client, tree_config("beam_search"), slow, leases=True)
    task = asyncio.create_task(harness.solve("stolen"))
    await asyncio.sleep(0.3)
    # Another planner takes the tree over (as after a partition): the old one must stop.
    await redis_client.set(KeySpace("test").tree("stolen").lease, "new-owner")
    with pytest.raises(Exception, match="lost the lease"):
        await task
    meta = await harness.store.get_meta("stolen")
    assert meta is not None and meta.status == "running"  # not marked cancelled by the loser
