"""What the benchmarks share: progress lines on stderr, percentiles, a free loopback
port and the embedded PostgreSQL's server process. Imported by the scripts beside it
(`python bench/NAME.py` puts this folder on the path)."""

from __future__ import annotations

import math
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence

from storage.db import EmbeddedPostgres


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def postmaster(pg: EmbeddedPostgres) -> int | None:
    """The pid of the embedded PostgreSQL's server, for CPU figures; None if unknown."""
    try:
        return int((pg.pgdata / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def stop_server(server: subprocess.Popen[str]) -> None:
    """SIGTERM a bench's server process, and SIGKILL it if it has not ended in 15 s."""
    server.send_signal(signal.SIGTERM)
    try:
        server.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()
