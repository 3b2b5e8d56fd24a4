"""The evaluation harness: data loading, sampling, grading, the phases and baseline budgets,
aggregation per (effort, strategy), the table and the plot."""

from __future__ import annotations

import _thread
import json
import threading
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, cast

import pytest

from cluster.cli import main
from cluster.client import ReasoningAnswer, ReasoningClient
from cluster.evaluation import (
    DEFAULT_SPLIT,
    Item,
    Point,
    Record,
    ResultsLog,
    SessionOutcome,
    Summary,
    baseline_budget,
    baseline_points,
    control_table,
    evaluate,
    grade,
    load_items,
    markdown_table,
    run,
    run_session,
    sample,
    split,
    summarize,
    write_report,
)

pytestmark = pytest.mark.unit

OWN_STRATEGY = {"low": "single_chain", "medium": "self_consistency", "high": "best_of_n"}
TOKENS = {"single_chain": 101, "self_consistency": 400, "best_of_n": 900, "beam_search": 300}


class FakeCluster:
    """Answers like the cluster: the effort's own strategy unless one is named, tokens per
    strategy within the cap. Only beam_search answers puzzles right (a program verifies
    them); best_of_n grows a right answer among its chains but returns a wrong one;
    self_consistency stops at its deadline; "1 1 4 6" fails at medium. Counts the requests
    in flight; serves the trees of its answers."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.requests: list[tuple[str, str | None, int | None]] = []
        self.delay_s = delay_s
        self.in_flight = self.max_in_flight = 0
        self.trees: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def tree(self, tree_id: str) -> dict[str, Any]:
        return self.trees[tree_id]

    def ask(
        self,
        question: str,
        effort: str = "medium",
        *,
        task: str = "general",
        max_completion_tokens: int | None = None,
        strategy: str | None = None,
    ) -> ReasoningAnswer:
        assert task == "game24"
        with self._lock:
            self.requests.append((effort, strategy, max_completion_tokens))
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        time.sleep(self.delay_s)
        with self._lock:
            self.in_flight -= 1
        if effort == "medium" and question == "1 1 4 6":
            raise TimeoutError("deadline")
        used = strategy or OWN_STRATEGY[effort]
        tokens = min(TOKENS[used], max_completion_tokens or TOKENS[used])
        right = f"{question.replace(' ', ' * ')} = 24"
        answer = right if used == "beam_search" else "1 + 1 + 4"
        candidates = [answer, right] if used == "best_of_n" else [answer]
        with self._lock:
            tree_id = f"tree-{len(self.trees)}"
            # The root, an unfinished step, and the answered nodes.
            nodes = [{"answer": None}, {"answer": None}] + [{"answer": a} for a in candidates]
            self.trees[tree_id] = {"nodes": nodes}
        status = "incomplete" if used == "self_consistency" else "complete"
        return ReasoningAnswer(
            answer,
            "",
            tree_id,
            effort,
            used,
            0,
            tokens,
            tokens,
            0,
            len(nodes) - 1,
            2.0,
            status=status,
            incomplete_reason="deadline" if status == "incomplete" else None,
            verified=used == "beam_search",
        )


def _client(fake: FakeCluster) -> ReasoningClient:
    return cast(ReasoningClient, fake)


# Both are solved by multiplying the four numbers, as the fake's beam_search answers.
PUZZLES = [Item(1, "1 1 4 6", "24"), Item(7, "1 2 3 4", "24")]


def test_shipped_datasets_load() -> None:
    gsm8k = load_items("gsm8k")
    game24 = load_items("game24")
    assert len(gsm8k) == 500 and gsm8k[0].reference == "72"
    assert len(game24) == 1262 and game24[0].question == "1 1 4 6"


def test_game24_items_are_ranked_and_the_held_out_block_is_not_shipped() -> None:
    ranks = [item.index for item in load_items("game24")]
    assert ranks[:3] == [1, 2, 3] and ranks[-1] == 1362
    assert not set(ranks) & set(range(901, 1001))


def test_data_flag_reads_a_file_in_the_same_format(tmp_path: Path) -> None:
    path = tmp_path / "mine.jsonl"
    path.write_text('{"question": "1+1?", "answer": "1+1=2\\n#### 2"}\n')
    (item,) = load_items("gsm8k", path)
    assert (item.question, item.reference) == ("1+1?", "2")
    puzzles = tmp_path / "24.csv"
    puzzles.write_text(
        "Rank,Puzzles,AMT (s),Solved rate,1-sigma Mean (s),1-sigma STD (s)\n950,1 2 3 4,5,99%,5,1\n"
    )
    assert load_items("game24", puzzles) == [Item(950, "1 2 3 4", "24")]


def test_seeded_sample_is_stable_and_ordered() -> None:
    items = load_items("game24")
    first, again = sample(items, 50, seed=3), sample(items, 50, seed=3)
    assert first == again and len(first) == 50
    assert [i.index for i in first] == sorted(i.index for i in first)
    assert sample(items, 50, seed=4) != first


def test_grading_reads_the_answers_last_expression() -> None:
    item = load_items("game24")[0]
    assert item.question == "1 1 4 6"
    assert grade("game24", item, "4 * 6 * 1 * 1")
    assert grade("game24", item, "Try 4 + 6 first. Answer: (1 * 1) * 4 * 6 = 24")
    assert not grade("game24", item, "(1 + 1) * 4 * 6 / 2")
    assert not grade("game24", item, "4 * 6 * 1 * 1 is wrong, use 4 + 6 + 1 + 1")
    assert not grade("game24", item, "no idea")
    gsm = load_items("gsm8k")[0]
    assert grade("gsm8k", gsm, "$72") and not grade("gsm8k", gsm, "71")


def _summary(
    strategy: str, tokens: float, *, effort: str = "low", errors: int = 0, baseline: bool = False
) -> Summary:
    return Summary(effort, strategy, baseline, None, 4, 0.5, tokens, 1.0, 2.0, errors)


def test_baseline_budget_rounds_up_and_is_at_least_the_minimum() -> None:
    assert baseline_budget(_summary("beam_search", 180.2)) == 181
    assert baseline_budget(_summary("beam_search", 180.0)) == 180
    assert baseline_budget(_summary("single_chain", 3.0)) == 16


def test_baseline_points_skip_best_of_n_baselines_and_unanswered_rows() -> None:
    summaries = [
        _summary("single_chain", 100.5),
        _summary("beam_search", 100.1),  # same effort and budget: one baseline serves both
        _summary("self_consistency", 700.0, effort="medium"),
        _summary("best_of_n", 900.0, effort="high"),
        _summary("mcts", 0.0, effort="high", errors=4),
        _summary("best_of_n", 101.0, baseline=True),
    ]
    assert baseline_points(summaries) == [
        Point("low", "best_of_n", 101, baseline=True),
        Point("medium", "best_of_n", 700, baseline=True),
    ]


def test_summary_rows_per_effort_strategy_and_baseline() -> None:
    records = [
        Record(0, "high", "best_of_n", False, None, "t1", True, "72", 900, 9.0),
        Record(0, "low", "single_chain", False, None, "t2", True, "72", 100, 1.0),
        Record(1, "low", "single_chain", False, None, "t3", False, "3", 300, 3.0),
        Record(2, "low", "single_chain", False, None, "", False, "", 0, 0.0, "APITimeoutError"),
        Record(0, "low", "best_of_n", True, 200, "t4", True, "72", 150, 2.0),
        Record(0, "low", "beam_search", False, None, "t5", True, "72", 120, 2.0),
    ]
    summaries = summarize(records)
    rows = [(s.effort, s.strategy, s.baseline) for s in summaries]
    assert rows == [
        ("low", "beam_search", False),
        ("low", "single_chain", False),
        ("low", "best_of_n", True),
        ("high", "best_of_n", False),
    ]
    chain = summaries[1]
    assert (chain.n, chain.errors, chain.mean_reasoning_tokens, chain.max_tokens) == (3, 1, 200, None)
    assert chain.accuracy == pytest.approx(1 / 3)
    assert (chain.p50_latency_s, chain.p95_latency_s) == pytest.approx((2.0, 2.9))
    table = markdown_table(summaries)
    assert "| low | single_chain | effort | 3 | 33% | 200 | 2.0 s | 2.9 s | 1 |" in table
    assert "| low | best_of_n (baseline) | 200 | 1 | 100% | 150 |" in table


def test_evaluate_runs_own_strategies_then_others_then_equal_budget_baselines() -> None:
    fake = FakeCluster()
    records = evaluate(
        _client(fake), "game24", PUZZLES, ["low", "medium", "high"], ["beam_search", "best_of_n"]
    )
    requests = fake.requests
    # Own strategies first, then the others at each effort, best_of_n only where it is not its own.
    assert requests[:6] == [(e, None, None) for e in ("low", "medium", "high") for _ in PUZZLES]
    others = [("low", "beam_search"), ("low", "best_of_n"), ("medium", "beam_search")]
    others += [("medium", "best_of_n"), ("high", "beam_search")]
    assert requests[6:16] == [(e, s, None) for e, s in others for _ in PUZZLES]
    # Baselines: medium's own strategy answered once (400 tokens), so its budget is 400.
    assert sorted(set(requests[16:])) == [
        ("high", "best_of_n", 300),
        ("low", "best_of_n", 101),
        ("low", "best_of_n", 300),
        ("medium", "best_of_n", 300),
        ("medium", "best_of_n", 400),
    ]
    # The failed medium request is labelled with the effort's own strategy and counts as wrong.
    (failed,) = [r for r in records if r.error is not None and r.strategy == "self_consistency"]
    assert (failed.index, failed.correct, failed.tree_id) == (1, False, "")
    rows = {(s.effort, s.strategy, s.baseline, s.max_tokens): s for s in summarize(records)}
    assert rows["low", "beam_search", False, None].accuracy == 1.0
    assert [r for r, s in rows.items() if s.own_strategy] == [
        ("low", "single_chain", False, None),
        ("medium", "self_consistency", False, None),
        ("high", "best_of_n", False, None),
    ]
    assert rows["medium", "self_consistency", False, None].errors == 1
    for (_effort, _strategy, is_baseline, cap), row in rows.items():
        assert not is_baseline or row.mean_reasoning_tokens <= cap


def test_no_baseline_and_concurrency_bound() -> None:
    fake = FakeCluster(delay_s=0.05)
    items = [Item(i, "1 2 3 4", "24") for i in range(9)]
    records = evaluate(_client(fake), "game24", items, ["low"], baseline=False, concurrency=3)
    assert [r.index for r in records] == list(range(9))
    assert len(fake.requests) == 9 and fake.max_in_flight == 3


def test_progress_sees_every_record() -> None:
    seen: list[Record] = []
    records = run(_client(FakeCluster()), "game24", PUZZLES, [Point("low")], progress=seen.append)
    assert seen == records


def test_report_files(tmp_path: Path) -> None:
    records = evaluate(_client(FakeCluster()), "game24", PUZZLES, ["low", "high"], ["beam_search"])
    table = write_report(tmp_path, "game24", records, summarize(records))
    assert (tmp_path / "table.md").read_text() == table + "\n"
    assert (tmp_path / "plot.png").read_bytes().startswith(b"\x89PNG")
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert len(rows) == len(records)
    assert {"index", "effort", "strategy", "baseline", "max_tokens", "tree_id", "answer", "correct"} <= set(
        rows[0]
    )
    assert {"reasoning_tokens", "latency_s", "error"} <= set(rows[0])


def test_cli_refuses_unknown_efforts_and_strategies(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "--dataset", "game24", "--efforts", "low,huge", "--strategies", "magic"]) == 2
    assert "unknown effort 'huge'; unknown strategy 'magic'" in capsys.readouterr().err


def test_pass_at_k_selection_verified_and_incomplete_shares_per_point() -> None:
    fake = FakeCluster()
    records = evaluate(
        _client(fake), "game24", PUZZLES, ["low", "medium"], ["beam_search", "best_of_n"], baseline=False
    )
    rows = {(s.effort, s.strategy): s for s in summarize(records)}
    # best_of_n grew the right answer among two but returned the wrong one.
    sampled = rows["low", "best_of_n"]
    assert (sampled.accuracy, sampled.pass_at_k, sampled.selection) == (0.0, 1.0, 0.0)
    assert (sampled.mean_candidates, sampled.mean_proposals) == (2.0, 3.0)
    beam = rows["low", "beam_search"]
    assert (beam.accuracy, beam.pass_at_k, beam.selection, beam.verified_share) == (1.0, 1.0, 1.0, 1.0)
    chain = rows["low", "single_chain"]
    assert (chain.pass_at_k, chain.selection, chain.verified_share) == (0.0, None, 0.0)
    # At medium one request failed (no tree: no right candidate) and one stopped at its deadline.
    voted = rows["medium", "self_consistency"]
    assert (voted.errors, voted.incomplete_share, voted.pass_at_k) == (1, 0.5, 0.0)
    table = markdown_table(summarize(records))
    assert (
        "| low | best_of_n | effort | 2 | 0% | 900 | 2.0 s | 2.0 s | 0 | 100% | 2.0 | 0% | 0% | 0% | 3.0 |"
        in table
    )
    assert (
        "| low | beam_search | effort | 2 | 100% | 300 | 2.0 s | 2.0 s | 0 | 100% | 1.0 | 100% | 100% |"
        in table
    )
    row = next(r for r in records if r.strategy == "best_of_n")
    assert (row.status, row.verified, row.candidates, row.correct_candidate, row.proposals) == (
        "complete",
        False,
        2,
        True,
        3,
    )


def test_an_unreadable_tree_leaves_pass_at_k_unknown() -> None:
    class Forgetful(FakeCluster):
        def tree(self, tree_id: str) -> dict[str, Any]:
            raise KeyError(tree_id)

    records = evaluate(_client(Forgetful()), "game24", PUZZLES, ["low"], baseline=False)
    assert {(r.candidates, r.correct_candidate) for r in records} == {(None, None)}
    (row,) = summarize(records)
    assert (row.pass_at_k, row.selection, row.accuracy) == (None, None, 0.0)
    assert "| - | 0.0 | - |" in markdown_table([row])


def test_control_rows_follow_their_points_and_are_compared_with_them() -> None:
    guided = Record(1, "medium", "beam_search", False, None, "t1", True, "x", 900, 60.0, proposals=90)
    missed = replace(guided, index=2, correct=False)
    control = replace(guided, control=True, tree_id="c1", latency_s=0.5, proposals=95)
    failed = replace(control, index=2, correct=False)
    low = Record(1, "low", "single_chain", False, None, "t2", False, "y", 50, 1.0, own_strategy=True)
    summaries = summarize([control, failed, guided, missed, low, replace(low, control=True)])
    assert [(s.effort, s.control) for s in summaries] == [
        ("low", False),
        ("low", True),
        ("medium", False),
        ("medium", True),
    ]
    assert markdown_table(summaries).count("(control)") == 2
    table = control_table(summaries)
    assert table is not None
    assert "| medium | beam_search | effort | 2 | 50% | 50% | 1.0x | 90.0 | 95.0 |" in table
    assert "| low | single_chain | effort | 1 | 0% | 0% | - |" in table
    assert control_table([s for s in summaries if not s.control]) is None


def test_humaneval_loads_from_the_package_with_hidden_tests_and_splits_by_parity() -> None:
    items = load_items("humaneval")
    assert [item.index for item in items] == list(range(164))
    first = items[0]
    assert first.question.startswith("from typing import List") and ">>> has_close_elements" in first.question
    assert first.hidden is not None and first.hidden.entry_point == "has_close_elements"
    assert "def check(candidate)" in first.hidden.test and first.hidden.test not in first.question
    report, dev = split(items, "report"), split(items, "dev")
    assert len(report) == len(dev) == 82
    assert all(i.index % 2 == 1 for i in report) and all(i.index % 2 == 0 for i in dev)
    assert DEFAULT_SPLIT["humaneval"] == "report" and split(items, None) == items


def test_humaneval_data_flag_reads_the_same_format(tmp_path: Path) -> None:
    path = tmp_path / "mine.jsonl"
    row = {"task_id": "HumanEval/7", "prompt": "def f():\n", "canonical_solution": "    return 1\n"}
    path.write_text(json.dumps(row | {"test": "def check(c):\n    assert c() == 1\n", "entry_point": "f"}))
    (item,) = load_items("humaneval", path)
    assert (item.index, item.question, item.hidden and item.hidden.entry_point) == (7, "def f():\n", "f")
    path.write_text(json.dumps(row | {"task_id": "Mine/7", "test": "", "entry_point": "f"}))
    with pytest.raises(ValueError, match="HumanEval/7"):
        load_items("humaneval", path)


class InterruptingCluster(FakeCluster):
    """Presses Ctrl-C (a KeyboardInterrupt in the main thread) once it has answered `after`."""

    def __init__(self, after: int) -> None:
        super().__init__()
        self.after = after

    def ask(self, question: str, effort: str = "medium", **kwargs: Any) -> ReasoningAnswer:
        answer = super().ask(question, effort, **kwargs)
        if len(self.requests) == self.after:
            _thread.interrupt_main()
        return answer


def test_an_interrupted_run_keeps_its_results_and_resume_asks_only_the_rest(tmp_path: Path) -> None:
    items = [Item(i, "1 2 3 4", "24") for i in range(5)]
    # Own strategies at low and high, and best-of-N at low's budget: 15 requests in all.
    total = 15

    def session(client: FakeCluster, resume: bool) -> SessionOutcome:
        return run_session(
            _client(client), "game24", items, ["low", "high"], out=tmp_path, title="t", resume=resume
        )

    first = session(InterruptingCluster(after=4), resume=False)
    assert first.interrupted and 0 < first.records < total
    # The report is written from what the interrupted run measured.
    assert (tmp_path / "plot.png").exists() and first.table == (tmp_path / "table.md").read_text().strip()
    kept = (tmp_path / "results.jsonl").read_text().splitlines()
    assert len(kept) == first.records

    again = FakeCluster()
    second = session(again, resume=True)
    assert not second.interrupted and second.records == total
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    jobs = [(r["effort"], r["strategy"], r["baseline"], r["max_tokens"], r["index"]) for r in rows]
    assert len(jobs) == len(set(jobs)) == total
    assert rows[: len(kept)] == [json.loads(line) for line in kept]
    assert len(again.requests) == total - first.records

    # Without --resume a run starts afresh.
    assert session(FakeCluster(), resume=False).records == total


def test_a_line_cut_short_by_a_killed_run_is_dropped_on_resume(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    record = Record(0, "low", "single_chain", False, None, "t", True, "24", 10, 1.0, own_strategy=True)
    path.write_text(json.dumps(asdict(record)) + "\n" + '{"index": 1, "eff')
    log = ResultsLog(path, resume=True)
    assert log.records == [record]
    log.append(replace(record, index=1))
    assert [json.loads(line)["index"] for line in path.read_text().splitlines()] == [0, 1]


def test_cli_refuses_a_split_outside_humaneval(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "--dataset", "game24", "--split", "dev"]) == 2
    assert "--split applies to humaneval only" in capsys.readouterr().err
