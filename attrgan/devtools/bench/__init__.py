"""Benchmarks (`make bench` / `python -m attrgan.devtools.bench`): throughput and memory measured side by side.

Each section module exposes `run(quick: bool = False) -> None` and prints its own table; figures
are only comparable within one run on one machine.
"""
