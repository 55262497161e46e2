"""The workloads of ``python -m benchmarks``: one module each, with ``run(ctx)``."""
