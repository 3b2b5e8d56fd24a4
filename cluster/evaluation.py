"""Evaluation harness: run a dataset through a running cluster at several efforts and grade it.

Grading uses the same programmatic checks the verifiers use (exact rational answer
equality for GSM8K, the Game of 24 checker), applied to the answer the service returned.
"""

from __future__ import annotations

import csv
import json
import random
import statistics
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

from cluster.answers import answers_equivalent
from cluster.client import ReasoningClient
from cluster.verifiers.game24 import check_game24

DatasetName = Literal["gsm8k", "game24"]
SHIPPED = {"gsm8k": "gsm8k/train-500.jsonl", "game24": "game24/24-dev.csv"}
TASK_OF = {"gsm8k": "math", "game24": "game24"}


@dataclass(frozen=True, slots=True)
class Item:
    index: int
    question: str
    reference: str


@dataclass(frozen=True, slots=True)
class Record:
    index: int
    effort: str
    strategy: str
    correct: bool
    answer: str
    reasoning_tokens: int
    latency_s: float
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Summary:
    effort: str
    strategy: str
    n: int
    accuracy: float
    mean_reasoning_tokens: float
    p50_latency_s: float
    p95_latency_s: float
    errors: int


def load_items(dataset: DatasetName, path: str | Path | None = None) -> list[Item]:
    """The dataset's items from `path`, or from the copy the package ships."""
    source = Path(path) if path else Path(str(resources.files("cluster.datasets").joinpath(SHIPPED[dataset])))
    text = source.read_text()
    return list(_gsm8k(text) if dataset == "gsm8k" else _game24(text))


def _gsm8k(text: str) -> Iterator[Item]:
    for index, line in enumerate(row for row in text.splitlines() if row.strip()):
        row = json.loads(line)
        yield Item(index, row["question"], row["answer"].rsplit("####", 1)[-1].strip())


def _game24(text: str) -> Iterator[Item]:
    for index, row in enumerate(csv.DictReader(text.splitlines())):
        yield Item(index, row["Puzzles"].strip(), "24")


def sample(items: Sequence[Item], limit: int | None, seed: int) -> list[Item]:
    if limit is None or limit >= len(items):
        return list(items)
    return sorted(random.Random(seed).sample(list(items), limit), key=lambda item: item.index)


def grade(dataset: DatasetName, item: Item, answer: str) -> bool:
    if dataset == "gsm8k":
        return answers_equivalent(answer, item.reference)
    numbers = [int(n) for n in item.question.split()]
    return check_game24(answer, numbers).ok


def run(
    client: ReasoningClient,
    dataset: DatasetName,
    items: Sequence[Item],
    efforts: Sequence[str],
    concurrency: int = 2,
) -> list[Record]:
    jobs = [(item, effort) for effort in efforts for item in items]
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        return list(pool.map(lambda job: _ask(client, dataset, *job), jobs))


def _ask(client: ReasoningClient, dataset: DatasetName, item: Item, effort: str) -> Record:
    try:
        result = client.ask(item.question, effort, task=TASK_OF[dataset])
    except Exception as exc:  # one failed item is recorded as wrong, not the whole run lost
        return Record(item.index, effort, "", False, "", 0, 0.0, f"{type(exc).__name__}: {exc}"[:300])
    return Record(
        item.index,
        effort,
        result.strategy,
        grade(dataset, item, result.answer),
        result.answer,
        result.reasoning_tokens,
        result.elapsed_s,
    )


def summarize(records: Sequence[Record]) -> list[Summary]:
    """One row per effort; failed requests count as wrong answers in their effort's row."""
    groups: dict[str, list[Record]] = {}
    for record in records:
        groups.setdefault(record.effort, []).append(record)
    return [_summary(effort, group) for effort, group in groups.items()]


def _summary(effort: str, records: Sequence[Record]) -> Summary:
    answered = [r for r in records if r.error is None]
    latencies = sorted(r.latency_s for r in answered) or [0.0]
    strategies = sorted({r.strategy for r in answered})
    return Summary(
        effort=effort,
        strategy="+".join(strategies) or "none answered",
        n=len(records),
        accuracy=sum(r.correct for r in records) / len(records),
        mean_reasoning_tokens=statistics.fmean(r.reasoning_tokens for r in answered) if answered else 0.0,
        p50_latency_s=_percentile(latencies, 0.50),
        p95_latency_s=_percentile(latencies, 0.95),
        errors=len(records) - len(answered),
    )


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default method)."""
    position = q * (len(sorted_values) - 1)
    lower = int(position)
    upper = min(lower + 1, len(sorted_values) - 1)
    return sorted_values[lower] + (sorted_values[upper] - sorted_values[lower]) * (position - lower)


def markdown_table(summaries: Sequence[Summary]) -> str:
    lines = [
        "| effort | strategy | n | accuracy | mean reasoning tokens | p50 latency | p95 latency | errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {s.effort} | {s.strategy} | {s.n} | {s.accuracy:.0%} | {s.mean_reasoning_tokens:.0f} | "
        f"{s.p50_latency_s:.1f} s | {s.p95_latency_s:.1f} s | {s.errors} |"
        for s in summaries
    ]
    return "\n".join(lines)


def plot(summaries: Sequence[Summary], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4))
    points = sorted(summaries, key=lambda s: s.mean_reasoning_tokens)
    axes.plot([s.mean_reasoning_tokens for s in points], [s.accuracy * 100 for s in points], marker="o")
    for s in points:
        axes.annotate(
            f"{s.effort} ({s.strategy})",
            (s.mean_reasoning_tokens, s.accuracy * 100),
            textcoords="offset points",
            xytext=(4, 4),
            fontsize=8,
        )
    axes.set_xlabel("mean reasoning tokens per problem")
    axes.set_ylabel("accuracy (%)")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_report(
    out_dir: Path, dataset: DatasetName, records: Sequence[Record], summaries: Sequence[Summary]
) -> str:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{dataset}-records.jsonl").write_text("".join(json.dumps(asdict(r)) + "\n" for r in records))
    table = markdown_table(summaries)
    (out_dir / f"{dataset}-summary.md").write_text(table + "\n")
    plot(summaries, f"{dataset}: accuracy vs reasoning tokens", out_dir / f"{dataset}-accuracy.png")
    return table
