"""`pipeline bench` commands (see pipeline/app/cli.py BENCH_COMMANDS)."""
