"""Engine settings measured on this machine: one vLLM engine per setting, the same work for each.

    flock /tmp/rc-heavy.lock python -m bench.engine --model qwen2.5-coder-0.5b-instruct \\
        --settings baseline,bf16,no-prefix-cache --out bench/results/engine.jsonl
    python -m bench.engine --table bench/results/engine.jsonl     # the markdown table again

Every setting starts a fresh engine in its own process (the CPU build reads VLLM_CPU_* from
the environment at start), built by the service's own `engine_args` from the default config
with the setting applied. On each engine, after one warm-up request:
- one sequence: greedy, 128 tokens (end of sequence ignored, so every setting generates
  the same number of tokens);
- batches of 8 and of 16 distinct GSM8K questions at once, 128 tokens each, sampled as the
  service samples (temperature 0.8, top_k 40): generated tokens / wall time;
- the prefix cache: a long prompt (about 1,500 tokens) sent twice for one token each; the
  prefill time of each and the cached tokens the engine reports for the second.
Token counts are the engine's own. The machine is shared, so the load average at the start
of each setting is reported beside its numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cluster.config import ModelConfig, load_config
from cluster.engine.vllm_engine import cpu_engine_env, engine_args, resolve_dtype
from cluster.models import resolve_model_dir

GSM8K = Path(__file__).resolve().parent.parent / "cluster" / "datasets" / "gsm8k" / "train-500.jsonl"
TOKENS = 128
BATCHES = (8, 16)


@dataclass(frozen=True)
class Setting:
    """A change to the default config's model section, and to the engine's environment."""

    model: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)


SETTINGS = {
    "default": Setting(),  # the default config as it is
    "float32": Setting({"dtype": "float32"}),
    "bf16": Setting({"dtype": "bfloat16"}),
    "compiled": Setting({"engine_kwargs": {"enforce_eager": False}}),
    "no-prefix-cache": Setting({"engine_kwargs": {"enable_prefix_caching": False}}),
    "max-num-seqs-8": Setting({"engine_kwargs": {"max_num_seqs": 8}}),
    "batched-tokens-512": Setting({"engine_kwargs": {"max_num_batched_tokens": 512}}),
    "batched-tokens-8192": Setting({"engine_kwargs": {"max_num_batched_tokens": 8192}}),
    "kv-cache-4gib": Setting({"cpu_kv_cache_gib": 4}),
    "threads-nobind": Setting(env={"VLLM_CPU_OMP_THREADS_BIND": "nobind"}),
    "threads-one-core": Setting(env={"VLLM_CPU_OMP_THREADS_BIND": "0", "OMP_NUM_THREADS": "1"}),
}


@dataclass(frozen=True)
class Result:
    model: str
    setting: str
    dtype: str
    load_avg: float
    start_s: float
    single_tps: float
    batch_tps: dict[str, float]
    prefill_cold_s: float
    prefill_warm_s: float
    prompt_tokens: int
    cached_tokens: int


def model_config(model: str, setting: Setting) -> ModelConfig:
    config = load_config().with_overrides({"model": {"name": model, "path": None, **setting.model}})
    return config.model


def questions() -> list[str]:
    with GSM8K.open() as lines:
        return [json.loads(line)["question"] for line in lines]


async def measure(model: str, name: str) -> Result:
    from transformers import AutoTokenizer
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind
    from vllm.v1.engine.async_llm import AsyncLLM

    setting = SETTINGS[name]
    config = model_config(model, setting)
    model_dir = resolve_model_dir(config)
    for key, value in {**cpu_engine_env(config), **setting.env}.items():
        os.environ[key] = value
    tokenizer = AutoTokenizer.from_pretrained(model_dir)

    def prompt(text: str) -> str:
        messages = [{"role": "user", "content": text}]
        return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))

    load_avg = os.getloadavg()[0]
    started = time.perf_counter()
    engine = AsyncLLM.from_engine_args(engine_args(config, model_dir, cuda=False))
    start_s = time.perf_counter() - started
    _progress(f"engine started in {start_s:.0f} s")

    async def generate(text: str, params: SamplingParams) -> tuple[int, int, int]:
        """Generated, prompt and cached tokens of one request, as the engine counts them."""
        final = None
        async for output in engine.generate(prompt(text), params, request_id=uuid.uuid4().hex):
            final = output
        assert final is not None
        generated = sum(len(seq.token_ids) for seq in final.outputs)
        return generated, len(final.prompt_token_ids or ()), final.num_cached_tokens or 0

    def params(temperature: float, max_tokens: int = TOKENS, seed: int | None = None) -> SamplingParams:
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=temperature,
            top_k=40 if temperature else 0,  # 0: off
            seed=seed,
            ignore_eos=True,
            output_kind=RequestOutputKind.FINAL_ONLY,
        )

    try:
        pool = questions()
        await generate(pool[-1], params(0.0, 16))  # warm-up
        began = time.perf_counter()
        tokens, _, _ = await generate(pool[0], params(0.0))
        single_tps = tokens / (time.perf_counter() - began)
        _progress(f"one sequence: {single_tps:.1f} tokens/s")
        batch_tps = {}
        offset = 1
        for size in BATCHES:
            batch = pool[offset : offset + size]
            offset += size
            began = time.perf_counter()
            counts = await asyncio.gather(*(generate(q, params(0.8, seed=i)) for i, q in enumerate(batch)))
            batch_tps[str(size)] = sum(c[0] for c in counts) / (time.perf_counter() - began)
            _progress(f"batch of {size}: {batch_tps[str(size)]:.1f} tokens/s")
        # A long prompt no earlier request shares a prefix with beyond the chat template.
        long_text = "Solve each problem.\n\n" + "\n\n".join(pool[100:118])
        timings = []
        for _ in range(2):
            began = time.perf_counter()
            _, prompt_tokens, cached = await generate(long_text, params(0.0, 1))
            timings.append(time.perf_counter() - began)
        return Result(
            model=model,
            setting=name,
            dtype=resolve_dtype(config, cuda=False),
            load_avg=load_avg,
            start_s=start_s,
            single_tps=single_tps,
            batch_tps=batch_tps,
            prefill_cold_s=timings[0],
            prefill_warm_s=timings[1],
            prompt_tokens=prompt_tokens,
            cached_tokens=cached,
        )
    finally:
        engine.shutdown()


def _progress(message: str) -> None:
    print(f"    {message}", file=sys.stderr, flush=True)


def table(results: list[Result]) -> str:
    sizes = " | ".join(f"batch of {size}, tok/s" for size in BATCHES)
    lines = [
        f"| model | setting | dtype | engine start | one sequence, tok/s | {sizes} | "
        "long prompt: prefill cold / repeated (cached tokens) | load avg |",
        "|---|---|---|---|---|" + "---|" * len(BATCHES) + "---|---|",
    ]
    for r in results:
        batches = " | ".join(f"{r.batch_tps[str(size)]:.1f}" for size in BATCHES)
        lines.append(
            f"| {r.model} | {r.setting} | {r.dtype} | {r.start_s:.0f} s | {r.single_tps:.1f} | {batches} | "
            f"{r.prefill_cold_s:.2f} s / {r.prefill_warm_s:.2f} s ({r.cached_tokens} of {r.prompt_tokens}) "
            f"| {r.load_avg:.1f} |"
        )
    return "\n".join(lines)


def read_results(path: Path) -> list[Result]:
    return [Result(**json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.engine", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", default=load_config().model.name, help="a named model (default: the config's)"
    )
    parser.add_argument(
        "--settings", default=",".join(SETTINGS), help="comma-separated: " + ", ".join(SETTINGS)
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results/engine.jsonl"), help="appended to")
    parser.add_argument("--table", type=Path, help="only print the table of an earlier results file")
    # Internal: measure one setting in this process and write its result to --result.
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.table:
        print(table(read_results(args.table)))
        return 0
    if args.one:
        args.result.write_text(json.dumps(asdict(asyncio.run(measure(args.model, args.one)))))
        return 0
    names = [name.strip() for name in args.settings.split(",") if name.strip()]
    unknown = [name for name in names if name not in SETTINGS]
    if unknown:
        parser.error(f"unknown settings {unknown}; known: {', '.join(SETTINGS)}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    results = []
    for name in names:
        print(f"==> {args.model}: {name}", file=sys.stderr, flush=True)
        with tempfile.TemporaryDirectory() as scratch:
            result_file = Path(scratch) / "result.json"
            one = ["--model", args.model, "--one", name, "--result", str(result_file)]
            if subprocess.run([sys.executable, "-m", "bench.engine", *one]).returncode != 0:
                # A setting that kills the engine is a result too; the others still run.
                print(f"==> {args.model}: {name} FAILED (the engine's error is above)", file=sys.stderr)
                continue
            result = Result(**json.loads(result_file.read_text()))
        with args.out.open("a") as out:
            out.write(json.dumps(asdict(result)) + "\n")
        results.append(result)
        print(table([result]).splitlines()[-1], file=sys.stderr, flush=True)
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
