"""The `explorer` command's entry point. The command line's modules take a third of a second to import (scipy); a
Ctrl-C in that time exits 130 with one line, as one a moment later does, instead of a traceback."""
import os
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
    return end_process(exit_code(run))


def exit_code(run) -> int:
    """run()'s code, or the code of the SystemExit it raised (a SIGTERM's 143, argparse's 2): so that it, too, goes
    through end_process."""
    try:
        return run()
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else 0 if stop.code is None else 1


def end_process(code: int) -> int:
    """Returns `code`, but a torchrun worker (WORLD_SIZE above 1) exits with it at once, past the interpreter's
    shutdown. FSDP's device mesh holds the process group, and with it gloo's worker threads, to the end; one of them
    can still be letting go of a finished collective's tensor, which takes the GIL, as the interpreter shuts down,
    and Python 3.11 then stops that thread in a way that aborts the process ("terminate called without an active
    exception", SIGABRT): one two-process run in 15 to 100 on a loaded 2-core machine, after everything was saved.
    Every file the run writes is closed by then; the output streams are flushed here."""
    if os.environ.get("WORLD_SIZE", "1").strip() not in ("", "1"):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code
