"""Benchmarks: `make bench` runs them and updates docs/benchmarks.md."""
