"""``python -m pipeline``: the `pipeline` command (pipeline/app/cli.py)."""

from pipeline.app.cli import main

main()
