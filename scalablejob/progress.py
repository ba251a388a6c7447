"""Progress from inside a command task: one marker line on stdout, which the worker turns into progress.

A training script needs no import at all: ``print("::progress 0.42 epoch 3/7", flush=True)`` (or ``42%``).
This helper prints exactly that, for scripts that prefer a function.
"""

from __future__ import annotations

import sys
from typing import TextIO

MARKER = "::progress"


def report_progress(fraction: float, message: str = "", *, file: TextIO | None = None) -> None:
    """Tell the service how far this job is (0.0 to 1.0); shown in its state and in the output queue."""
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0.0 <= fraction <= 1.0:
        raise ValueError(f"progress fraction: expected a number from 0.0 to 1.0, got {fraction!r}")
    line = f"{MARKER} {fraction:.4f} {' '.join(message.split())}".rstrip()
    print(line, file=file or sys.stdout, flush=True)
