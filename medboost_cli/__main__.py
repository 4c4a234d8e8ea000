"""``python -m medboost_cli``: the same as the ``medboost`` command."""

from .cli import main

main()
