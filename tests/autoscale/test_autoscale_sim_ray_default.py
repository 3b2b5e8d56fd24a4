"""Our implementation of Ray Serve's default policy, pinned to what Ray's own code returns.

The expected values below were computed once from Ray 2.60's code (`ray.serve.autoscaling_policy`:
`_apply_scaling_factors`, `_apply_delay_logic` with `_now`, `_core_replica_queue_length_policy`
for the rule, and `replica_queue_length_autoscaling_policy` wrapped by `_apply_autoscaling_config`
for a whole tick) on the same inputs. The simulator no longer imports those private functions:
a Ray upgrade that changes them does not change the simulator, and these cases say what it
reproduces.
"""

from __future__ import annotations

import pytest

from autoscale.sim.ray_default import (
    DefaultPolicyParams,
    DelayState,
    apply_delays,
    apply_scaling_factors,
    decide,
    rule,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("desired", "current", "up", "down", "expected"),
    [
        (6.0, 2, 1.0, 1.0, 6),  # factor 1: the rule's value, rounded up
        (6.0, 2, 0.5, 1.0, 4),  # half the step up: ceil(2 + 0.5 * 4)
        (1.2, 4, 1.0, 0.5, 3),  # half the step down: ceil(4 - 0.5 * 2.8)
        (3.9, 4, 1.0, 0.1, 4),  # ceil(3.9) is 4: no downscale wished
        (3.0, 4, 1.0, 0.1, 3),  # the factor rounds the step away: still one down
        (2.5, 0, 2.0, 1.0, 3),  # from zero the factor does not apply
        (0.0, 1, 1.0, 0.5, 0),
    ],
)
def test_scaling_factors_match_ray(
    desired: float, current: int, up: float, down: float, expected: int
) -> None:
    params = DefaultPolicyParams(upscaling_factor=up, downscaling_factor=down)
    assert apply_scaling_factors(desired, current, params) == expected


def test_delays_match_ray_over_a_sequence_of_ticks() -> None:
    params = DefaultPolicyParams(upscale_delay_s=3.0, downscale_delay_s=5.0, downscale_to_zero_delay_s=2.0)
    state = DelayState()
    # (now, desired) -> Ray's decision, the target carried from tick to tick; from 2 replicas.
    ticks = [
        (0, 4, 2),
        (1, 4, 2),
        (2, 1, 2),  # a wish to go down restarts the upscale wait
        (3, 4, 2),
        (4, 4, 2),
        (5, 4, 2),
        (6, 4, 4),  # 3 s since t=3
        (7, 0, 4),
        (9, 0, 4),
        (12, 0, 1),  # 5 s since t=7; scale-down stops at one replica
        (13, 0, 1),
        (14, 0, 1),
        (15, 0, 0),  # 1 -> 0 after downscale_to_zero_delay_s (2 s since t=13)
        (16, 0, 0),
        (17, 2, 0),
    ]
    target = 2
    for now, desired, expected in ticks:
        target_before = target
        target = apply_delays(desired, target, params, state, float(now))
        assert target == expected, (now, desired, target_before)


@pytest.mark.parametrize(
    ("current", "target", "ongoing", "up", "expected_rule", "expected"),
    [
        (3, 3, 13.0, 1.0, 6.5, 7),  # 13 ongoing / target 2 per replica
        (4, 4, 5.0, 1.0, 2.5, 3),
        (0, 0, 3.0, 2.0, 0, 2),  # cold start: queued requests start ceil(upscaling_factor)
        (0, 0, 0.0, 1.0, 0, 0),
        (0, 2, 0.0, 1.0, 2, 2),  # none running: the target stands
    ],
)
def test_rule_and_tick_match_ray(
    current: int, target: int, ongoing: float, up: float, expected_rule: float, expected: int
) -> None:
    params = DefaultPolicyParams(upscaling_factor=up, upscale_delay_s=0.0, downscale_delay_s=0.0)
    assert rule(ongoing, current, target, params) == expected_rule
    assert decide(ongoing, current, target, params, DelayState(), 0.0) == expected
