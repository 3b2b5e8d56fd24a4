"""Cost of one expansion as a search tree grows: planner time and Redis round trips.

    python -m bench.tree_growth --nodes 5000 --strategy mcts

Grows one tree with the real search controller, the real Redis store and ledger and the real
verifiers, on a scripted engine that answers at once (so what is timed is the planner, not a
model): every engine call is one expansion, and the engine records the time and the Redis
server's own command count (`INFO stats`) at each call. The report gives, for windows of
expansions starting at 100, 1,000 and 5,000 nodes, the mean time and the Redis round trips
per expansion, counted by the same client instrumentation the deployments run with
(`monitoring.metrics.instrumented_redis`: one observation per command or pipeline sent).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass, field

from cluster.config import ClusterConfig, RedisConfig, load_config
from cluster.search.context import SearchServices
from cluster.search.controller import SearchController
from cluster.store import TOKENS, VERIFIER_CALLS, BudgetLedger, EmbeddedRedis, KeySpace, TreeMeta, TreeStore
from cluster.types import (
    ChatMessage,
    Completion,
    Effort,
    GenerationRequest,
    GenerationResult,
    Problem,
    SolveRequest,
)
from cluster.verifiers import build_verifier
from cluster.verifiers.service import VerificationService
from monitoring.metrics import RedisMetrics, instrumented_redis

CHECKPOINTS = (100, 1000, 5000)
WINDOW = 40
TREE_ID = "growth"


class RoundTrips(RedisMetrics):
    """Counts what the production Redis instrumentation observes: one call per round trip."""

    def __init__(self) -> None:
        super().__init__("bench")
        self.count = 0

    def observe(self, operation: str, started: float, error: BaseException | None) -> None:
        self.count += 1


@dataclass(frozen=True, slots=True)
class Sample:
    nodes: int
    at_s: float
    round_trips: int


@dataclass
class GrowthEngine:
    """Proposes `n` distinct one-token steps per call, each ended by the step delimiter."""

    trips: RoundTrips
    stop_at: int
    samples: list[Sample] = field(default_factory=list)
    nodes: int = 1
    counter: int = 0

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        self.samples.append(Sample(self.nodes, time.perf_counter(), self.trips.count))
        if self.nodes >= self.stop_at:
            return GenerationResult((), 0, 0, replica="scripted")
        completions = []
        for _ in range(request.n):
            self.counter += 1
            completions.append(Completion(f"s{self.counter}", 1, "stop", -0.5, stop_reason="\n\n"))
        self.nodes += len(completions)
        return GenerationResult(tuple(completions), prompt_tokens=20, cached_tokens=0, replica="scripted")


def growth_config(strategy: str, nodes: int) -> ClusterConfig:
    budget = {
        "strategy": strategy,
        "max_branches": 4,
        "beam_width": 2,
        "max_depth": 64,
        "max_tokens_per_step": 4,
        "max_tokens_per_branch": 8,
        "max_reasoning_tokens": 10 * nodes,
        "max_verifier_calls": 10 * nodes,
        "deadline_s": 3600,
        "temperature": 0.8,
        "verifiers": ["arithmetic"],
    }
    return load_config().with_overrides({"efforts": {"high": budget}})


async def grow(redis_url: str, strategy: str, nodes: int) -> list[Sample]:
    trips = RoundTrips()
    redis = instrumented_redis(RedisConfig(url=redis_url), trips)
    keys = KeySpace("bench")
    store, ledger = TreeStore(redis, keys), BudgetLedger(redis, keys)
    engine = GrowthEngine(trips, stop_at=nodes)
    verifier = VerificationService({"arithmetic": build_verifier("arithmetic")})
    config = growth_config(strategy, nodes)
    controller = SearchController(config, SearchServices(store, ledger, engine, verifier))
    budget = config.budget_for(Effort.HIGH)
    await store.create_tree(TreeMeta(TREE_ID, "bench", "high", strategy, created_at=time.time()), 3600)
    await ledger.grant(
        TREE_ID, {TOKENS: budget.max_reasoning_tokens, VERIFIER_CALLS: budget.max_verifier_calls}
    )
    problem = Problem((ChatMessage("user", "Grow."),))
    request = SolveRequest(TREE_ID, "bench", Effort.HIGH, problem, "PROMPT", budget.max_reasoning_tokens)
    try:
        await controller.solve(request)
    finally:
        await redis.aclose()
    return engine.samples


def report(samples: list[Sample]) -> list[str]:
    rows = [
        "| tree size | expansions | ms per expansion | Redis round trips per expansion |",
        "|---|---|---|---|",
    ]
    for size in CHECKPOINTS:
        start = next((i for i, s in enumerate(samples) if s.nodes >= size), None)
        if start is None or start + WINDOW >= len(samples):
            rows.append(f"| {size} | - | not reached | - |")
            continue
        first, last = samples[start], samples[start + WINDOW]
        per_ms = (last.at_s - first.at_s) * 1000 / WINDOW
        per_commands = (last.round_trips - first.round_trips) / WINDOW
        rows.append(f"| {size} | {WINDOW} | {per_ms:.2f} | {per_commands:.1f} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=5000 + 4 * WINDOW + 8)
    parser.add_argument("--strategy", default="mcts", choices=("mcts", "beam_search", "dvts"))
    args = parser.parse_args()
    with EmbeddedRedis() as server:
        started = time.perf_counter()
        samples = asyncio.run(grow(server.url, args.strategy, args.nodes))
        took = time.perf_counter() - started
    print(f"{args.strategy}: {samples[-1].nodes} nodes, {len(samples)} expansions in {took:.1f} s")
    print("\n".join(report(samples)))


if __name__ == "__main__":
    main()
