"""vero-harbor: sealed, reproducible Harbor tasks for agent-optimization benchmarks."""

__version__ = "0.1.0"
