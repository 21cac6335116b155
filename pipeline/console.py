"""What every command prints: plain lines, and progress bars only where a person watches."""
from __future__ import annotations

import os
import sys


def say(msg: str) -> None:
    print(msg, flush=True)


def progress_enabled(wanted: bool = True) -> bool:
    """Progress bars only on a terminal and never under CI: redrawn bars fill logs."""
    return wanted and sys.stderr.isatty() and not os.environ.get("CI")


def run_or_exit(work, *args):
    """`work(*args)`; bad data or a file error ends the command with one line naming it and
    exit status 2, not a traceback (BadDataError is a ValueError)."""
    try:
        return work(*args)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
