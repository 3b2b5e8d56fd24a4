"""One evaluation from start to report: results kept as they come, a report at the end or on
Ctrl-C, and a rerun with `resume` that asks only what is missing."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cluster.client import ReasoningClient
from cluster.evaluation.control import ModelFreeControl
from cluster.evaluation.data import DatasetName, Item
from cluster.evaluation.grading import Grader
from cluster.evaluation.harness import evaluate
from cluster.evaluation.records import Record, ResultsLog, read_records
from cluster.evaluation.report import summarize, write_report

RESULTS = "results.jsonl"


@dataclass(frozen=True, slots=True)
class SessionOutcome:
    # The report's table (table.md); None when nothing was measured.
    table: str | None
    records: int
    interrupted: bool


def run_session(
    client: ReasoningClient,
    dataset: DatasetName,
    items: Sequence[Item],
    efforts: Sequence[str],
    strategies: Sequence[str] = (),
    *,
    out: Path,
    title: str,
    resume: bool = False,
    baseline: bool = True,
    concurrency: int = 1,
    grader: Grader | None = None,
    control: ModelFreeControl | None = None,
    progress: Callable[[Record], None] | None = None,
) -> SessionOutcome:
    """Evaluate into `out`: each graded request is appended to results.jsonl as it finishes;
    the report (table.md, plot.png) is written from results.jsonl at the end, or when a
    KeyboardInterrupt (Ctrl-C) stops the run early. With `resume`, the items results.jsonl
    already holds are not asked again."""
    log = ResultsLog(out / RESULTS, resume=resume)

    def keep(record: Record) -> None:
        log.append(record)
        if progress is not None:
            progress(record)

    interrupted = False
    try:
        evaluate(
            client,
            dataset,
            items,
            efforts,
            strategies,
            baseline=baseline,
            concurrency=concurrency,
            progress=keep,
            done=log.records,
            grader=grader,
            control=control,
        )
    except KeyboardInterrupt:
        interrupted = True
    # The file is the record of the run: what it holds is what was measured.
    records = read_records(out / RESULTS)
    table = write_report(out, title, records, summarize(records)) if records else None
    return SessionOutcome(table, len(records), interrupted)
