"""The `explorer` command's entry point. The command line's modules take a third of a second to import (scipy); a
Ctrl-C in that time exits 130 with one line, as one a moment later does, instead of a traceback."""
import sys

from explorer.interrupts import caused_by_interrupt


def main() -> int:
    try:
        from explorer.cli import main as run
    except BaseException as error:
        if not caused_by_interrupt(error):
            raise
        print("explorer: interrupted", file=sys.stderr)
        return 130
    return run()
