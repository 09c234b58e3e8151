"""Progress reporting: one callable the pipeline calls; sinks for terminals and GUIs.

The Slicer panel and batch drivers read the JSON-lines sink from the worker's stderr:
    {"stage": "segmentation", "fraction": 0.42, "message": "..."}
"""

from __future__ import annotations

import json
import sys
from typing import Callable, Optional, TextIO

# The stages in order, with the share of a typical run's time each takes, so that one
# overall fraction can be shown from per-stage fractions.
STAGES = (
    ("read", 0.10),
    ("canal", 0.15),
    ("segmentation", 0.45),
    ("patches", 0.10),
    ("regression", 0.05),
    ("outputs", 0.15),
)

ProgressCallback = Callable[[str, float, str], None]


def overall_fraction(stage: str, fraction: float) -> float:
    """Map a stage-local fraction in [0, 1] onto the whole run."""
    done = 0.0
    for name, share in STAGES:
        if name == stage:
            return min(1.0, done + share * max(0.0, min(1.0, fraction)))
        done += share
    return min(1.0, max(0.0, fraction))


def silent(stage: str, fraction: float, message: str = "") -> None:
    """A progress callback that reports nothing."""


class JsonLinesProgress:
    """Writes one JSON object per line (machine-readable; the GUI's protocol)."""

    def __init__(self, stream: Optional[TextIO] = None):
        self.stream = stream or sys.stderr

    def __call__(self, stage: str, fraction: float, message: str = "") -> None:
        record = {
            "stage": stage,
            "fraction": round(overall_fraction(stage, fraction), 4),
            "message": message,
        }
        self.stream.write(json.dumps(record) + "\n")
        self.stream.flush()


class TerminalProgress:
    """A one-line progress bar for people at a terminal."""

    def __init__(self, stream: Optional[TextIO] = None, width: int = 30):
        self.stream = stream or sys.stderr
        self.width = width

    def __call__(self, stage: str, fraction: float, message: str = "") -> None:
        total = overall_fraction(stage, fraction)
        filled = int(round(total * self.width))
        bar = "#" * filled + "-" * (self.width - filled)
        self.stream.write(f"\r[{bar}] {total * 100:5.1f}% {stage:<12} {message[:40]:<40}")
        if total >= 1.0:
            self.stream.write("\n")
        self.stream.flush()


def parse_progress_line(line: str) -> Optional[dict]:
    """Parse one worker stderr line; None when it is not a progress record."""
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if not isinstance(record, dict) or "stage" not in record or "fraction" not in record:
        return None
    return record
