"""``python -m medboost_cli.cli``: the same as the ``medboost`` command."""

from .entry import main

main()
