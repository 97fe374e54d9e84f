"""Reproducible benchmarks: python -m bench."""
