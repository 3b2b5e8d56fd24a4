"""Tree-search throughput: one medium Game of 24 request through the whole service, against the
raw engine proposing the same steps.

    python -m bench.tree_search --model smollm2-135m-instruct --puzzles "4 5 6 10,1 2 4 7"

For each puzzle: the wall time of one `medium` request on the local cluster (alone), the
proposals (step nodes) it grew and their reasoning tokens. Then, with the cluster stopped, the
raw vLLM engine answers the very same step prompts (each proposal's prompt is the puzzle's
prompt plus its path, under the same grammar the search used), all at once as one batch: the
ceiling of proposals per second on this machine. The ratio is the search's orchestration cost:
engine calls one after another, verification, Redis, Serve.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import dataclass

import httpx

import cluster.local  # noqa: F401  (keeps Ray on loopback; must precede ray imports)
from cluster.config import ClusterConfig, load_config
from cluster.engine.vllm_engine import VLLMEngine
from cluster.local import LocalCluster
from cluster.models import resolve_model_dir
from cluster.prompts import PromptBuilder
from cluster.tasks import get_task, pose
from cluster.types import ChatMessage, GenerationRequest

SEED = 7


@dataclass(frozen=True, slots=True)
class Measured:
    puzzle: str
    wall_s: float
    proposals: int
    tokens: int
    answer: str
    status: str
    # (path of steps before the proposal, the proposal's text as the model wrote it)
    steps: list[tuple[list[str], str]]


def solve_once(url: str, puzzle: str) -> Measured:
    body = {
        "model": "default",
        "messages": [{"role": "user", "content": puzzle}],
        "reasoning_effort": "medium",
        "task": "game24",
        "seed": SEED,
    }
    started = time.perf_counter()
    response = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=900)
    wall_s = time.perf_counter() - started
    response.raise_for_status()
    reasoning = response.json()["reasoning"]
    tree = httpx.get(f"{url}/v1/trees/{reasoning['tree_id']}", timeout=60).json()
    nodes = {node["node_id"]: node for node in tree["nodes"]}
    steps = []
    for node in tree["nodes"]:
        if node["parent_id"] is None:
            continue
        path, parent = [], nodes[node["parent_id"]]
        while parent["parent_id"] is not None:
            path.append(parent["text"])
            parent = nodes[parent["parent_id"]]
        steps.append((path[::-1], node["text"].split(" (left:")[0]))
    tokens = sum(node["completion_tokens"] for node in tree["nodes"])
    answer = response.json()["choices"][0]["message"]["content"]
    return Measured(puzzle, wall_s, len(steps), tokens, answer, reasoning["status"], steps)


async def raw_engine(config: ClusterConfig, measured: list[Measured]) -> tuple[float, int]:
    """Every proposal of every request, asked of the engine at once; (seconds, tokens)."""
    engine = VLLMEngine.start(config.model, resolve_model_dir(config.model))
    try:
        prompts = PromptBuilder(engine.tokenizer)
        task = get_task("game24")
        requests = []
        for run in measured:
            problem = pose((ChatMessage("user", run.puzzle),), "game24")
            steps = task.step_format(problem, config.task_settings("game24"))
            base = prompts.render(problem)
            for path, _ in run.steps:
                shape = steps.request(path, final=False)
                if shape is None:
                    continue
                requests.append(
                    GenerationRequest(
                        prompt=steps.prompt(base, path),
                        n=1,
                        max_tokens=shape.max_tokens or 16,
                        temperature=0.0,
                        regex=shape.regex,
                    )
                )
        await engine.generate(requests[0])  # warm-up, as the cluster's engine was warm
        started = time.perf_counter()
        results = await asyncio.gather(*(engine.generate(r) for r in requests))
        took = time.perf_counter() - started
        return took, sum(c.token_count for r in results for c in r.completions)
    finally:
        engine.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", help="a named model (default: the config's)")
    parser.add_argument("--puzzles", default="4 5 6 10,1 2 4 7,2 5 8 11,3 4 4 13")
    args = parser.parse_args()
    config = load_config()
    if args.model:
        config = config.with_overrides({"model": {"name": args.model, "path": None}})
    puzzles = [p.strip() for p in args.puzzles.split(",")]
    with LocalCluster(config) as local:
        solve_once(local.url, puzzles[0])  # warm-up: first calls compile and fill caches
        measured = [solve_once(local.url, puzzle) for puzzle in puzzles]
    raw_s, raw_tokens = asyncio.run(raw_engine(config, measured))
    proposals = sum(m.proposals for m in measured)
    search_s = sum(m.wall_s for m in measured)
    print("| puzzle | wall | proposals | tokens | status | answer |\n|---|---|---|---|---|---|")
    for m in measured:
        print(f"| {m.puzzle} | {m.wall_s:.1f} s | {m.proposals} | {m.tokens} | {m.status} | `{m.answer}` |")
    search_rate, raw_rate = proposals / search_s, proposals / raw_s
    print(
        json.dumps(
            {
                "model": config.model.name,
                "search_proposals_per_s": round(search_rate, 2),
                "raw_engine_proposals_per_s": round(raw_rate, 2),
                "ratio": round(raw_rate / search_rate, 2),
                "raw_tokens": raw_tokens,
                "mean_request_s": round(search_s / len(measured), 1),
            }
        )
    )


if __name__ == "__main__":
    main()
