"""`python -m toolkit.cli` is the `toolkit` command."""

from toolkit.cli import run

run()
