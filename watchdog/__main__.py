"""``python -m watchdog`` is ``sd-watchdog``."""

from watchdog.cli import main

main()
