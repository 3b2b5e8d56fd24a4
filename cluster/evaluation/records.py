"""What the evaluation measures: the points it evaluates and one record per item and point."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from cluster.types import Effort

EFFORT_ORDER = tuple(e.value for e in Effort)
UNKNOWN_STRATEGY = "unknown"

PointKey = tuple[str, str | None, bool, int | None, bool]


@dataclass(frozen=True, slots=True)
class Point:
    """One configuration to evaluate every item at."""

    effort: str
    # None: the effort's own strategy, as the cluster's config maps it.
    strategy: str | None = None
    # `max_completion_tokens` of the requests: caps the effort's reasoning-token budget.
    max_tokens: int | None = None
    baseline: bool = False
    # The model-free control of this point (Game of 24) instead of the service.
    control: bool = False

    @property
    def key(self) -> PointKey:
        return self.effort, self.strategy, self.baseline, self.max_tokens, self.control


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
    control: bool = False
    # The response's `reasoning.status` (complete | incomplete) and why it stopped early;
    # "" when the request failed.
    status: str = ""
    incomplete_reason: str | None = None
    # A program proved the returned answer (`reasoning.verified`).
    verified: bool = False
    # Nodes the search grew: whole chains and steps, each one engine proposal.
    proposals: int = 0
    # Answered nodes of the tree, and whether the returned answer or any of them is right;
    # None when the tree could not be read.
    candidates: int | None = None
    correct_candidate: bool | None = None

    @property
    def row(self) -> tuple[str, str, bool, int | None, bool]:
        return self.effort, self.strategy, self.baseline, self.max_tokens, self.control

    @property
    def job(self) -> tuple[PointKey, int]:
        """The point and item this record measured (what `--resume` skips)."""
        strategy = None if self.own_strategy else self.strategy
        return (self.effort, strategy, self.baseline, self.max_tokens, self.control), self.index

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> Record:
        known = set(cls.__dataclass_fields__)
        return cls(**{name: value for name, value in row.items() if name in known})


def label_defaults(records: Sequence[Record]) -> list[Record]:
    """Failed requests at an effort's own strategy get that strategy's name from its answers."""
    own = {(r.effort, r.control): r.strategy for r in records if r.error is None and r.own_strategy}
    return [
        r if r.strategy else replace(r, strategy=own.get((r.effort, r.control), UNKNOWN_STRATEGY))
        for r in records
    ]


class ResultsLog:
    """results.jsonl: one line per graded record, appended as each finishes, so an
    interrupted run keeps what it measured; `resume` reads back what an earlier run wrote."""

    def __init__(self, path: Path, resume: bool = False) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.records: list[Record] = read_records(path) if resume and path.exists() else []
        # A line cut short by a killed run is dropped here, so that appends start on a new line.
        write_records(path, self.records)

    def append(self, record: Record) -> None:
        with self.path.open("a") as file:
            file.write(json.dumps(asdict(record)) + "\n")
        self.records.append(record)


def read_records(path: Path) -> list[Record]:
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    records = []
    for number, line in enumerate(lines, 1):
        try:
            records.append(Record.from_dict(json.loads(line)))
        except (ValueError, TypeError) as exc:
            if number == len(lines):
                break  # the last line of a run killed while it wrote it
            raise ValueError(f"{path}:{number} is not a result line: {exc}") from exc
    return records


def write_records(path: Path, records: Sequence[Record]) -> None:
    """All of `records`, replacing the file at once (a second Ctrl-C cannot leave half of it)."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text("".join(json.dumps(asdict(record)) + "\n" for record in records))
    os.replace(partial, path)
