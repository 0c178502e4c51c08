"""``python -m xaudit`` (and ``torchrun -m xaudit``): the command line."""

from .cli import main

main()
