"""What the benchmarks share: progress lines on stderr and percentiles. Imported by the
scripts beside it (`python bench/NAME.py` puts this folder on the path)."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def pct(values: Sequence[float], q: float) -> float:
    """The q-th percentile, linear between closest ranks; nan when empty."""
    if not values:
        return math.nan
    xs = sorted(values)
    k = (len(xs) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)
