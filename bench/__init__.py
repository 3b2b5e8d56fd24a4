"""Benchmarks: ratios measured in one run, service against the raw engine on the same work."""
