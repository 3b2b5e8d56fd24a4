"""Load: N concurrent mixed-effort requests against the cluster, as a product would send them.

    python -m bench.load --concurrency 4,8,16            # starts the default local cluster
    python -m bench.load --url http://127.0.0.1:8000 --concurrency 8

For each N, N requests go out at once through the official `openai` client (no retries: what
the cluster answers is what is counted), mixing efforts and tasks in a fixed, seeded order.
The report gives, per N: complete and incomplete answers, errors by status, the answers that
came later than their effort's deadline, p50/p95 latency per effort, and the reasoning tokens
the cluster generated per second of wall time.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, cast

import openai
from openai import AsyncOpenAI
from openai.types.shared import ReasoningEffort

import cluster.local  # noqa: F401  (keeps Ray on loopback; must precede ray imports)
from cluster.config import ClusterConfig, load_config
from cluster.evaluation import load_items
from cluster.local import LocalCluster

EFFORTS = ("low", "medium", "high")
# Answers later than the deadline by more than this are late (network and JSON included).
LATE_SLACK_S = 5.0


@dataclass(frozen=True, slots=True)
class Ask:
    effort: str
    task: str
    question: str


@dataclass(frozen=True, slots=True)
class Outcome:
    ask: Ask
    latency_s: float
    status: str  # complete | incomplete | HTTP status of the error
    reasoning_tokens: int


def mixed_requests(n: int, seed: int) -> list[Ask]:
    """`n` requests cycling through the efforts, a third each Game of 24, GSM8K and general."""
    rng = random.Random(seed)
    puzzles = [item.question for item in load_items("game24")]
    problems = [item.question for item in load_items("gsm8k")]
    asks = []
    for i in range(n):
        effort = EFFORTS[i % len(EFFORTS)]
        kind = (i // len(EFFORTS)) % 3
        if kind == 0:
            asks.append(Ask(effort, "game24", rng.choice(puzzles)))
        elif kind == 1:
            asks.append(Ask(effort, "math", rng.choice(problems)))
        else:
            asks.append(Ask(effort, "general", f"What is {rng.randint(11, 99)} * {rng.randint(11, 99)}?"))
    return asks


async def send(client: AsyncOpenAI, ask: Ask) -> Outcome:
    started = time.monotonic()
    try:
        response = await client.chat.completions.create(
            model="default",
            messages=[{"role": "user", "content": ask.question}],
            reasoning_effort=cast(ReasoningEffort, ask.effort),
            extra_body={"task": ask.task},
        )
    except openai.APIStatusError as error:
        return Outcome(ask, time.monotonic() - started, str(error.status_code), 0)
    except openai.APIError as error:
        return Outcome(ask, time.monotonic() - started, type(error).__name__, 0)
    reasoning: dict[str, Any] = (response.model_extra or {})["reasoning"]
    usage = response.usage
    tokens = (
        usage.completion_tokens_details.reasoning_tokens if usage and usage.completion_tokens_details else 0
    )
    return Outcome(ask, time.monotonic() - started, reasoning["status"], int(tokens or 0))


async def run(url: str, n: int, seed: int) -> tuple[list[Outcome], float]:
    client = AsyncOpenAI(base_url=f"{url}/v1", api_key="bench", max_retries=0, timeout=900)
    started = time.monotonic()
    try:
        outcomes = await asyncio.gather(*(send(client, ask) for ask in mixed_requests(n, seed)))
    finally:
        await client.close()
    return list(outcomes), time.monotonic() - started


def report(n: int, outcomes: list[Outcome], wall_s: float, config: ClusterConfig) -> str:
    statuses = Counter(o.status for o in outcomes)
    errors = {s: c for s, c in statuses.items() if s not in ("complete", "incomplete")}
    late = sum(
        1
        for o in outcomes
        if o.latency_s > config.budget_for(cast(Any, o.ask.effort)).deadline_s + LATE_SLACK_S
    )
    latency = []
    for effort in EFFORTS:
        times = sorted(o.latency_s for o in outcomes if o.ask.effort == effort)
        if times:
            p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
            latency.append(f"{effort} {statistics.median(times):.0f}/{p95:.0f} s")
    tokens_per_s = sum(o.reasoning_tokens for o in outcomes) / wall_s
    error_text = ", ".join(f"{count}x {status}" for status, count in sorted(errors.items())) or "0"
    return (
        f"| {n} | {statuses['complete']} | {statuses['incomplete']} | {error_text} | {late} | "
        f"{'; '.join(latency)} | {tokens_per_s:.0f} | {wall_s:.0f} s |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--concurrency", default="4,8,16", help="comma-separated request counts")
    parser.add_argument("--url", help="a running cluster (default: start the local one)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    config = load_config()
    header = (
        "| N | complete | incomplete | errors | late | latency p50/p95 per effort | "
        "reasoning tokens/s | wall |\n|---|---|---|---|---|---|---|---|"
    )
    levels = [int(n) for n in args.concurrency.split(",")]

    def measure(url: str) -> None:
        print(header)
        for n in levels:
            outcomes, wall_s = asyncio.run(run(url, n, args.seed))
            print(report(n, outcomes, wall_s, config), flush=True)

    if args.url:
        measure(args.url)
        return
    with LocalCluster(config) as local:
        measure(local.url)


if __name__ == "__main__":
    main()
