"""Ray Serve's default autoscaling policy, as Ray documents and implements it (Ray 2.60).

Reimplemented here rather than imported: the functions Ray uses for scaling factors and delays
(`ray.serve.autoscaling_policy._apply_scaling_factors`, `_apply_delay_logic`) are private, and
the public `replica_queue_length_autoscaling_policy` returns the raw rule only. Semantics, from
the Serve autoscaling guides (https://docs.ray.io/en/latest/serve/autoscaling-guide.html and
https://docs.ray.io/en/latest/serve/advanced-guides/advanced-autoscaling.html) and Ray 2.60's
`ray/serve/autoscaling_policy.py`:

- the rule: `desired = current * ongoing / (target_ongoing_requests * current)`, where
  `ongoing` is the deployment's ongoing requests (queued and running) averaged over
  `look_back_period_s`, and `current` the running replicas;
- scaling factors (`upscaling_factor`, `downscaling_factor`; `smoothing_factor` and
  `upscale_/downscale_smoothing_factor` are their deprecated names, all default 1) scale the
  step: `ceil(current + factor * (desired - current))`; a downscale that the factor would round
  away still removes one replica; from zero replicas the factor does not apply;
- delays: a change is made once the wish for it has lasted `upscale_delay_s` (30 s) or
  `downscale_delay_s` (600 s; `downscale_to_zero_delay_s` for 1 -> 0, when set), measured on
  the clock from the first tick that wished it (with Ray's 1 us tolerance); a wish in the other
  direction, or none, restarts the wait; scale-down stops at one replica except from one;
- with no replica running, the rule keeps the target, and queued requests start one
  (`ceil(upscaling_factor)`) at once (Ray's cold-start path); no delay applies from zero.

Bounds (`min_replicas`, `max_replicas`) are applied by the caller, as Serve does after the policy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Ray's tolerance for "the delay has elapsed" (float clocks drift by an ulp).
DELAY_TOLERANCE_S = 1e-6


@dataclass(frozen=True, slots=True)
class DefaultPolicyParams:
    """Ray Serve AutoscalingConfig fields the default policy reads (Ray's defaults)."""

    target_ongoing_requests: float = 2.0
    upscale_delay_s: float = 30.0
    downscale_delay_s: float = 600.0
    look_back_period_s: float = 30.0
    downscale_to_zero_delay_s: float | None = None
    upscaling_factor: float = 1.0
    downscaling_factor: float = 1.0


@dataclass(slots=True)
class DelayState:
    """The wish being held: its direction (+1 up, -1 down, 0 none) and since when."""

    direction: int = 0
    since: float | None = None

    def reset(self) -> None:
        self.direction = 0
        self.since = None


def rule(ongoing: float, current: int, target: int, params: DefaultPolicyParams) -> float:
    """Replicas the ongoing-requests rule asks for (unrounded); the target with none running."""
    if current == 0:
        return target
    return current * (ongoing / (params.target_ongoing_requests * current))


def apply_scaling_factors(desired: float, current: int, params: DefaultPolicyParams) -> int:
    if current == 0:
        return math.ceil(desired)
    delta = desired - current
    factor = params.upscaling_factor if delta > 0 else params.downscaling_factor
    scaled = math.ceil(current + factor * delta)
    if math.ceil(float(desired)) < current and scaled == current:
        scaled -= 1
    return scaled


def apply_delays(
    desired: int, target: int, params: DefaultPolicyParams, state: DelayState, now: float
) -> int:
    """The replica count after the delays: `desired` once its wish has lasted long enough."""
    if desired == target:
        state.reset()
        return target
    direction = 1 if desired > target else -1
    if state.direction != direction:
        state.reset()
        state.direction = direction
    if direction > 0:
        delay = params.upscale_delay_s
    elif target == 1:
        delay = params.downscale_delay_s
        if params.downscale_to_zero_delay_s is not None:
            delay = params.downscale_to_zero_delay_s
    else:
        delay = params.downscale_delay_s
        desired = max(desired, 1)
    if state.since is None:
        state.since = now
    if now - state.since + DELAY_TOLERANCE_S >= delay:
        state.reset()
        return desired
    return target


def decide(
    ongoing: float, current: int, target: int, params: DefaultPolicyParams, state: DelayState, now: float
) -> int:
    """One control-loop tick of the default policy (before bounds)."""
    if current == 0 and ongoing > 0:
        return max(math.ceil(params.upscaling_factor), target)
    scaled = apply_scaling_factors(rule(ongoing, current, target, params), current, params)
    if current == 0 and scaled > 0:
        return scaled
    return apply_delays(max(0, scaled), target, params, state, now)
