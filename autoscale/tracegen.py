"""Seeded generator of the shipped simulator traces (`python -m autoscale.tracegen`).

Arrivals are a non-homogeneous Poisson process (thinning) whose rate follows a slow wave
plus burst windows; inside a burst both the rate and the share of `high` effort rise (a
product launching a batch of hard problems). Token budgets per request are log-normal,
clipped to the effort's budget. The pool models GPU replicas running a mid-size model on
vLLM: per-replica decode throughput, per-sequence speed, concurrent sequences, start-up time.
"""

from __future__ import annotations

import argparse
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TRACES_DIR = Path(__file__).with_name("traces")

# Per effort: deadline, branches, median tokens and log-normal sigma, budget cap.
EFFORTS: dict[str, dict[str, float]] = {
    "low": {"deadline_s": 60, "branches": 1, "median": 900, "sigma": 0.5, "cap": 2048},
    "medium": {"deadline_s": 120, "branches": 4, "median": 7000, "sigma": 0.4, "cap": 12288},
    "high": {"deadline_s": 240, "branches": 8, "median": 30000, "sigma": 0.35, "cap": 49152},
}

POOL = {
    "replica_tokens_per_s": 3000.0,
    "seq_tokens_per_s": 60.0,
    "max_seqs_per_replica": 128,
    "startup_s": 120.0,
    "control_interval_s": 1.0,
    "metrics_interval_s": 2.0,
}


@dataclass(frozen=True)
class Burst:
    start_s: float
    length_s: float
    rate_factor: float
    high_share: float


@dataclass(frozen=True)
class Spec:
    name: str
    description: str
    seed: int
    duration_s: float
    base_rate: float  # requests per second
    wave_amplitude: float  # relative, 0..1
    wave_period_s: float
    mix: tuple[float, float, float]  # low, medium, high shares outside bursts
    bursts: tuple[Burst, ...]
    min_replicas: int
    max_replicas: int
    initial_replicas: int
    tuned_targets: tuple[int, ...]


SPECS = (
    Spec(
        name="steady-mixed",
        description="a slow wave of mixed efforts, no bursts (about 10-25 replicas)",
        seed=11,
        duration_s=3600,
        base_rate=4.5,
        wave_amplitude=0.35,
        wave_period_s=3600,
        mix=(0.55, 0.35, 0.10),
        bursts=(),
        min_replicas=2,
        max_replicas=64,
        initial_replicas=8,
        tuned_targets=(6, 12, 24),
    ),
    Spec(
        name="bursty-high",
        description="mixed traffic, three 5-minute bursts of high-effort requests (8-128 replicas)",
        seed=23,
        duration_s=3600,
        base_rate=3.5,
        wave_amplitude=0.2,
        wave_period_s=3600,
        mix=(0.6, 0.32, 0.08),
        bursts=(Burst(600, 300, 2.0, 0.6), Burst(1800, 300, 2.5, 0.7), Burst(2700, 300, 2.0, 0.6)),
        min_replicas=2,
        max_replicas=128,
        initial_replicas=8,
        tuned_targets=(6, 12, 24),
    ),
    Spec(
        name="burst-512",
        description="large fleet: 40-minute trace, two high-effort surges to about 500 replicas",
        seed=37,
        duration_s=2400,
        base_rate=20.0,
        wave_amplitude=0.15,
        wave_period_s=2400,
        mix=(0.6, 0.3, 0.1),
        bursts=(Burst(480, 420, 3.0, 0.65), Burst(1500, 360, 3.5, 0.7)),
        min_replicas=8,
        max_replicas=512,
        initial_replicas=64,
        tuned_targets=(6, 12, 24),
    ),
)


def _rate(spec: Spec, t: float) -> tuple[float, float]:
    rate = spec.base_rate * (1 + spec.wave_amplitude * math.sin(2 * math.pi * t / spec.wave_period_s))
    high = spec.mix[2]
    for burst in spec.bursts:
        if burst.start_s <= t < burst.start_s + burst.length_s:
            rate *= burst.rate_factor
            high = burst.high_share
    return rate, high


def generate(spec: Spec) -> dict[str, Any]:
    rng = random.Random(spec.seed)
    peak = spec.base_rate * (1 + spec.wave_amplitude) * max([1.0] + [b.rate_factor for b in spec.bursts])
    requests: list[list[Any]] = []
    t = 0.0
    while True:
        t += rng.expovariate(peak)
        if t >= spec.duration_s:
            break
        rate, high = _rate(spec, t)
        if rng.random() * peak > rate:
            continue
        low, medium, _ = spec.mix
        rest = 1 - high
        scale = rest / (low + medium) if low + medium > 0 else 0.0
        pick = rng.random()
        effort = "low" if pick < low * scale else "medium" if pick < (low + medium) * scale else "high"
        profile = EFFORTS[effort]
        tokens = int(min(rng.lognormvariate(math.log(profile["median"]), profile["sigma"]), profile["cap"]))
        requests.append([round(t, 3), effort, max(tokens, 16)])
    target_util = 0.8
    return {
        "name": spec.name,
        "description": spec.description,
        "meta": {"generator": "autoscale.tracegen", "seed": spec.seed, "duration_s": spec.duration_s},
        "pool": {**POOL, "initial_replicas": spec.initial_replicas},
        "efforts": {
            name: {"deadline_s": p["deadline_s"], "branches": int(p["branches"])}
            for name, p in EFFORTS.items()
        },
        "min_slack_s": 2.0,
        "scaling": {
            "min_replicas": spec.min_replicas,
            "max_replicas": spec.max_replicas,
            "target_utilization": target_util,
            "upscale_delay_s": 0.0,
            "downscale_delay_s": 120.0,
            "prior_tokens_per_s": 1000.0,
        },
        # The same policy planned at other utilisations: its own GPU-hours/misses frontier.
        "effort_budget_variants": {
            f"effort-budget-util-{util}": {"target_utilization": util} for util in (0.65, 0.9)
        },
        "default_policies": {
            # Ray Serve's defaults: target_ongoing_requests 2, 30 s up, 600 s down, 30 s window.
            "ray-default": {},
            # The default rule tuned for this pool (same delays as ours) at several targets, so the
            # effort-budget policy can be compared at equal GPU-hours.
            **{
                f"ray-default-target-{target}": {
                    "target_ongoing_requests": target,
                    "upscale_delay_s": 0.0,
                    "downscale_delay_s": 120.0,
                    "look_back_period_s": 10.0,
                }
                for target in spec.tuned_targets
            },
        },
        "requests": requests,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=str(TRACES_DIR))
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for spec in SPECS:
        trace = generate(spec)
        path = out / f"{spec.name}.json"
        # One request per line keeps the files diffable.
        body = json.dumps({k: v for k, v in trace.items() if k != "requests"}, indent=2)[:-2]
        rows = ",\n    ".join(json.dumps(r) for r in trace["requests"])
        path.write_text(f'{body},\n  "requests": [\n    {rows}\n  ]\n}}\n')
        print(f"{path}: {len(trace['requests'])} requests")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
