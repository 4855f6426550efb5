"""`pipeline bench` commands (see pipeline/cli.py BENCH_COMMANDS)."""
