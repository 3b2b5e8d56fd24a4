"""The model-free control for Game of 24: the same search with no model in it.

At every evaluated point the control runs the search the service ran — the same strategy,
the effort's budget from the same config, the same verifiers, the real `SearchController` on
a Redis of its own — with one part swapped: the proposer. `RandomProposer` answers the
search's engine calls without a model. For a step it draws uniformly at random among the
steps the task's grammar offers at that node (`cluster.tasks.game24.legal_operations`, the
grammar's own source: any two numbers left, any operation, no division by zero, no step
already tried there) and writes it with its true result, or with the claim of 24 the rules
fix for the last step; for a whole chain (best-of-N, probes) it plays a random game out that
way and states the expression it built. It is enumeration under the game's rules, not a
model, and it reports each proposal at the tokens the model's own tokenizer needs for the
same text (plus the end-of-sequence token), so the budget buys it as many proposals as the
text would cost the model. What the model's guidance is worth is what it solves beyond this.
"""

from __future__ import annotations

import random
import re
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from types import TracebackType
from typing import NoReturn, Protocol

from redis.asyncio import Redis

from cluster.config import ClusterConfig
from cluster.evaluation.loop import BackgroundLoop
from cluster.prompts import ChatTokenizer, PromptBuilder
from cluster.search.context import SearchServices
from cluster.search.controller import SearchController
from cluster.store import (
    TOKENS,
    VERIFIER_CALLS,
    BudgetLedger,
    EmbeddedRedis,
    KeySpace,
    ThoughtTree,
    TreeMeta,
    TreeStore,
)
from cluster.tasks import pose, verifiers_for
from cluster.tasks.game24 import (
    TARGET,
    Game24Step,
    Operation,
    claimed_result,
    combine,
    legal_operations,
    number_text,
    replay,
    starting_pool,
)
from cluster.types import (
    ChatMessage,
    Completion,
    Effort,
    GenerationRequest,
    GenerationResult,
    Problem,
    SolveRequest,
    SolveResult,
)
from cluster.verifiers import VerifierDeps, build_verifier
from cluster.verifiers.service import VerificationService

TASK = "game24"
TENANT = "model-free-control"
REPLICA = "model-free control"
# The end-of-sequence token the model generates after a step or a chain (the engine counts it).
END_OF_SEQUENCE_TOKENS = 1


class Tokenizer(ChatTokenizer, Protocol):
    """The model's tokenizer: renders the prompt, counts and cuts the proposals' text."""

    def decode(self, token_ids: list[int]) -> str: ...


class ModelRequired(RuntimeError):
    """The control's search asked for something only a model can write (a model verifier's
    verdict, free text): the control asks no model, so the comparison would not hold."""


@dataclass
class RandomProposer:
    """Answers a Game of 24 search's engine calls with uniformly random legal steps.

    One per tree: it remembers the steps it proposed at each node, as the grammar leaves the
    steps tried there out. The `n` proposals of one call are drawn independently from what
    the grammar offers for that call, as `n` samples of the model would be. Each draw is seeded
    by `seed`, the node, the steps tried there and its place in the call (each game by `seed`
    and its number), so a search draws the same whatever order its concurrent expansions
    reach the proposer in.
    """

    problem: Problem
    base_prompt: str
    delimiter: str
    tokenizer: Tokenizer
    seed: str
    # What the control was asked that only a model could answer.
    refused: str | None = None
    _tried: dict[str, set[tuple[Fraction, str, Fraction]]] = field(default_factory=dict)
    _games: int = 0

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        path, move = self._path(request)
        if request.regex is not None and move:
            texts = [self._worked_out(path, move)]
        elif request.regex is not None:
            texts = self._steps(path, request.n, request.regex)
        elif not path and not request.stop:
            texts = [self._playout() for _ in range(request.n)]
        else:
            self._refuse(
                "the model-free control proposes Game of 24 steps and whole games only; it was "
                "asked for free text (a model verifier's verdict?), which only a model can write"
            )
        completions = tuple(self._complete(text, request.max_tokens) for text in texts)
        prompt_tokens = len(self.tokenizer.encode(request.prompt, add_special_tokens=False))
        return GenerationResult(completions, prompt_tokens, cached_tokens=0, replica=REPLICA)

    def _path(self, request: GenerationRequest) -> tuple[list[str], str]:
        """The steps so far (the prompt is the problem's prompt, then each step and a
        delimiter) and the move after them whose working out is asked for, if any."""
        if not request.prompt.startswith(self.base_prompt):
            self._refuse("the model-free control was asked to continue the prompt of another problem")
        *path, move = request.prompt[len(self.base_prompt) :].split(self.delimiter)
        return path, move

    def _steps(self, path: Sequence[str], n: int, regex: str) -> list[str]:
        """`n` random legal steps; only their moves ("a op b") where the grammar asks for the
        move alone (a step in two parts: `_worked_out` writes the rest)."""
        steps = self._drawn(path, n)
        return [step if re.fullmatch(regex, step) else step.split(" = ")[0] for step in steps]

    def _worked_out(self, path: Sequence[str], move: str) -> str:
        """The rest of a step after its move: its true result, or the claim the rules fix."""
        pool = [number.value for number in replay(self._numbers, path)]
        claimed = claimed_result(pool)
        return f" = {number_text(Operation(*move.split(' ')).value()) if claimed is None else claimed}"

    def _drawn(self, path: Sequence[str], n: int) -> list[str]:
        node = self.delimiter.join(path)
        pool = [number.value for number in replay(self._numbers, path)]
        tried = self._tried.setdefault(node, set())
        offered = legal_operations(pool, tried)
        if not offered:
            return []
        drawn = [random.Random(f"{self.seed}:{node}:{len(tried)}:{i}").choice(offered) for i in range(n)]
        tried.update((Fraction(op.a), op.op, Fraction(op.b)) for op in drawn)
        claimed = claimed_result(pool)
        return [f"{_stated(op)} = {number_text(op.value()) if claimed is None else claimed}" for op in drawn]

    def _playout(self) -> str:
        """A whole game of uniformly random legal steps, laid out as the task's instructions ask."""
        self._games += 1
        rng = random.Random(f"{self.seed}:game {self._games}")
        pool = starting_pool(self._numbers)
        lines = []
        while len(pool) > 1:
            operation = rng.choice(legal_operations([number.value for number in pool]))
            value = operation.value()
            step = Game24Step(Fraction(operation.a), operation.op, Fraction(operation.b), value, None)
            pool = combine(pool, step)
            listed = " ".join(number_text(number.value) for number in pool)
            lines.append(f"{_stated(operation)} = {number_text(value)} (left: {listed})")
        # The last step's expression, without the parentheses `combine` put around it.
        lines.append(f"Answer: {pool[0].expression[1:-1]} = {TARGET}")
        return "\n".join(lines)

    def _complete(self, text: str, max_tokens: int) -> Completion:
        """The text at the model tokenizer's count; cut where the model would have been cut."""
        tokens = self.tokenizer.encode(text, add_special_tokens=False)
        if len(tokens) + END_OF_SEQUENCE_TOKENS <= max_tokens:
            return Completion(text, len(tokens) + END_OF_SEQUENCE_TOKENS, "stop")
        return Completion(self.tokenizer.decode(tokens[:max_tokens]), max_tokens, "length")

    def _refuse(self, reason: str) -> NoReturn:
        # Remembered: the search may take the error for a failed call and carry on anytime.
        self.refused = reason
        raise ModelRequired(reason)

    @property
    def _numbers(self) -> tuple[int, ...]:
        return self.problem.numbers or ()


def _stated(operation: Operation) -> str:
    return " ".join(operation)


@dataclass(frozen=True, slots=True)
class ControlOutcome:
    result: SolveResult
    # The control's tree as the search left it (None if it expired at once).
    tree: ThoughtTree | None
    latency_s: float

    @property
    def candidates(self) -> tuple[str, ...]:
        """The answers of every answered node of the tree."""
        return tuple(node.answer for node in self.tree.nodes if node.answer) if self.tree else ()


class ModelFreeControl:
    """Runs control searches on an embedded Redis and an event loop of its own.

    A context manager; `solve` may be called from any thread. Seeded: the same seed, key and
    puzzle give the same search.
    """

    def __init__(self, config: ClusterConfig, tokenizer: Tokenizer, seed: int = 0) -> None:
        self._config = config
        self._tokenizer = tokenizer
        self._prompts = PromptBuilder(tokenizer)
        self._seed = seed
        self._server = EmbeddedRedis()
        self._loop = BackgroundLoop("model-free-control")
        self._redis: Redis | None = None

    def __enter__(self) -> ModelFreeControl:
        self._server.start()
        self._loop.__enter__()
        self._redis = Redis.from_url(self._server.url)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        try:
            if self._redis is not None:
                self._loop.run(self._redis.aclose())
            self._loop.__exit__(kind, error, trace)
        finally:
            self._server.stop()

    def strategy_for(self, effort: str) -> str:
        """The strategy the control's config gives `effort` (the cluster's, with its config)."""
        return self._config.budget_for(Effort(effort)).strategy

    def solve(
        self, question: str, effort: str, strategy: str | None, max_tokens: int | None, key: str
    ) -> ControlOutcome:
        """The control's search of one puzzle at one point; `key` names the point for the seed."""
        return self._loop.run(self.asolve(question, effort, strategy, max_tokens, key))

    async def asolve(
        self, question: str, effort: str, strategy: str | None, max_tokens: int | None, key: str
    ) -> ControlOutcome:
        if self._redis is None:
            raise RuntimeError("the control runs inside `with ModelFreeControl(...)`")
        started = time.monotonic()
        problem = pose((ChatMessage("user", question),), TASK)
        request = self._request(problem, Effort(effort), strategy, max_tokens)
        keys = KeySpace("control")
        store, ledger = TreeStore(self._redis, keys), BudgetLedger(self._redis, keys)
        budget = self._config.budget_for(request.effort)
        meta = TreeMeta(
            request.tree_id,
            TENANT,
            effort,
            strategy or budget.strategy,
            created_at=time.time(),
            question=question,
        )
        grants = {TOKENS: request.max_reasoning_tokens, VERIFIER_CALLS: budget.max_verifier_calls}
        await store.create_tree(meta, self._config.redis.active_tree_ttl_s, grants)
        proposer = RandomProposer(
            problem,
            request.prompt,
            self._config.task_settings(TASK).step_delimiter,
            self._tokenizer,
            # A string seed hashes the same in every process (no PYTHONHASHSEED).
            f"{self._seed}:{key}:{question}",
        )
        services = SearchServices(store, ledger, proposer, self._verifiers(budget.verifiers, proposer))
        result = await SearchController(self._config, services).solve(request)
        if proposer.refused is not None:
            raise ModelRequired(proposer.refused)
        tree = await store.get_tree(request.tree_id)
        return ControlOutcome(result, tree, time.monotonic() - started)

    def _request(
        self, problem: Problem, effort: Effort, strategy: str | None, cap: int | None
    ) -> SolveRequest:
        """The planner's request, as the gateway would make it for the same chat request."""
        budget = self._config.budget_for(effort)
        tokens = min(budget.max_reasoning_tokens, cap) if cap is not None else budget.max_reasoning_tokens
        return SolveRequest(
            tree_id=uuid.uuid4().hex,
            tenant=TENANT,
            effort=effort,
            problem=problem,
            prompt=self._prompts.render(problem),
            max_reasoning_tokens=tokens,
            strategy=strategy,
            deadline_at=time.time() + budget.deadline_s,
        )

    def _verifiers(self, names: Sequence[str], proposer: RandomProposer) -> VerificationService:
        """The effort's verifiers; a model verifier would ask the proposer, which refuses."""
        deps = VerifierDeps(proposer, self._prompts, self._config.model.max_model_len)
        return VerificationService({name: build_verifier(name, deps) for name in verifiers_for(names, TASK)})
