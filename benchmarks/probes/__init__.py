"""Diagnostics run by hand, ``python -m benchmarks.probes.NAME``; not part
of ``python -m benchmarks``."""
