"""What every command prints: plain lines, progress bars only where a person watches, and one
readable line, not a traceback, when the data or an option value is wrong."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

DEBUG_FLAG, DEBUG_ENV = "--debug", "LOWRES_DEBUG"
# What a person can act on from the message alone: bad data (BadDataError is a ValueError),
# bad option values (the configurations' checks raise ValueError), missing or unreadable paths
# (OSError), a missing optional install (ImportError, saying how to install it). Anything else
# is a bug, and keeps its traceback.
READABLE_ERRORS = (ValueError, OSError, ImportError)


def say(msg: str, err: bool = False) -> None:
    """A line for the person running the command: on stdout, or with `err` on stderr (notes on
    cached data, which must not mix into a command's printed results)."""
    print(msg, file=sys.stderr if err else None, flush=True)


def progress_enabled(wanted: bool = True) -> bool:
    """Progress bars only on a terminal and never under CI: redrawn bars fill logs."""
    return wanted and sys.stderr.isatty() and not os.environ.get("CI")


def run_command(main: Callable[[list[str]], object], argv: list[str] | None = None) -> None:
    """Run a command's `main(argv)` (default: the process's arguments). A data or option error
    ends the process with its message on one line and exit code 2; with --debug anywhere in
    the arguments, or LOWRES_DEBUG=1, it raises as it is, with its traceback."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    from pipeline.distributed import failure_elsewhere, leave_process_group, report_failure

    try:
        main([a for a in argv if a != DEBUG_FLAG])
    except READABLE_ERRORS as e:
        report_failure(str(e))
        if debug:
            raise
        error_line(str(e))
        raise SystemExit(2) from None
    except RuntimeError:  # under torchrun: a collective broke because another rank failed first?
        cause = failure_elsewhere()
        if cause is None or debug:
            raise
        error_line(cause)
        raise SystemExit(2) from None
    finally:
        leave_process_group()


def error_line(message: str) -> None:
    """`error: message` on stderr in one write: the ranks of a job share the stream, and print's
    separate write of the newline lets their lines run into each other."""
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()
