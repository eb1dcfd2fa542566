"""Benchmarks, each runnable as ``python -m san_ext.bench.NAME``; each prints a table and writes JSON."""
