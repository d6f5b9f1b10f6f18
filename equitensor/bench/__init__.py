"""Benchmark harnesses behind ``equitensor bench`` and the scripts in ``benchmarks/``."""
