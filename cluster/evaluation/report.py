"""The evaluation's report: one summary row per point, the table, the control comparison and
the plot, written from the records measured (all of them, or what an interrupted run kept)."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cluster.evaluation.records import EFFORT_ORDER, Record, label_defaults, write_records

BASELINE_LABEL = "best_of_n at an equal token budget (baseline)"
CONTROL_LABEL = "model-free control"
CONTROL_HEADING = "Model-free control (uniformly random legal steps, the same search and budget):"


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
    control: bool = False
    # Share of items where the returned answer or an answered node of the tree is right
    # (None: no tree could be read), and the mean number of answered nodes (k).
    pass_at_k: float | None = None
    mean_candidates: float = 0.0
    # Of the items with a right candidate, the share whose returned answer was right.
    selection: float | None = None
    verified_share: float = 0.0
    incomplete_share: float = 0.0
    mean_proposals: float = 0.0

    @property
    def point(self) -> tuple[str, str, bool, int | None]:
        return self.effort, self.strategy, self.baseline, self.max_tokens


def summarize(records: Sequence[Record]) -> list[Summary]:
    """One row per (effort, strategy, baseline, cap, control), efforts in order, each point's
    control after it and each baseline after the points; failed requests count as wrong."""
    groups: dict[tuple[str, str, bool, int | None, bool], list[Record]] = {}
    for record in label_defaults(records):
        groups.setdefault(record.row, []).append(record)
    summaries = [_summary(group) for group in groups.values()]
    guided = {s.point: _row_order(s) for s in summaries if not s.control}
    return sorted(summaries, key=lambda s: (guided.get(s.point, _row_order(s)), s.control))


def _row_order(s: Summary) -> tuple[int, bool, bool, float, str]:
    effort_rank = EFFORT_ORDER.index(s.effort) if s.effort in EFFORT_ORDER else len(EFFORT_ORDER)
    return effort_rank, s.baseline, not s.own_strategy, s.mean_reasoning_tokens, s.strategy


def _summary(records: Sequence[Record]) -> Summary:
    first = records[0]
    answered = [r for r in records if r.error is None]
    latencies = sorted(r.latency_s for r in answered) or [0.0]
    known = [r for r in records if r.correct_candidate is not None]
    reachable = [r for r in known if r.correct_candidate]
    counted = [r.candidates for r in records if r.candidates is not None]
    return Summary(
        effort=first.effort,
        strategy=first.strategy,
        baseline=first.baseline,
        max_tokens=first.max_tokens,
        n=len(records),
        accuracy=_share(records, lambda r: r.correct),
        mean_reasoning_tokens=statistics.fmean(r.reasoning_tokens for r in answered) if answered else 0.0,
        p50_latency_s=_percentile(latencies, 0.50),
        p95_latency_s=_percentile(latencies, 0.95),
        errors=len(records) - len(answered),
        own_strategy=first.own_strategy,
        control=first.control,
        pass_at_k=_share(known, lambda r: bool(r.correct_candidate)) if known else None,
        mean_candidates=statistics.fmean(counted) if counted else 0.0,
        selection=_share(reachable, lambda r: r.correct) if reachable else None,
        verified_share=_share(records, lambda r: r.verified),
        incomplete_share=_share(records, lambda r: r.status == "incomplete"),
        mean_proposals=statistics.fmean(r.proposals for r in answered) if answered else 0.0,
    )


def _share(records: Sequence[Record], test: Callable[[Record], bool]) -> float:
    return sum(1 for r in records if test(r)) / len(records)


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default method)."""
    position = q * (len(sorted_values) - 1)
    lower = int(position)
    upper = min(lower + 1, len(sorted_values) - 1)
    return sorted_values[lower] + (sorted_values[upper] - sorted_values[lower]) * (position - lower)


def markdown_table(summaries: Sequence[Summary]) -> str:
    lines = [
        "| effort | strategy | token cap | n | accuracy | mean reasoning tokens | p50 latency | p95 latency "
        "| errors | pass@k | mean k | selection | verified | incomplete | mean proposals |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {s.effort} | {_label(s)} | {s.max_tokens or 'effort'} | {s.n} | {s.accuracy:.0%} | "
        f"{s.mean_reasoning_tokens:.0f} | {s.p50_latency_s:.1f} s | {s.p95_latency_s:.1f} s | {s.errors} | "
        f"{_percent(s.pass_at_k)} | {s.mean_candidates:.1f} | {_percent(s.selection)} | "
        f"{s.verified_share:.0%} | {s.incomplete_share:.0%} | {s.mean_proposals:.1f} |"
        for s in summaries
    ]
    return "\n".join(lines)


def control_table(summaries: Sequence[Summary]) -> str | None:
    """Each point beside its model-free control: what the model's guidance solved beyond
    uniformly random legal steps within the same budget. None without control rows."""
    controls = {s.point: s for s in summaries if s.control}
    pairs = [(s, controls[s.point]) for s in summaries if not s.control and s.point in controls]
    if not pairs:
        return None
    lines = [
        "| effort | strategy | token cap | n | guided accuracy | control accuracy | guided / control "
        "| guided proposals | control proposals |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {s.effort} | {_label(s)} | {s.max_tokens or 'effort'} | {s.n} | {s.accuracy:.0%} | "
        f"{c.accuracy:.0%} | {_ratio(s.accuracy, c.accuracy)} | {s.mean_proposals:.1f} | "
        f"{c.mean_proposals:.1f} |"
        for s, c in pairs
    ]
    return "\n".join(lines)


def _ratio(guided: float, control: float) -> str:
    if control > 0:
        return f"{guided / control:.1f}x"
    return "control solved none" if guided > 0 else "-"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _label(s: Summary) -> str:
    notes = [note for note, on in (("baseline", s.baseline), ("control", s.control)) if on]
    return f"{s.strategy} ({', '.join(notes)})" if notes else s.strategy


def plot(summaries: Sequence[Summary], title: str, path: Path) -> None:
    """Accuracy against mean reasoning tokens: the efforts' own strategies as one line, each
    other strategy as a line across efforts, best-of-N at equal budgets as a dashed grey curve,
    and each line's model-free control as a dotted line of the same colour."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    colours: dict[str, str] = {BASELINE_LABEL: "grey"}
    for (line, control), series in _series(summaries).items():
        colour = colours.setdefault(line, palette[(len(colours) - 1) % len(palette)])
        tokens = [s.mean_reasoning_tokens for s in series]
        accuracy = [s.accuracy * 100 for s in series]
        if control:  # unannotated: its points sit beside the points they control
            label = f"{CONTROL_LABEL}: {line}"
            axes.plot(tokens, accuracy, label=label, linestyle=":", marker="x", color=colour)
        elif line == BASELINE_LABEL:
            axes.plot(tokens, accuracy, label=line, linestyle="--", marker="s", color=colour)
        else:
            axes.plot(tokens, accuracy, label=line, marker="o", color=colour)
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


def _series(summaries: Sequence[Summary]) -> dict[tuple[str, bool], list[Summary]]:
    """Rows grouped into plotted lines (the line's name, whether it is the control), guided
    lines first, each sorted by tokens."""
    series: dict[tuple[str, bool], list[Summary]] = {}
    for s in sorted(summaries, key=lambda s: (s.control, s.mean_reasoning_tokens)):
        if s.baseline:
            line = BASELINE_LABEL
        else:
            line = "each effort's own strategy" if s.own_strategy else s.strategy
        series.setdefault((line, s.control), []).append(s)
    return series


def write_report(out_dir: Path, title: str, records: Sequence[Record], summaries: Sequence[Summary]) -> str:
    """results.jsonl (one row per item and point), table.md and plot.png in `out_dir`; the
    text of table.md."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_records(out_dir / "results.jsonl", label_defaults(records))
    table = markdown_table(summaries)
    controls = control_table(summaries)
    if controls is not None:
        table += f"\n\n{CONTROL_HEADING}\n\n{controls}"
    (out_dir / "table.md").write_text(table + "\n")
    plot(summaries, title, out_dir / "plot.png")
    return table
