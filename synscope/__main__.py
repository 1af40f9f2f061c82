"""``python -m synscope``."""

from synscope.cli import main

main()
