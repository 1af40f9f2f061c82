"""``python -m synscope``."""

from synscope.cli.main import main

main()
