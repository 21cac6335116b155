"""What every command prints: plain lines, and progress bars only where a person watches."""
from __future__ import annotations

import os
import sys


def say(msg: str) -> None:
    print(msg, flush=True)


def progress_enabled(wanted: bool = True) -> bool:
    """Progress bars only on a terminal and never under CI: redrawn bars fill logs."""
    return wanted and sys.stderr.isatty() and not os.environ.get("CI")
