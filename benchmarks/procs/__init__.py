"""Entry points the harness starts as child processes:
``python -m benchmarks.procs.NAME``."""
