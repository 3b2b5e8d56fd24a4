"""The trace a simulation replays: the pool, the efforts, the settings of the policies to
compare, and the requests (arrival time, effort, token budget)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autoscale.sim.ray_default import DefaultPolicyParams
from cluster.config import GeneratorScaling


@dataclass(frozen=True, slots=True)
class EffortProfile:
    deadline_s: float
    branches: int


@dataclass(frozen=True, slots=True)
class PoolParams:
    replica_tokens_per_s: float
    seq_tokens_per_s: float
    max_seqs_per_replica: int
    startup_s: float
    control_interval_s: float = 1.0
    metrics_interval_s: float = 2.0
    initial_replicas: int = 1


@dataclass(frozen=True, slots=True)
class SimRequest:
    arrival: float
    effort: str
    tokens: int


@dataclass
class Trace:
    name: str
    description: str
    pool: PoolParams
    efforts: dict[str, EffortProfile]
    scaling: GeneratorScaling
    # Ray's default rule under these names, each with its AutoscalingConfig fields.
    defaults: dict[str, DefaultPolicyParams]
    requests: list[SimRequest]
    min_slack_s: float = 2.0
    meta: dict[str, Any] = field(default_factory=dict)
    # Extra runs of the effort-budget policy with some scaling settings changed (a frontier).
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Trace:
        requests = [SimRequest(float(t), str(e), int(n)) for t, e, n in data["requests"]]
        requests.sort(key=lambda r: r.arrival)
        defaults = {
            name: DefaultPolicyParams(**params)
            for name, params in (data.get("default_policies") or {}).items()
        } or {"ray-default": DefaultPolicyParams()}
        return cls(
            name=str(data["name"]),
            description=str(data.get("description", "")),
            pool=PoolParams(**data["pool"]),
            efforts={name: EffortProfile(**p) for name, p in data["efforts"].items()},
            scaling=GeneratorScaling.model_validate(data["scaling"]),
            defaults=defaults,
            requests=requests,
            min_slack_s=float(data.get("min_slack_s", 2.0)),
            meta=dict(data.get("meta") or {}),
            variants=dict(data.get("effort_budget_variants") or {}),
        )

    @classmethod
    def load(cls, path: str | Path) -> Trace:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def default_end_s(self) -> float:
        """The last arrival plus the longest deadline plus one control tick: all work is over."""
        last = self.requests[-1].arrival if self.requests else 0.0
        longest = max((p.deadline_s for p in self.efforts.values()), default=0.0)
        return last + longest + self.pool.control_interval_s
