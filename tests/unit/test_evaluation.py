"""The evaluation harness's data loading, sampling, grading and reporting."""

from __future__ import annotations

from pathlib import Path

import pytest

from cluster.evaluation import Record, grade, load_items, markdown_table, sample, summarize, write_report

pytestmark = pytest.mark.unit


def test_shipped_datasets_load() -> None:
    gsm8k = load_items("gsm8k")
    game24 = load_items("game24")
    assert len(gsm8k) == 500 and gsm8k[0].reference == "72"
    assert len(game24) == 1262 and game24[0].question == "1 1 4 6"


def test_data_flag_reads_a_file_in_the_same_format(tmp_path: Path) -> None:
    path = tmp_path / "mine.jsonl"
    path.write_text('{"question": "1+1?", "answer": "1+1=2\\n#### 2"}\n')
    (item,) = load_items("gsm8k", path)
    assert (item.question, item.reference) == ("1+1?", "2")


def test_seeded_sample_is_stable_and_ordered() -> None:
    items = load_items("game24")
    first, again = sample(items, 50, seed=3), sample(items, 50, seed=3)
    assert first == again and len(first) == 50
    assert [i.index for i in first] == sorted(i.index for i in first)
    assert sample(items, 50, seed=4) != first


def test_grading() -> None:
    item = load_items("game24")[0]
    assert item.question == "1 1 4 6"
    assert grade("game24", item, "(1 + 1) * 4 * 6 / 2") is False
    assert grade("game24", item, "4 * 6 * 1 * 1")
    assert not grade("game24", item, "4 + 6 + 1 + 1")
    gsm = load_items("gsm8k")[0]
    assert grade("gsm8k", gsm, "$72") and not grade("gsm8k", gsm, "71")


def test_summary_table_and_plot(tmp_path: Path) -> None:
    records = [
        Record(0, "low", "single_chain", True, "72", 100, 1.0),
        Record(1, "low", "single_chain", False, "3", 300, 3.0),
        Record(2, "low", "", False, "", 0, 0.0, "APITimeoutError"),
    ]
    (summary,) = summarize(records)
    assert (summary.n, summary.errors, summary.mean_reasoning_tokens) == (3, 1, 200)
    assert summary.accuracy == pytest.approx(1 / 3)
    assert (summary.p50_latency_s, summary.p95_latency_s) == pytest.approx((2.0, 2.9))
    assert "| low | single_chain | 3 | 33% | 200 |" in markdown_table([summary])
    write_report(tmp_path, "gsm8k", records, [summary])
    assert (tmp_path / "gsm8k-accuracy.png").read_bytes().startswith(b"\x89PNG")
    assert len((tmp_path / "gsm8k-records.jsonl").read_text().splitlines()) == 3
