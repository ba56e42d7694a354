"""``python -m modomo.cli``."""

from modomo.cli import main

main()
