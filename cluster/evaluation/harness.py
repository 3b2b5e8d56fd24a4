"""Evaluation harness: run a dataset through a running cluster at several efforts and grade it.

Each evaluated point is an effort, with its own strategy or another one named for the
request, and every point that is not best-of-N gets a baseline: best-of-N at the same effort,
capped at the point's mean reasoning tokens, so the comparison is at an equal token budget.
For Game of 24 every point also gets its model-free control (`control.py`): the same search
with uniformly random legal steps instead of the model's.

Every request is graded as it finishes and handed to `progress` (which appends it to
results.jsonl); records already measured (`done`, read back by `--resume`) are not asked again.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from typing import TypeVar

from cluster.api import MIN_COMPLETION_TOKENS
from cluster.client import ReasoningClient
from cluster.evaluation.control import ModelFreeControl, ModelRequired
from cluster.evaluation.data import TASK_OF, DatasetName, Item
from cluster.evaluation.grading import Grader
from cluster.evaluation.records import Point, PointKey, Record, label_defaults
from cluster.evaluation.report import Summary, summarize

BASELINE_STRATEGY = "best_of_n"
# How often the harness looks up from waiting for results (Ctrl-C is noticed between looks).
_WAIT_S = 0.2


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one request came to, before grading."""

    answer: str
    tree_id: str
    strategy: str
    reasoning_tokens: int
    latency_s: float
    status: str
    incomplete_reason: str | None
    verified: bool
    proposals: int
    # Answers of the tree's answered nodes; None when the tree could not be read.
    candidates: tuple[str, ...] | None


def evaluate(
    client: ReasoningClient,
    dataset: DatasetName,
    items: Sequence[Item],
    efforts: Sequence[str],
    strategies: Sequence[str] = (),
    *,
    baseline: bool = True,
    concurrency: int = 1,
    progress: Callable[[Record], None] | None = None,
    done: Sequence[Record] = (),
    grader: Grader | None = None,
    control: ModelFreeControl | None = None,
) -> list[Record]:
    """Every item at each effort's own strategy, then at the other `strategies`, then the
    baselines; with a `control`, each point's model-free control after it. Returns `done`
    and the new records.

    The phases run in order because each needs the one before: the efforts' own strategies
    are only known from the cluster's answers, and a baseline's budget from its point's tokens.
    """
    measured = list(done)
    with _grading(grader, dataset) as grading:

        def ask_all(points: Sequence[Point], check: bool = False) -> list[Record]:
            """The points, then (with a control) their controls; `check` that the control's
            config gives each effort the strategy the cluster ran."""
            asked = _ask_all(client, dataset, items, points, concurrency, progress, measured, grading)
            if control is None:
                return asked
            if check:
                _check_strategies(control, asked)
            controls = [replace(point, control=True) for point in points]
            return asked + _ask_all(
                client, dataset, items, controls, concurrency, progress, measured, grading, control
            )

        own_records = ask_all([Point(effort) for effort in efforts], check=True)
        own = {r.effort: r.strategy for r in own_records if not r.control}
        others = ask_all([Point(e, s) for e in efforts for s in strategies if s != own.get(e)])
        if baseline:
            service = [r for r in own_records + others if not r.control]
            ask_all(baseline_points(summarize(service)))
    return label_defaults(measured)


def _ask_all(
    client: ReasoningClient,
    dataset: DatasetName,
    items: Sequence[Item],
    points: Sequence[Point],
    concurrency: int,
    progress: Callable[[Record], None] | None,
    measured: list[Record],
    grader: Grader,
    control: ModelFreeControl | None = None,
) -> list[Record]:
    """The points' records: those `measured` holds, and the rest measured now (added to it)."""
    skip = {record.job for record in measured}
    measured.extend(
        run(client, dataset, items, points, concurrency, progress, skip=skip, grader=grader, control=control)
    )
    wanted = {(point.key, item.index) for point in points for item in items}
    return label_defaults([record for record in measured if record.job in wanted])


class ControlMismatch(ValueError):
    """The control's config maps an effort to another strategy than the cluster ran."""


def _check_strategies(control: ModelFreeControl, records: Sequence[Record]) -> None:
    ran = {r.effort: r.strategy for r in records if r.error is None}
    differ = [
        f"{effort}: the cluster ran {strategy}, the control's config says {control.strategy_for(effort)}"
        for effort, strategy in ran.items()
        if strategy != control.strategy_for(effort)
    ]
    if differ:
        raise ControlMismatch(
            "the control would not run the cluster's search (" + "; ".join(differ) + "): pass the "
            "cluster's config with --config (and --resume to keep what was measured)"
        )


def run(
    client: ReasoningClient,
    dataset: DatasetName,
    items: Sequence[Item],
    points: Sequence[Point],
    concurrency: int = 1,
    progress: Callable[[Record], None] | None = None,
    *,
    skip: set[tuple[PointKey, int]] | frozenset[tuple[PointKey, int]] = frozenset(),
    grader: Grader | None = None,
    control: ModelFreeControl | None = None,
) -> list[Record]:
    """Every item at every point but those in `skip`, at most `concurrency` requests at a
    time; `progress` sees each record as it is graded (on this thread), the result is in job
    order. A KeyboardInterrupt stops the run at once: requests in flight are abandoned."""
    jobs = [(point, item) for point in points for item in items if (point.key, item.index) not in skip]
    with _grading(grader, dataset) as grading:

        def measure(job: tuple[Point, Item]) -> Record:
            point, item = job
            return _measure(client, control, grading, point, item)

        finished: dict[int, Record] = {}
        for position, record in _parallel(measure, jobs, concurrency):
            finished[position] = record
            if progress is not None:
                progress(record)
    return [finished[position] for position in sorted(finished)]


T = TypeVar("T")
J = TypeVar("J")


def _parallel(work: Callable[[J], T], jobs: Sequence[J], workers: int) -> Iterator[tuple[int, T]]:
    """(position, result) of each job as it finishes, on `workers` daemon threads.

    Daemon threads, so that an interrupted run ends at once instead of waiting for requests
    in flight; whatever they finish after the consumer stopped is dropped.
    """
    todo: queue.SimpleQueue[tuple[int, J]] = queue.SimpleQueue()
    for position, job in enumerate(jobs):
        todo.put((position, job))
    results: queue.SimpleQueue[tuple[int, T | BaseException]] = queue.SimpleQueue()
    stopped = threading.Event()

    def worker() -> None:
        while not stopped.is_set():
            try:
                position, job = todo.get_nowait()
            except queue.Empty:
                return
            try:
                results.put((position, work(job)))
            except BaseException as exc:  # handed to the consumer, which raises it
                results.put((position, exc))

    for _ in range(min(workers, len(jobs))):
        threading.Thread(target=worker, name="eval-worker", daemon=True).start()
    try:
        for _ in jobs:
            position, outcome = _next(results)
            if isinstance(outcome, BaseException):
                raise outcome
            yield position, outcome
    finally:
        stopped.set()


def _next(results: queue.SimpleQueue[T]) -> T:
    # Short waits, not one long one: a KeyboardInterrupt is raised between them.
    while True:
        try:
            return results.get(timeout=_WAIT_S)
        except queue.Empty:
            continue


def _measure(
    client: ReasoningClient, control: ModelFreeControl | None, grader: Grader, point: Point, item: Item
) -> Record:
    started = time.monotonic()
    try:
        attempt = _control(control, point, item) if point.control else _ask(client, grader, point, item)
    except RequestFailed as failed:  # one failed item is recorded as wrong, not the whole run lost
        exc = failed.__cause__
        return Record(
            item.index,
            point.effort,
            point.strategy or "",
            point.baseline,
            point.max_tokens,
            tree_id="",
            correct=False,
            answer="",
            reasoning_tokens=0,
            latency_s=time.monotonic() - started,
            error=f"{type(exc).__name__}: {exc}"[:300],
            own_strategy=point.strategy is None,
            control=point.control,
            candidates=0,
            correct_candidate=False,
        )
    correct = grader.correct(item, attempt.answer)
    candidates = attempt.candidates
    return Record(
        item.index,
        point.effort,
        attempt.strategy,
        point.baseline,
        point.max_tokens,
        tree_id=attempt.tree_id,
        correct=correct,
        answer=attempt.answer,
        reasoning_tokens=attempt.reasoning_tokens,
        latency_s=attempt.latency_s,
        own_strategy=point.strategy is None,
        control=point.control,
        status=attempt.status,
        incomplete_reason=attempt.incomplete_reason,
        verified=attempt.verified,
        proposals=attempt.proposals,
        candidates=None if candidates is None else len(candidates),
        # The returned answer counts among the candidates even when no node states it.
        correct_candidate=None if candidates is None else correct or grader.any_correct(item, candidates),
    )


class RequestFailed(RuntimeError):
    """The service (or the control's search) gave no answer: the item counts as wrong."""


def _ask(client: ReasoningClient, grader: Grader, point: Point, item: Item) -> Attempt:
    try:
        result = client.ask(
            item.question,
            point.effort,
            task=TASK_OF[grader.dataset],
            strategy=point.strategy,
            max_completion_tokens=point.max_tokens,
        )
    except Exception as exc:
        raise RequestFailed() from exc
    return Attempt(
        answer=result.answer,
        tree_id=result.tree_id,
        strategy=result.strategy,
        reasoning_tokens=result.reasoning_tokens,
        latency_s=result.elapsed_s,
        status=result.status,
        incomplete_reason=result.incomplete_reason,
        verified=result.verified,
        proposals=result.branches,
        candidates=_tree_answers(client, result.tree_id),
    )


def _tree_answers(client: ReasoningClient, tree_id: str) -> tuple[str, ...] | None:
    """The answers of the tree's answered nodes (GET /v1/trees/{id}); None if it cannot be read."""
    try:
        tree = client.tree(tree_id)
    except Exception:  # an expired or unreadable tree leaves pass@k unknown, not the item lost
        return None
    return tuple(str(node["answer"]) for node in tree.get("nodes", []) if node.get("answer"))


def _control(control: ModelFreeControl | None, point: Point, item: Item) -> Attempt:
    if control is None:
        raise RuntimeError("a control point needs the model-free control")
    key = f"{point.effort}:{point.strategy}:{point.max_tokens}:{point.baseline}"
    try:
        outcome = control.solve(item.question, point.effort, point.strategy, point.max_tokens, key)
    except ModelRequired:
        raise  # the control asked for a model: no comparison holds, the run stops
    except Exception as exc:
        raise RequestFailed() from exc
    result = outcome.result
    return Attempt(
        answer=result.answer,
        tree_id=result.tree_id,
        strategy=result.strategy,
        reasoning_tokens=result.usage.completion_tokens,
        latency_s=outcome.latency_s,
        status=result.status,
        incomplete_reason=result.incomplete_reason,
        verified=result.verified,
        proposals=result.branches,
        candidates=outcome.candidates,
    )


def _grading(grader: Grader | None, dataset: DatasetName) -> AbstractContextManager[Grader]:
    """The given grader, or the dataset's own for the duration of the call."""
    return nullcontext(grader) if grader is not None else Grader(dataset)


def baseline_budget(point: Summary) -> int:
    """The token cap that lets best-of-N spend no more than `point` did on average."""
    return max(MIN_COMPLETION_TOKENS, math.ceil(point.mean_reasoning_tokens))


def baseline_points(summaries: Sequence[Summary]) -> list[Point]:
    """Best-of-N at each non-best-of-N point's effort and budget; one per (effort, budget)."""
    points = [
        Point(s.effort, BASELINE_STRATEGY, baseline_budget(s), baseline=True)
        for s in summaries
        if not s.baseline and not s.control and s.strategy != BASELINE_STRATEGY and s.errors < s.n
    ]
    return list(dict.fromkeys(points))
