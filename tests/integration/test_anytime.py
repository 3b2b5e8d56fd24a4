"""Anytime answers: a search stopped early by its deadline, its budget or a failing engine still
answers with the best candidate it grew, marked incomplete, and gives back what it did not use."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest
from redis.asyncio import Redis

from cluster.store import TOKENS
from cluster.types import GenerationRequest, GenerationResult
from tests.integration.test_tree_search import GAME24_SCRIPT, SOLUTION, Harness, game24_engine, tree_config
from tests.scripted import StepScript

pytestmark = pytest.mark.integration


@dataclass
class FailsAfter:
    """Answers the first `calls` engine calls from the script; then hangs (an engine that
    stopped answering) or raises `error` (an engine that died)."""

    engine: StepScript
    calls: int
    error: Exception | None = None
    seen: list[GenerationRequest] = field(default_factory=list)

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        self.seen.append(request)
        if len(self.seen) > self.calls:
            if self.error is not None:
                raise self.error
            await asyncio.sleep(3600)
        return await self.engine.generate(request)


async def assert_budget_settled(harness: Harness, tree_id: str) -> None:
    snapshot = await harness.ledger.snapshot(tree_id)
    assert snapshot.reserved.get(TOKENS, 0) == 0
    assert 0 < snapshot.spent.get(TOKENS, 0) <= snapshot.granted[TOKENS]


async def test_a_deadline_mid_expansion_answers_with_the_best_path_so_far(redis_client: Redis) -> None:
    config = tree_config("beam_search").with_overrides({"efforts": {"high": {"deadline_s": 1.0}}})
    # One call samples the first moves; two more work two of them out; the rest hang.
    engine = FailsAfter(game24_engine(), calls=3)
    harness = Harness(redis_client, config, engine)  # type: ignore[arg-type]

    result = await harness.solve("deadline")

    assert (result.status, result.incomplete_reason, result.finish_reason) == (
        "incomplete",
        "deadline",
        "length",
    )
    assert not result.verified
    tree = await harness.store.get_tree("deadline")
    assert tree is not None and tree.meta.status == "done"
    steps = {n.node_id: n for n in tree.nodes if n.parent_id is not None}
    # The two steps the engine wrote before it stopped answering are all the search had.
    assert len(steps) == 2 and tree.winning_path[-1] in steps
    assert result.answer == steps[tree.winning_path[-1]].text
    assert (
        tree.meta.extra["search_status"] == "incomplete"
        and tree.meta.extra["incomplete_reason"] == "deadline"
    )
    await assert_budget_settled(harness, "deadline")


async def test_an_engine_failure_after_some_work_answers_with_what_was_grown(redis_client: Redis) -> None:
    engine = FailsAfter(game24_engine(), calls=5, error=RuntimeError("the engine process died"))
    harness = Harness(redis_client, tree_config("beam_search"), engine)  # type: ignore[arg-type]

    result = await harness.solve("engine-died")

    assert (result.status, result.incomplete_reason) == ("incomplete", "error")
    # Five calls: the first round's moves and their four workings out; the next round's moves
    # are the call that fails. The four steps grown are all kept.
    tree = await harness.store.get_tree("engine-died")
    assert tree is not None and len(tree.nodes) - 1 == result.branches == 4
    assert not result.verified and result.answer in {n.text for n in tree.nodes}
    await assert_budget_settled(harness, "engine-died")


async def test_a_spent_budget_answers_with_the_best_candidate(redis_client: Redis) -> None:
    harness = Harness(redis_client, tree_config("beam_search"), game24_engine())
    # Tokens for the four first steps only (five each): the search cannot reach an answer.
    await harness.create("budget", tokens=24)

    result = await harness.solve("budget", create=False)

    assert (result.status, result.incomplete_reason, result.verified) == ("incomplete", "budget", False)
    assert result.answer != SOLUTION and result.branches == 4
    await assert_budget_settled(harness, "budget")


async def test_a_verified_answer_is_complete(redis_client: Redis) -> None:
    harness = Harness(redis_client, tree_config("beam_search"), game24_engine(GAME24_SCRIPT))

    result = await harness.solve("verified")

    assert (result.answer, result.status, result.incomplete_reason) == (SOLUTION, "complete", None)
    assert result.verified and result.finish_reason == "stop"
