"""Benchmarks: each prints its figures and ratios to a raw baseline, and updates results.json."""
