"""The evaluation harness: data loading, sampling, grading, the phases and baseline budgets,
aggregation per (effort, strategy), the table and the plot."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import cast

import pytest

from cluster.cli import main
from cluster.client import ReasoningAnswer, ReasoningClient
from cluster.evaluation import (
    Item,
    Point,
    Record,
    Summary,
    baseline_budget,
    baseline_points,
    evaluate,
    grade,
    load_items,
    markdown_table,
    run,
    sample,
    summarize,
    write_report,
)

pytestmark = pytest.mark.unit

OWN_STRATEGY = {"low": "single_chain", "medium": "self_consistency", "high": "best_of_n"}
TOKENS = {"single_chain": 101, "self_consistency": 400, "best_of_n": 900, "beam_search": 300}


class FakeCluster:
    """Answers like the cluster: the effort's own strategy unless one is named, tokens per
    strategy within the cap. Only beam_search solves puzzles; "1 1 4 6" fails at medium.
    Counts the requests in flight."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.requests: list[tuple[str, str | None, int | None]] = []
        self.delay_s = delay_s
        self.in_flight = self.max_in_flight = 0
        self._lock = threading.Lock()

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
        answer = f"{question.replace(' ', ' * ')} = 24" if used == "beam_search" else "1 + 1 + 4"
        return ReasoningAnswer(
            answer, "", f"tree-{len(self.requests)}", effort, used, 0, tokens, tokens, 0, 1, 2.0
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
