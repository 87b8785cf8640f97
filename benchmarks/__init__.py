"""Benchmarks: each script prints a markdown table and appends it to benchmarks/results/."""
