"""Benchmarks and baselines (run as scripts; not shipped)."""
