"""Evaluation harness: run a dataset through a running cluster at several efforts and grade it.

Each evaluated point is an effort, with its own strategy or another one named for the
request, and every point that is not best-of-N gets a baseline: best-of-N at the same effort,
capped at the point's mean reasoning tokens, so the comparison is at an equal token budget.
Grading uses the same programmatic checks the verifiers use (exact rational answer equality
for GSM8K, the Game of 24 checker), applied to the answer the service returned.
"""

from __future__ import annotations

import csv
import json
import math
import random
import statistics
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Literal

from cluster.api import MIN_COMPLETION_TOKENS
from cluster.client import ReasoningClient
from cluster.tasks import get_task, pose
from cluster.types import ChatMessage, Effort, Problem

DatasetName = Literal["gsm8k", "game24"]
SHIPPED = {"gsm8k": "gsm8k/train-500.jsonl", "game24": "game24/24-dev.csv"}
TASK_OF = {"gsm8k": "math", "game24": "game24"}
# Game of 24 targets are stated on a sample of at least 50 puzzles; GSM8K runs whole by default.
DEFAULT_LIMIT: dict[str, int | None] = {"game24": 50, "gsm8k": None}
EFFORT_ORDER = tuple(e.value for e in Effort)
BASELINE_STRATEGY = "best_of_n"
UNKNOWN_STRATEGY = "unknown"


@dataclass(frozen=True, slots=True)
class Item:
    # The line number for GSM8K; the puzzle's rank in the file for Game of 24.
    index: int
    question: str
    reference: str


@dataclass(frozen=True, slots=True)
class Point:
    """One configuration to evaluate every item at."""

    effort: str
    # None: the effort's own strategy, as the cluster's config maps it.
    strategy: str | None = None
    # `max_completion_tokens` of the requests: caps the effort's reasoning-token budget.
    max_tokens: int | None = None
    baseline: bool = False


@dataclass(frozen=True, slots=True)
class Record:
    index: int
    effort: str
    strategy: str
    baseline: bool
    max_tokens: int | None
    tree_id: str
    correct: bool
    answer: str
    reasoning_tokens: int
    latency_s: float
    error: str | None = None
    # Whether the request left the strategy to the effort (the product's own mapping).
    own_strategy: bool = False

    @property
    def row(self) -> tuple[str, str, bool, int | None]:
        return self.effort, self.strategy, self.baseline, self.max_tokens


@dataclass(frozen=True, slots=True)
class Summary:
    effort: str
    strategy: str
    baseline: bool
    max_tokens: int | None
    n: int
    accuracy: float
    mean_reasoning_tokens: float
    p50_latency_s: float
    p95_latency_s: float
    errors: int
    own_strategy: bool = False


def load_items(dataset: DatasetName, path: str | Path | None = None) -> list[Item]:
    """The dataset's items from `path`, or from the copy the package ships.

    The shipped Game of 24 file has no puzzles ranked 901-1000: they are held back for
    independent evaluation, so nothing here can tune on them. A `path` is read as it is.
    """
    source = Path(path) if path else Path(str(resources.files("cluster.datasets").joinpath(SHIPPED[dataset])))
    text = source.read_text()
    return list(_gsm8k(text) if dataset == "gsm8k" else _game24(text))


def _gsm8k(text: str) -> Iterator[Item]:
    for index, line in enumerate(row for row in text.splitlines() if row.strip()):
        row = json.loads(line)
        yield Item(index, row["question"], row["answer"].rsplit("####", 1)[-1].strip())


def _game24(text: str) -> Iterator[Item]:
    for row in csv.DictReader(text.splitlines()):
        yield Item(int(row["Rank"]), row["Puzzles"].strip(), "24")


def sample(items: Sequence[Item], limit: int | None, seed: int) -> list[Item]:
    if limit is None or limit >= len(items):
        return list(items)
    return sorted(random.Random(seed).sample(list(items), limit), key=lambda item: item.index)


def grade(dataset: DatasetName, item: Item, answer: str) -> bool:
    """The task family's own grading against the item's reference."""
    task = TASK_OF[dataset]
    problem = pose((ChatMessage("user", item.question),), task, item.reference)
    return get_task(task).is_correct(answer, problem)


def grade_answer(problem: Problem, answer: str) -> bool | None:
    """Whether `answer` is right by the problem's own label, as `grade` judges a dataset item;
    None when the problem carries none (a Game of 24 puzzle labels itself, others need a
    reference answer)."""
    task = get_task(problem.task)
    return task.is_correct(answer, problem) if task.labelled(problem) else None


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
) -> list[Record]:
    """Every item at each effort's own strategy, then at the other `strategies`, then the baselines.

    The phases run in order because each needs the one before: the efforts' own strategies
    are only known from the cluster's answers, and a baseline's budget from its point's tokens.
    """

    def ask_all(points: Sequence[Point]) -> list[Record]:
        return run(client, dataset, items, points, concurrency, progress)

    records = _label_defaults(ask_all([Point(effort) for effort in efforts]))
    own = {record.effort: record.strategy for record in records}
    records += ask_all([Point(e, s) for e in efforts for s in strategies if s != own.get(e)])
    if baseline:
        records += ask_all(baseline_points(summarize(records)))
    return records


def run(
    client: ReasoningClient,
    dataset: DatasetName,
    items: Sequence[Item],
    points: Sequence[Point],
    concurrency: int = 1,
    progress: Callable[[Record], None] | None = None,
) -> list[Record]:
    """Every item at every point, at most `concurrency` requests at a time, in job order."""

    def ask(job: tuple[Point, Item]) -> Record:
        record = _ask(client, dataset, *job)
        if progress is not None:
            progress(record)
        return record

    jobs = [(point, item) for point in points for item in items]
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        return list(pool.map(ask, jobs))


def _ask(client: ReasoningClient, dataset: DatasetName, point: Point, item: Item) -> Record:
    try:
        result = client.ask(
            item.question,
            point.effort,
            task=TASK_OF[dataset],
            strategy=point.strategy,
            max_completion_tokens=point.max_tokens,
        )
    except Exception as exc:  # one failed item is recorded as wrong, not the whole run lost
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
            latency_s=0.0,
            error=f"{type(exc).__name__}: {exc}"[:300],
            own_strategy=point.strategy is None,
        )
    return Record(
        item.index,
        point.effort,
        result.strategy,
        point.baseline,
        point.max_tokens,
        tree_id=result.tree_id,
        correct=grade(dataset, item, result.answer),
        answer=result.answer,
        reasoning_tokens=result.reasoning_tokens,
        latency_s=result.elapsed_s,
        own_strategy=point.strategy is None,
    )


def _label_defaults(records: Sequence[Record]) -> list[Record]:
    """Failed requests at an effort's own strategy get that strategy's name from its answers."""
    own = {r.effort: r.strategy for r in records if r.error is None}
    return [r if r.strategy else replace(r, strategy=own.get(r.effort, UNKNOWN_STRATEGY)) for r in records]


def baseline_budget(point: Summary) -> int:
    """The token cap that lets best-of-N spend no more than `point` did on average."""
    return max(MIN_COMPLETION_TOKENS, math.ceil(point.mean_reasoning_tokens))


def baseline_points(summaries: Sequence[Summary]) -> list[Point]:
    """Best-of-N at each non-best-of-N point's effort and budget; one per (effort, budget)."""
    points = [
        Point(s.effort, BASELINE_STRATEGY, baseline_budget(s), baseline=True)
        for s in summaries
        if not s.baseline and s.strategy != BASELINE_STRATEGY and s.errors < s.n
    ]
    return list(dict.fromkeys(points))


def summarize(records: Sequence[Record]) -> list[Summary]:
    """One row per (effort, strategy, baseline, cap), efforts in order and each point's
    baseline after it; failed requests count as wrong answers in their row."""
    groups: dict[tuple[str, str, bool, int | None], list[Record]] = {}
    for record in records:
        groups.setdefault(record.row, []).append(record)
    summaries = [_summary(group) for group in groups.values()]
    return sorted(summaries, key=_row_order)


def _row_order(s: Summary) -> tuple[int, bool, bool, float, str]:
    effort_rank = EFFORT_ORDER.index(s.effort) if s.effort in EFFORT_ORDER else len(EFFORT_ORDER)
    return effort_rank, s.baseline, not s.own_strategy, s.mean_reasoning_tokens, s.strategy


def _summary(records: Sequence[Record]) -> Summary:
    first = records[0]
    answered = [r for r in records if r.error is None]
    latencies = sorted(r.latency_s for r in answered) or [0.0]
    return Summary(
        effort=first.effort,
        strategy=first.strategy,
        baseline=first.baseline,
        max_tokens=first.max_tokens,
        n=len(records),
        accuracy=sum(r.correct for r in records) / len(records),
        mean_reasoning_tokens=statistics.fmean(r.reasoning_tokens for r in answered) if answered else 0.0,
        p50_latency_s=_percentile(latencies, 0.50),
        p95_latency_s=_percentile(latencies, 0.95),
        errors=len(records) - len(answered),
        own_strategy=first.own_strategy,
    )


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default method)."""
    position = q * (len(sorted_values) - 1)
    lower = int(position)
    upper = min(lower + 1, len(sorted_values) - 1)
    return sorted_values[lower] + (sorted_values[upper] - sorted_values[lower]) * (position - lower)


def markdown_table(summaries: Sequence[Summary]) -> str:
    lines = [
        "| effort | strategy | token cap | n | accuracy | mean reasoning tokens | p50 latency | p95 latency "
        "| errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {s.effort} | {_label(s)} | {s.max_tokens or 'effort'} | {s.n} | {s.accuracy:.0%} | "
        f"{s.mean_reasoning_tokens:.0f} | {s.p50_latency_s:.1f} s | {s.p95_latency_s:.1f} s | {s.errors} |"
        for s in summaries
    ]
    return "\n".join(lines)


def _label(s: Summary) -> str:
    return f"{s.strategy} (baseline)" if s.baseline else s.strategy


def plot(summaries: Sequence[Summary], title: str, path: Path) -> None:
    """Accuracy against mean reasoning tokens: the efforts' own strategies as one line, each
    other strategy as a line across efforts, and best-of-N at equal budgets as a dashed curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for label, series in _series(summaries).items():
        tokens = [s.mean_reasoning_tokens for s in series]
        accuracy = [s.accuracy * 100 for s in series]
        if series[0].baseline:  # unlabelled: its points sit beside the points they match
            axes.plot(tokens, accuracy, label=label, linestyle="--", marker="s", color="grey")
            continue
        axes.plot(tokens, accuracy, label=label, marker="o")
        for s in series:
            note = f"{s.effort}: {s.strategy}" if s.own_strategy else s.effort
            point = (s.mean_reasoning_tokens, s.accuracy * 100)
            axes.annotate(note, point, xytext=(4, 4), textcoords="offset points", fontsize=8)
    axes.set_xlabel("mean reasoning tokens per problem")
    axes.set_ylabel("accuracy (%)")
    axes.set_ylim(-5, 105)
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _series(summaries: Sequence[Summary]) -> dict[str, list[Summary]]:
    """Rows grouped into plotted lines, each sorted by tokens."""
    series: dict[str, list[Summary]] = {}
    for s in sorted(summaries, key=lambda s: s.mean_reasoning_tokens):
        if s.baseline:
            label = f"{BASELINE_STRATEGY} at an equal token budget (baseline)"
        else:
            label = "each effort's own strategy" if s.own_strategy else s.strategy
        series.setdefault(label, []).append(s)
    return series


def write_report(out_dir: Path, title: str, records: Sequence[Record], summaries: Sequence[Summary]) -> str:
    """results.jsonl (one row per item and point), table.md and plot.png in `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.jsonl").write_text("".join(json.dumps(asdict(r)) + "\n" for r in records))
    table = markdown_table(summaries)
    (out_dir / "table.md").write_text(table + "\n")
    plot(summaries, title, out_dir / "plot.png")
    return table
