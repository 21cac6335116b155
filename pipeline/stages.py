"""Multi-stage commands (fixres, the trade-off and size-resilience studies) run each stage
once: a stage whose result file is there is not run again, so an interrupted command goes on
where it stopped."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path


def stage_result(result: Path, run: Callable[[], object], valid: Callable[[dict], bool] = lambda _: True) -> dict:
    """The JSON at `result`, after calling `run` (which writes it) unless a file there
    already passes `valid` (e.g. a sweep over the same sides)."""
    if not (result.exists() and valid(json.loads(result.read_text()))):
        run()
    return json.loads(result.read_text())
