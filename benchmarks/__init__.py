"""Timing benchmarks of the project's code; run each module with ``python -m benchmarks.<name>``."""
