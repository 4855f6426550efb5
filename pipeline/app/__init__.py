"""The composition root: the `pipeline` command, supervision, status and the best-available book.

The only package that may import every layer (pipeline core, ingest, publisher, sinks, sim,
benchmarks); nothing imports it back (import-linter contracts in pyproject.toml).
"""
