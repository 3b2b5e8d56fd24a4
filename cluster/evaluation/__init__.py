"""The evaluation harness (`reasoning-cluster eval`): datasets, grading, the model-free
control, the phases of an evaluation, and its report (README, "Evaluation")."""

from cluster.evaluation.control import ModelFreeControl, RandomProposer
from cluster.evaluation.data import (
    DATASETS,
    DEFAULT_LIMIT,
    DEFAULT_SPLIT,
    SPLITS,
    TASK_OF,
    DatasetName,
    Item,
    Split,
    load_items,
    sample,
    split,
)
from cluster.evaluation.grading import Grader, grade
from cluster.evaluation.harness import (
    BASELINE_STRATEGY,
    ControlMismatch,
    baseline_budget,
    baseline_points,
    evaluate,
    run,
)
from cluster.evaluation.records import EFFORT_ORDER, Point, Record, ResultsLog, label_defaults
from cluster.evaluation.report import Summary, control_table, markdown_table, plot, summarize, write_report
from cluster.evaluation.session import SessionOutcome, run_session

__all__ = [
    "BASELINE_STRATEGY",
    "DATASETS",
    "DEFAULT_LIMIT",
    "DEFAULT_SPLIT",
    "EFFORT_ORDER",
    "SPLITS",
    "TASK_OF",
    "ControlMismatch",
    "DatasetName",
    "Grader",
    "Item",
    "ModelFreeControl",
    "Point",
    "RandomProposer",
    "Record",
    "ResultsLog",
    "SessionOutcome",
    "Split",
    "Summary",
    "baseline_budget",
    "baseline_points",
    "control_table",
    "evaluate",
    "grade",
    "label_defaults",
    "load_items",
    "markdown_table",
    "plot",
    "run",
    "run_session",
    "sample",
    "split",
    "summarize",
    "write_report",
]
