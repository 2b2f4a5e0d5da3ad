"""``python -m tsprune.cli``: the command line."""

from tsprune.cli import main

main()
