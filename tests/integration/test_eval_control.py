"""The model-free Game of 24 control: the real search controller on its own embedded Redis,
with uniformly random legal steps instead of a model, priced by the model's tokenizer."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterator
from fractions import Fraction
from typing import Any, cast

import pytest

from cluster.client import ReasoningAnswer, ReasoningClient
from cluster.engine.tokenizer import load_tokenizer
from cluster.evaluation import ControlMismatch, Item, ModelFreeControl, RandomProposer, evaluate
from cluster.evaluation.control import ModelRequired
from cluster.store import TOKENS, ThoughtNode, ThoughtTree
from cluster.tasks import pose
from cluster.tasks.game24 import (
    Operation,
    check_game24,
    claimed_result,
    extract_game24_expression,
    legal_operations,
    number_text,
    parse_game24_step,
    replay,
)
from cluster.types import ChatMessage, Effort, GenerationRequest
from tests.plumbing import plumbing_config

pytestmark = pytest.mark.integration

PUZZLE = "4 9 10 13"
NUMBERS = (4, 9, 10, 13)


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return load_tokenizer(plumbing_config().model)


@pytest.fixture(scope="module")
def control(tokenizer: Any) -> Iterator[ModelFreeControl]:
    with ModelFreeControl(plumbing_config(), tokenizer, seed=1) as running:
        yield running


def written(node: ThoughtNode) -> str:
    """What the proposer wrote: the stored step without the planner's "(left: ...)"."""
    return node.text.split(" (left:")[0]


def path_before(tree: ThoughtTree, node: ThoughtNode) -> list[str]:
    by_id = {n.node_id: n for n in tree.nodes}
    path: list[str] = []
    parent = by_id[node.parent_id] if node.parent_id else None
    while parent is not None and parent.parent_id is not None:
        path.insert(0, parent.text)
        parent = by_id[parent.parent_id]
    return path


def tokens_of(tokenizer: Any, text: str) -> int:
    # The model's tokenizer for the text, and the end-of-sequence token after it.
    return len(tokenizer.encode(text, add_special_tokens=False)) + 1


def prices(tokenizer: Any, step: str, samples: int) -> set[int]:
    """What a step may cost: written in one call, or in two parts (its move, sampled up to
    `samples` times, and the rest after it, each part with its end-of-sequence token)."""
    move, rest = step.split(" = ")
    in_two_parts = tokens_of(tokenizer, move), tokens_of(tokenizer, f" = {rest}")
    return {tokens_of(tokenizer, step)} | {
        m * in_two_parts[0] + in_two_parts[1] for m in range(1, samples + 1)
    }


def test_steps_are_legal_with_true_results_and_cost_what_the_tokenizer_says(
    control: ModelFreeControl, tokenizer: Any
) -> None:
    outcome = control.solve(PUZZLE, "medium", "beam_search", None, "steps")
    tree = outcome.tree
    assert tree is not None
    steps = [n for n in tree.nodes if n.parent_id is not None]
    assert len(steps) == outcome.result.branches > 8
    siblings: dict[str | None, list[str]] = defaultdict(list)
    for node in steps:
        pool = [number.value for number in replay(NUMBERS, path_before(tree, node))]
        text = written(node)
        siblings[node.parent_id].append(text)
        if node.finish_reason == "length":  # cut where the budget left less than the step
            continue
        step = parse_game24_step(text)
        assert step is not None, text
        assert Operation(number_text(step.a), step.op, number_text(step.b)) in legal_operations(pool)
        value = step.true_value()
        assert value is not None
        assert number_text(step.claimed) == (claimed_result(pool) or number_text(value))
        assert node.completion_tokens in prices(tokenizer, text, samples=outcome.result.branches)
    # The grammar leaves the steps tried at a node out: siblings never repeat.
    for texts in siblings.values():
        assert len(texts) == len(set(texts))


def test_the_budget_buys_what_the_tokens_pay_for_and_no_more(control: ModelFreeControl) -> None:
    for effort, cap in (("medium", None), ("medium", 150), ("high", None), ("low", None)):
        outcome = control.solve(PUZZLE, effort, None, cap, f"budget-{cap}")
        tree = outcome.tree
        assert tree is not None
        granted = tree.budget.granted[TOKENS]
        budget = plumbing_config().budget_for(Effort(effort))
        assert granted == min(budget.max_reasoning_tokens, cap or budget.max_reasoning_tokens)
        spent = sum(n.completion_tokens for n in tree.nodes)
        assert tree.budget.spent[TOKENS] == spent == outcome.result.usage.completion_tokens <= granted
        assert tree.budget.reserved.get(TOKENS, 0) == 0


def test_whole_chains_play_a_random_game_out_and_state_its_expression(
    control: ModelFreeControl, tokenizer: Any
) -> None:
    outcome = control.solve(PUZZLE, "medium", "best_of_n", None, "chains")
    tree = outcome.tree
    assert tree is not None
    chains = [n for n in tree.nodes if n.parent_id is not None]
    assert len(chains) > 1
    for chain in chains:
        lines = chain.text.splitlines()
        assert len(lines) == 4 and lines[-1].startswith("Answer: ")
        pool = replay(NUMBERS, lines[:-1])
        assert len(pool) == 1
        for index, line in enumerate(lines[:-1]):
            step = parse_game24_step(line)
            assert step is not None and step.claimed == step.true_value()
            before = [number.value for number in replay(NUMBERS, lines[:index])]
            assert Operation(number_text(step.a), step.op, number_text(step.b)) in legal_operations(before)
        expression = extract_game24_expression(chain.answer or "")
        assert expression is not None
        # The answer is the game it played: right exactly when the last number left is 24.
        assert check_game24(expression, NUMBERS).ok == (pool[0].value == 24)
        assert chain.completion_tokens == tokens_of(tokenizer, chain.text)


def test_the_same_seed_draws_the_same_proposals(tokenizer: Any) -> None:
    def draws(seed: int) -> tuple[list[str], list[str]]:
        with ModelFreeControl(plumbing_config(), tokenizer, seed=seed) as control:
            chains = control.solve(PUZZLE, "medium", "best_of_n", None, "seed").tree
            steps = control.solve(PUZZLE, "medium", "beam_search", None, "seed").tree
        assert chains is not None and steps is not None
        # Beam search expands its kept steps concurrently: the order they are written in (and
        # with it the tie-breaks between equally scored steps) is the event loop's. Its first
        # steps, drawn one after another at the root, repeat exactly.
        return [n.text for n in chains.nodes], sorted(n.text for n in steps.nodes if n.depth == 1)

    first = draws(7)
    assert draws(7) == first
    assert draws(8) != first


def test_the_control_never_asks_a_model(control: ModelFreeControl, tokenizer: Any) -> None:
    # The effort's model judge is built on the control's proposer; programs judge every
    # Game of 24 answer, so it is never asked.
    outcome = control.solve(PUZZLE, "high", None, None, "judge")
    assert outcome.result.branches > 0
    # Where only a model could judge, the control refuses rather than answer for a model.
    judge_only = plumbing_config({"efforts": {"high": {"verifiers": ["judge"]}}})
    with ModelFreeControl(judge_only, tokenizer) as judged, pytest.raises(ModelRequired):
        judged.solve(PUZZLE, "high", None, None, "judge")


async def test_the_proposer_writes_only_game_steps_and_games(tokenizer: Any) -> None:
    problem = pose((ChatMessage("user", PUZZLE),), "game24")
    proposer = RandomProposer(problem, "PROMPT", "\n", tokenizer, "0")
    first_steps = legal_operations([Fraction(n) for n in NUMBERS])
    moves = "|".join(re.escape(" ".join(op)) for op in first_steps)
    asked = GenerationRequest("PROMPT", 3, 20, 0.8, regex=f"({moves}) = -?[0-9/]+")
    first = {c.text for c in (await proposer.generate(asked)).completions}
    assert 0 < len(first) <= 3
    assert first <= {f"{' '.join(op)} = {number_text(op.value())}" for op in first_steps}
    # Asked again at the same node, it leaves the steps it proposed there out.
    again = {c.text for c in (await proposer.generate(asked)).completions}
    assert again and not again & first
    # A step in two parts: moves where the grammar asks for moves alone, then each move's
    # true result after it.
    asked_moves = GenerationRequest("PROMPT", 2, 20, 0.8, regex=f"({moves})")
    drawn = [c.text for c in (await proposer.generate(asked_moves)).completions]
    assert drawn and set(drawn) <= {" ".join(op) for op in first_steps} - {
        t.split(" = ")[0] for t in first | again
    }
    work_out = GenerationRequest(f"PROMPT{drawn[0]}", 1, 8, 0.0, regex=" = -?[0-9/]+")
    (rest,) = (await proposer.generate(work_out)).completions
    assert rest.text == f" = {number_text(Operation(*drawn[0].split(' ')).value())}"
    # A judge's question after a chain, and a prompt of another problem: only a model answers.
    for prompt in ("PROMPT 4 + 9 = 13\nIs it right?", "Another problem"):
        with pytest.raises(ModelRequired):
            await proposer.generate(GenerationRequest(prompt, 1, 1, 0.0))
    # A step the budget cannot pay in full is cut where the engine would cut it.
    (cut,) = (await proposer.generate(GenerationRequest("PROMPT", 1, 2, 0.0, regex=asked.regex))).completions
    assert (cut.token_count, cut.finish_reason) == (2, "length")


def test_a_control_whose_config_maps_an_effort_elsewhere_is_refused(tokenizer: Any) -> None:
    class Cluster:
        """Runs self_consistency at medium, where the control's config says beam_search."""

        def ask(self, question: str, effort: str, **kwargs: Any) -> ReasoningAnswer:
            return ReasoningAnswer("1 + 2", "", "t1", effort, "self_consistency", 0, 9, 9, 0, 1, 1.0)

        def tree(self, tree_id: str) -> dict[str, Any]:
            return {"nodes": []}

    control = ModelFreeControl(plumbing_config(), tokenizer)
    puzzles = [Item(1, PUZZLE, "24")]
    with pytest.raises(ControlMismatch, match="medium: the cluster ran self_consistency, the control's"):
        evaluate(cast(ReasoningClient, Cluster()), "game24", puzzles, ["medium"], control=control)
