"""A discrete-event simulator of the branch-generator pool under an autoscaling policy.

It replays a request trace through a pool of GPU replicas and one policy at a time, and
reports time to answer, deadline misses, GPU-hours and the replica timeline (docs/autoscale.md).

- `trace`: the trace model (pool, efforts, scaling settings, the policies to compare, requests);
- `pool`: the pool model and its event loop (`simulate`), and what a run yields (`SimResult`);
- `policies`: the contenders: the production effort-budget policy and Ray's default rule;
- `ray_default`: Ray Serve's default-policy semantics (rule, scaling factors, delays);
- `report`: the comparison table and the replica-timeline plot;
- `cli`: `reasoning-cluster simulate`.
"""
