"""QA replay: time to first audio byte and seek latency for a one-hour recording, as ratios
against reading the same plaintext from a local file, and how many concurrent playback
streams the QA app holds, measured in the same run.

Set-up: an embedded PostgreSQL and SeaweedFS in a temporary folder, migrated; a local
keyring and the vault over them; one `qa` user (argon2id with the tests' cheap parameters,
t=1 m=1 MiB p=1: sign-in cost is not what is measured here). A one-hour 8 kHz 16-bit mono
WAV (57.6 MB; tones that change every minute, plus noise, from a seeded numpy generator) is
written 0600 into the temporary folder and stored through `Vault.put_plaintext` as the
`redacted` variant of a recording whose row is `stored` (as the tests' `QaServer.store`
does). That plaintext file is the baseline and is deleted at the end.

The QA app is served by a child process of this script (its own interpreter and event loop:
client and server share neither a GIL nor a loop; 2 cores are shared by client, server,
PostgreSQL and SeaweedFS) as `callvault serve` serves it: `callvault.app.build_app`,
`qa_app.build(settings, vault, users)`, `qa_app.mount`, `callvault.app.start`, pooled
PostgreSQL connections. The client takes an API token from `POST /api/tokens` and plays
`GET /api/recordings/{id}/audio/redacted` with `Authorization: Bearer`.

Measured, all with a new TCP connection per request (keep-alive off: a browser's seek
aborts the request in flight, and its connection with it):
  1. TTFB: `Range: bytes=0-`, from sending the request to the first body byte, and to the
     first 64 KiB; baseline: open the plaintext file and read its first 64 KiB.
  2. seek: `Range: bytes=N-` at random sample-aligned offsets over the hour (seeded),
     first byte and first 64 KiB; baseline: open, seek to N, read 64 KiB.
     Each HTTP answer is checked against the file's bytes (status 206, Content-Range).
     The file is in the page cache (it was just written): the baseline is the best case.
  3. where the first byte waits: in this process, `Vault.stream_range`'s set-up (policy,
     access-log line, object row, key unwrap, header fetch) and its first chunk with the
     server's batch of 16 segments and with 1.
  4. streams held: K clients at once, each from its own random offset, read as a player
     does: at most `--ahead-s` seconds of audio ahead of a playback clock that starts
     `--warmup-s` after all K requests were sent and runs at 16 000 B/s for `--window-s`.
     A stream stalls when a byte arrives after the clock needed it; K is held when no
     stream stalls more than 1 s and every byte matches the file. K ramps (1, 8, 32, 64,
     128, 256) up to `--max-streams` and stops at the first K not held. Reported per K:
     the streams' first-byte times, the worst stall, the CPU of the server process,
     PostgreSQL and SeaweedFS over the phase, and the server's RSS (peak sampled).

Usage: .venv/bin/python bench/replay.py [--quick] [--reps 40] [--seeks 100]
       [--max-streams 256] [--window-s 10] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import gc
import json
import logging
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
import wave
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
from aiohttp import web
from argon2 import PasswordHasher
from benchstats import free_port, pct, postmaster, progress, stop_server

from callvault.config import load_settings
from storage.access import Principal, Users
from storage.audit import AccessLog
from storage.db import EmbeddedPostgres, connect, migrate
from storage.keys import LocalKeyring
from storage.s3 import EmbeddedSeaweed, open_object_store
from storage.vault import Vault, load_audit_key

RATE = 8000
BYTES_PER_S = RATE * 2                 # 8 kHz, 16-bit, mono
HEAD = 44                              # the WAV header `wave` writes
PIECE = 64 * 1024                      # "the first 64 KiB"
STALL_LIMIT = 1.0                      # seconds a stream may stall and still be held
USER, PASSWORD = "quinn", "correct horse battery staple"
CHEAP = {"time_cost": 1, "memory_cost": 1024, "parallelism": 1}    # the tests' hasher
LEVELS = (1, 8, 32, 64, 128)
QUICK_LEVELS = (1, 4, 16)




def ms(values: Sequence[float]) -> dict[str, float]:
    return {"n": len(values), "p50_ms": round(pct(values, 50) * 1000, 3),
            "p95_ms": round(pct(values, 95) * 1000, 3),
            "max_ms": round(max(values, default=math.nan) * 1000, 3)}


# --- the recording -------------------------------------------------------------------------
def write_wav(path: Path, seconds: int, seed: int = 1) -> int:
    """A 16-bit mono 8 kHz WAV, written 0600: a tone whose pitch changes every minute,
    plus noise (so no two seconds are alike). Returns the file's size."""
    rng = np.random.default_rng(seed)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh, wave.open(fh, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        for minute in range(0, seconds, 60):
            n = min(60, seconds - minute) * RATE
            t = np.arange(n) / RATE
            tone = 6000 * np.sin(2 * np.pi * rng.uniform(200, 1000) * t)
            noise = rng.normal(0, 800, n)
            w.writeframes(np.clip(tone + noise, -32768, 32767).astype("<i2").tobytes())
    size = path.stat().st_size
    assert size == HEAD + seconds * BYTES_PER_S, size
    return size


def store_recording(vault: Vault, plain: Path, seconds: int) -> uuid.UUID:
    """A stored recording whose redacted audio is `plain`, as `QaServer.store` makes one."""
    rid = uuid.uuid4()
    with connect(vault.dsn) as conn:
        conn.execute(
            "INSERT INTO recordings (id, call_id, agent, source_name, status,"
            " duration_seconds, channels, sample_rate, verdict, redaction)"
            " VALUES (%s, %s, 'agent1', 'call.wav', 'processing', %s, 1, %s, %s::jsonb,"
            " %s::jsonb)",
            (rid, f"call-{rid}", float(seconds), RATE,
             json.dumps({"verified": True, "method": "pin", "reason": None,
                         "at": 1_750_000_000.0}),
             json.dumps({"spans": []})))
        conn.commit()
    with plain.open("rb") as src:
        vault.put_plaintext(rid, "redacted", src, plain.stat().st_size)
    with connect(vault.dsn) as conn:
        conn.execute("UPDATE recordings SET status = 'stored', stored_at = now()"
                     " WHERE id = %s", (rid,))
        conn.commit()
    return rid


# --- the server (a child process of this script) -------------------------------------------
class _ErrorCount(logging.Handler):
    """Counts what aiohttp's server logs (a handler's exception: "Error handling request")
    by exception type, instead of printing a traceback per request into the report."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: dict[str, int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        exc = record.exc_info[1] if record.exc_info else None
        kind = f"{type(exc).__name__}({exc})"[:80] if exc else record.getMessage()[:60]
        self.counts[kind] = self.counts.get(kind, 0) + 1


async def _serve(config: dict[str, Any]) -> None:
    from callvault import app as http
    from callvault import qa_app
    from storage.db import pool_connections

    dsn = config["dsn"]
    pool_connections(dsn)          # as `callvault serve` does
    errors = _ErrorCount()
    server_log = logging.getLogger("aiohttp.server")
    server_log.addHandler(errors)
    server_log.propagate = False
    settings = load_settings(None, state_dir=Path(config["state"]),
                             s3_endpoint_url=config["endpoint"],
                             s3_access_key_id=config["access"],
                             s3_secret_access_key=config["secret"],
                             s3_bucket=config["bucket"], web_secure_cookies=False)
    keys = LocalKeyring(Path(config["keyring"]))
    vault = Vault(dsn, open_object_store(settings, None), keys,
                  AccessLog(dsn, load_audit_key(dsn, keys)))
    users = Users(dsn, PasswordHasher(**CHEAP))  # type: ignore[arg-type]
    service = qa_app.build(settings, vault, users)

    async def healthy() -> bool:
        return True

    app = http.build_app({"database": healthy})
    qa_app.mount(app, service)
    async def stats(request: web.Request) -> web.Response:
        return web.json_response(errors.counts)

    async def collect(request: web.Request) -> web.Response:
        """Where the memory of closed streams is: garbage (reference cycles the collector
        had not reached yet), or freed but kept by the C allocator (malloc_trim)."""
        found = gc.collect()
        after_gc = _rss_mib(os.getpid())
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        return web.json_response({"collected": found, "after_gc": after_gc,
                                  "after_trim": _rss_mib(os.getpid())})

    app.router.add_get("/bench/stats", stats)
    app.router.add_post("/bench/collect", collect)
    runner = await http.start(app, "127.0.0.1", config["port"])
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await stop.wait()
    await runner.cleanup()


# --- /proc ---------------------------------------------------------------------------------
def _proc_stat(pid: int) -> list[str]:
    """Fields of /proc/<pid>/stat after the command name (index 0 is field 3, state)."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def _cpu(pid: int | None, with_children: bool = False) -> float:
    """CPU seconds of a process (and of the children it has reaped, or its live children
    too, for PostgreSQL's postmaster and its backends)."""
    if pid is None:
        return 0.0
    tick = os.sysconf("SC_CLK_TCK")
    try:
        fields = _proc_stat(pid)
    except OSError:
        return 0.0
    total = sum(int(x) for x in fields[11:15 if with_children else 13])
    if with_children:
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                f = _proc_stat(int(entry.name))
            except OSError:
                continue
            if int(f[1]) == pid:
                total += int(f[11]) + int(f[12])
    return total / tick


def _rss_mib(pid: int, field_name: str = "VmRSS") -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) / 1024
    return math.nan


@dataclass
class Pids:
    server: int
    postgres: int | None
    seaweed: int | None

    def cpu(self) -> dict[str, float]:
        return {"server": _cpu(self.server), "postgres": _cpu(self.postgres, True),
                "seaweedfs": _cpu(self.seaweed), "client": time.process_time(),
                "wall": time.perf_counter()}


# --- the client ----------------------------------------------------------------------------
@dataclass
class Target:
    base: str
    audio: str              # the audio URL
    token: str
    size: int
    plain: Path

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def _session() -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    return aiohttp.ClientSession(connector=connector,
                                 timeout=aiohttp.ClientTimeout(total=120))


async def http_first(session: aiohttp.ClientSession, t: Target, start: int
                     ) -> tuple[float, float]:
    """(seconds to the first body byte, to the first 64 KiB) of `Range: bytes=start-`;
    the bytes and headers are checked against the plaintext file."""
    headers = {**t.headers, "Range": f"bytes={start}-"}
    began = time.perf_counter()
    async with session.get(t.audio, headers=headers) as resp:
        first = await resp.content.readany()
        at_first = time.perf_counter()
        got = bytearray(first)
        while len(got) < PIECE:
            more = await resp.content.read(PIECE - len(got))
            if not more:
                break
            got += more
        at_piece = time.perf_counter()
        status, crange = resp.status, resp.headers.get("Content-Range")
    if status != 206 or crange != f"bytes {start}-{t.size - 1}/{t.size}":
        raise RuntimeError(f"answered {status} with Content-Range {crange}")
    with t.plain.open("rb") as fh:
        fh.seek(start)
        if bytes(got[:PIECE]) != fh.read(PIECE):
            raise RuntimeError(f"the bytes from {start} differ from the file's")
    return at_first - began, at_piece - began


def file_first(path: Path, start: int) -> float:
    """Open the plaintext file, seek, read 64 KiB (unbuffered: one read call)."""
    began = time.perf_counter()
    with path.open("rb", buffering=0) as fh:
        if start:
            fh.seek(start)
        data = fh.read(PIECE)
    took = time.perf_counter() - began
    assert len(data) == PIECE
    return took


def offsets(rng: random.Random, size: int, n: int) -> list[int]:
    """Sample-aligned offsets past the header, leaving a full 64 KiB and a window to read."""
    last = (size - HEAD - 2 * PIECE) // 2
    return [HEAD + 2 * rng.randrange(1, last) for _ in range(n)]


@dataclass
class Latency:
    http_first: list[float] = field(default_factory=list)
    http_piece: list[float] = field(default_factory=list)
    file: list[float] = field(default_factory=list)


async def bench_latency(t: Target, reps: int, seeks: int, seed: int
                        ) -> tuple[Latency, Latency]:
    """TTFB from the start and from random offsets, interleaved with the file baseline."""
    rng = random.Random(seed)
    ttfb, seek = Latency(), Latency()
    async with _session() as session:
        for start in (0, t.size // 2):                  # warm-up: not counted
            await http_first(session, t, start)
            file_first(t.plain, start)
        for _ in range(reps):
            a, b = await http_first(session, t, 0)
            ttfb.http_first.append(a)
            ttfb.http_piece.append(b)
            ttfb.file.append(file_first(t.plain, 0))
        for start in offsets(rng, t.size, seeks):
            a, b = await http_first(session, t, start)
            seek.http_first.append(a)
            seek.http_piece.append(b)
            seek.file.append(file_first(t.plain, start))
    return ttfb, seek


def breakdown(vault: Vault, rid: uuid.UUID, size: int, reps: int, seed: int
              ) -> dict[str, list[float]]:
    """In this process: `stream_range`'s set-up, then its first chunk, batch 16 and 1."""
    rng = random.Random(seed)
    principal = Principal(USER, "qa")
    out: dict[str, list[float]] = {"setup": [], "first chunk, 16 segments": [],
                                   "first chunk, 1 segment": []}
    for start in offsets(rng, size, reps):
        for batch in (16, 1):
            began = time.perf_counter()
            stream = vault.stream_range(principal, rid, "redacted", start, None,
                                        origin="bench: breakdown", batch_segments=batch)
            ready = time.perf_counter()
            next(stream.chunks)
            done = time.perf_counter()
            if batch == 16:
                out["setup"].append(ready - began)
            key = "first chunk, 16 segments" if batch == 16 else "first chunk, 1 segment"
            out[key].append(done - ready)
    return out


@dataclass
class StreamResult:
    first_byte: float = math.nan      # seconds after the requests were sent
    worst_stall: float = 0.0          # seconds a byte came after the clock needed it
    received: int = 0
    error: str | None = None


@dataclass
class Level:
    k: int
    held: bool
    first_byte: dict[str, float]
    worst_stall_s: float
    stalled_streams: int
    errors: list[str]
    cpu_s: dict[str, float]
    cpu_pct: dict[str, float]
    server_rss_mib_peak: float
    server_rss_mib_after: float
    server_rss_mib_after_gc: float
    server_rss_mib_after_trim: float
    gc_collected: int
    seconds: float


async def one_stream(session: aiohttp.ClientSession, t: Target, start: int, sent: float,
                     play: float, window: float, ahead: float, res: StreamResult) -> None:
    """A player: reads at most `ahead` s past its clock (which starts at `play` and runs
    at 16 000 B/s for `window` s) and notes how late each byte came."""
    need = int(window * BYTES_PER_S)
    headers = {**t.headers, "Range": f"bytes={start}-"}
    got = bytearray()
    async with session.get(t.audio, headers=headers) as resp:
        if resp.status != 206:
            raise RuntimeError(f"answered {resp.status}")
        while len(got) < need:
            now = time.perf_counter()
            allowed = int(BYTES_PER_S * (max(0.0, now - play) + ahead))
            if len(got) >= allowed:
                await asyncio.sleep((len(got) - allowed) / BYTES_PER_S + 0.05)
                continue
            data = await resp.content.read(min(allowed, need) - len(got))
            if not data:
                raise RuntimeError(f"the body ended after {len(got)} bytes")
            at = time.perf_counter()
            if not got:
                res.first_byte = at - sent
            due = play + len(got) / BYTES_PER_S      # when the clock needs this chunk
            res.worst_stall = max(res.worst_stall, at - due)
            got += data
            res.received = len(got)
        await asyncio.sleep(max(0.0, play + window - time.perf_counter()))  # still playing
    with t.plain.open("rb") as fh:
        fh.seek(start)
        if bytes(got) != fh.read(len(got)):
            raise RuntimeError("the bytes differ from the file's")


async def bench_level(t: Target, k: int, pids: Pids, args: argparse.Namespace,
                      rng: random.Random) -> Level:
    starts = offsets(rng, t.size - int((args.window_s + args.ahead_s) * BYTES_PER_S), k)
    results = [StreamResult() for _ in range(k)]
    rss: list[float] = []
    done = asyncio.Event()

    async def sample_rss() -> None:
        while not done.is_set():
            with contextlib.suppress(OSError):
                rss.append(_rss_mib(pids.server))
            await asyncio.sleep(0.2)

    async with _session() as session:
        sampler = asyncio.create_task(sample_rss())
        cpu0 = pids.cpu()
        sent = time.perf_counter()
        play = sent + args.warmup_s
        limit = args.warmup_s + args.window_s + 30

        async def guarded(start: int, res: StreamResult) -> None:
            try:
                await asyncio.wait_for(one_stream(session, t, start, sent, play,
                                                  args.window_s, args.ahead_s, res), limit)
            except (RuntimeError, aiohttp.ClientError, TimeoutError) as exc:
                res.error = f"{type(exc).__name__}: {exc}"

        await asyncio.gather(*(guarded(s, r) for s, r in zip(starts, results, strict=True)))
        cpu1 = pids.cpu()
        done.set()
        await sampler
    await asyncio.sleep(1.0)
    after = _rss_mib(pids.server)
    async with _session() as session, session.post(t.base + "/bench/collect") as resp:
        freed = await resp.json()
    wall = cpu1["wall"] - cpu0["wall"]
    cpu_s = {name: round(cpu1[name] - cpu0[name], 3) for name in cpu0 if name != "wall"}
    errors = [r.error for r in results if r.error]
    worst = max((r.worst_stall for r in results), default=0.0)
    stalled = sum(r.worst_stall > STALL_LIMIT for r in results)
    return Level(k, not errors and stalled == 0,
                 ms([r.first_byte for r in results if not math.isnan(r.first_byte)]),
                 round(worst, 3), stalled, errors[:5], cpu_s,
                 {name: round(v / wall * 100, 1) for name, v in cpu_s.items()},
                 round(max(rss, default=math.nan), 1), round(after, 1),
                 round(freed["after_gc"], 1), round(freed["after_trim"], 1),
                 freed["collected"], round(wall, 2))


# --- set-up and the report -----------------------------------------------------------------
def _row(label: str, xs: Sequence[float], base: Sequence[float] | None = None) -> str:
    out = (f"  {label:40}{len(xs):>5}{pct(xs, 50) * 1000:>10.3f}{pct(xs, 95) * 1000:>10.3f}"
           f"{max(xs) * 1000:>10.3f}")
    if base:
        for q in (50, 95):
            r = pct(xs, q) / pct(base, q)
            out += f"{r:>10.0f}" if r >= 100 else f"{r:>10.2f}"
    return out


def report(args: argparse.Namespace, t: Target, seconds: int, ttfb: Latency, seek: Latency,
           parts: dict[str, list[float]], levels: list[Level], pids: Pids,
           logged: dict[str, int]) -> dict[str, Any]:
    route = "the API's GET /api/recordings/{id}/audio/redacted"
    print(f"\nQA replay: a {seconds / 60:.0f}-minute recording, 8 kHz 16-bit mono, "
          f"{t.size / 1e6:.1f} MB, stored encrypted (AES-256-GCM, 64 KiB segments) in "
          f"SeaweedFS; served by {route}, in its own process; {os.cpu_count()} cores shared "
          "by client, server, PostgreSQL and SeaweedFS; new TCP connection per request "
          "(keep-alive off); baseline: the same plaintext from a local file (page cache)\n")
    print(f"  {'latency (ms)':40}{'n':>5}{'p50':>10}{'p95':>10}{'max':>10}"
          f"{'p50 x bl':>10}{'p95 x bl':>10}")
    print(_row("baseline: open + read 64 KiB from 0", ttfb.file))
    print(_row("TTFB: bytes=0- first body byte", ttfb.http_first, ttfb.file))
    print(_row("TTFB: bytes=0- first 64 KiB", ttfb.http_piece, ttfb.file))
    print(_row("baseline: open + seek + read 64 KiB", seek.file))
    print(_row("seek: bytes=N- first body byte", seek.http_first, seek.file))
    print(_row("seek: bytes=N- first 64 KiB", seek.http_piece, seek.file))
    print("\n  where the first byte waits (Vault.stream_range in the bench process, random "
          "offsets; the server streams in batches of 16 segments = 1 MiB):")
    for name, xs in parts.items():
        print(_row(name, xs))
    print(f"\n  streams held: each reads <= {args.ahead_s:g} s ahead of a clock starting "
          f"{args.warmup_s:g} s after the requests, at {BYTES_PER_S} B/s for "
          f"{args.window_s:g} s; held = no stall > {STALL_LIMIT:g} s, bytes match")
    print(f"  {'K':>5}{'held':>6}{'1st byte p50':>14}{'p95':>9}{'max':>9}{'stall max':>11}"
          f"{'srv CPU':>9}{'pg CPU':>8}{'weed CPU':>9}{'client':>8}{'srv RSS':>10}"
          f"{'1 s later':>11}{'gc':>6}{'trim':>6}")
    for lv in levels:
        fb = lv.first_byte
        print(f"  {lv.k:>5}{'yes' if lv.held else 'NO':>6}{fb['p50_ms']:>11.1f} ms"
              f"{fb['p95_ms']:>9.1f}{fb['max_ms']:>9.1f}{lv.worst_stall_s:>9.2f} s"
              f"{lv.cpu_pct['server']:>8.1f}%{lv.cpu_pct['postgres']:>7.1f}%"
              f"{lv.cpu_pct['seaweedfs']:>8.1f}%{lv.cpu_pct['client']:>7.1f}%"
              f"{lv.server_rss_mib_peak:>6.0f} MiB{lv.server_rss_mib_after:>7.0f} MiB"
              f"{lv.server_rss_mib_after_gc:>6.0f}{lv.server_rss_mib_after_trim:>6.0f}")
        for e in lv.errors:
            print(f"        {e}")
    print("  (CPU: % of one core over the phase, which includes the warm-up; RSS: the "
          "server process, peak of samples every 0.2 s, 1 s after the streams closed, then "
          "after gc.collect() and after malloc_trim(0) in the server: the bench's own "
          "diagnostics, so each K starts from a trimmed heap)")
    held = [lv.k for lv in levels if lv.held]
    most = max(held, default=0)
    failed = next((lv.k for lv in levels if not lv.held), None)
    peak = _rss_mib(pids.server, "VmHWM")
    top = next((lv for lv in levels if lv.k == most), None)
    ratio_t = pct(ttfb.http_first, 50) / pct(ttfb.file, 50)
    ratio_s = pct(seek.http_first, 50) / pct(seek.file, 50)
    print(f"\n  largest K held: {most}"
          + (f" (K={failed} was not; the ramp stops there)" if failed else
             f" (the most tried; --max-streams {args.max_streams})")
          + f"; server RSS high-water mark {peak:.0f} MiB")
    print(f"  the server logged {sum(logged.values())} request errors with a traceback "
          f"(aiohttp's \"Error handling request\"): "
          + (", ".join(f"{n} x {kind}" for kind, n in sorted(logged.items())) or "none")
          + (" -- a client closing the connection before the body ended (here after 64 KiB"
             " or a stream's window; in a browser, every seek)" if logged else ""))
    summary = (f"SUMMARY replay: TTFB p50 {pct(ttfb.http_first, 50) * 1000:.1f} ms vs file "
               f"{pct(ttfb.file, 50) * 1000:.3f} ms (x{ratio_t:.0f}); seek p50 "
               f"{pct(seek.http_first, 50) * 1000:.1f} ms vs file "
               f"{pct(seek.file, 50) * 1000:.3f} ms (x{ratio_s:.0f}); streams held "
               f"{most}" + (f" at server CPU {top.cpu_pct['server']:.0f}% RSS "
                            f"{top.server_rss_mib_peak:.0f} MiB" if top else ""))
    print("\n" + summary)

    def lat(x: Latency) -> dict[str, Any]:
        return {"http_first_byte": ms(x.http_first), "http_first_64k": ms(x.http_piece),
                "file_64k": ms(x.file),
                "ratio_first_byte_p50": pct(x.http_first, 50) / pct(x.file, 50),
                "ratio_first_byte_p95": pct(x.http_first, 95) / pct(x.file, 95),
                "ratio_first_64k_p50": pct(x.http_piece, 50) / pct(x.file, 50),
                "ratio_first_64k_p95": pct(x.http_piece, 95) / pct(x.file, 95)}

    return {"recording_seconds": seconds, "bytes": t.size, "route": "api",
            "keep_alive": False, "cores": os.cpu_count(),
            "ttfb": lat(ttfb), "seek": lat(seek),
            "breakdown": {name: ms(xs) for name, xs in parts.items()},
            "streams": {"levels": [asdict(lv) for lv in levels], "largest_held": most,
                        "window_s": args.window_s, "warmup_s": args.warmup_s,
                        "ahead_s": args.ahead_s, "stall_limit_s": STALL_LIMIT,
                        "server_rss_hwm_mib": round(peak, 1)},
            "server_logged_errors": logged,
            "summary": summary}


async def sign_in(base: str) -> str:
    async with _session() as session, session.post(
            base + "/api/tokens", json={"user": USER, "password": PASSWORD}) as resp:
        body = await resp.json()
        if resp.status != 201:
            raise SystemExit(f"sign-in answered {resp.status}: {body.get('error')}")
        token: str = body["token"]
        return token


async def client(args: argparse.Namespace, t: Target, pids: Pids, vault: Vault,
                 rid: uuid.UUID, seconds: int) -> dict[str, Any]:
    progress(f"TTFB x {args.reps} and seeks x {args.seeks} (each beside the file baseline)")
    ttfb, seek = await bench_latency(t, args.reps, args.seeks, args.seed)
    progress("first-byte breakdown in this process")
    parts = await asyncio.to_thread(breakdown, vault, rid, t.size, min(args.seeks, 30),
                                    args.seed + 1)
    levels: list[Level] = []
    rng = random.Random(args.seed + 2)
    ks = list(QUICK_LEVELS if args.quick else LEVELS)
    while ks[-1] < args.max_streams:
        ks.append(ks[-1] * 2)
    for k in [k for k in ks if k < args.max_streams] + [args.max_streams]:
        progress(f"streams: K={k}")
        level = await bench_level(t, k, pids, args, rng)
        levels.append(level)
        progress(f"  K={k}: {'held' if level.held else 'NOT held'}, worst stall "
                 f"{level.worst_stall_s:.2f} s, first byte p95 {level.first_byte['p95_ms']:.0f} ms")
        if not level.held:
            break
    async with _session() as session, session.get(t.base + "/bench/stats") as resp:
        logged: dict[str, int] = await resp.json()
    return report(args, t, seconds, ttfb, seek, parts, levels, pids, logged)


def bench(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    seconds = args.minutes * 60
    pg = EmbeddedPostgres(work / "pg")
    sw = EmbeddedSeaweed(work / "sw", s3_port=0)
    server: subprocess.Popen[str] | None = None
    plain = work / "plain" / "recording.wav"
    plain.parent.mkdir(mode=0o700)
    try:
        progress("starting the embedded PostgreSQL and SeaweedFS")
        dsn = pg.start()
        sw.start()
        migrate(dsn)
        settings = load_settings(None, state_dir=work / "state")
        store = open_object_store(settings, sw)
        store.ensure_bucket(False)
        keyring = work / "keys" / "keyring.json"
        keys = LocalKeyring(keyring)
        vault = Vault(dsn, store, keys, AccessLog(dsn, load_audit_key(dsn, keys)))
        Users(dsn, PasswordHasher(**CHEAP)).add(USER, "qa", PASSWORD)  # type: ignore[arg-type]
        progress(f"writing a {args.minutes}-minute WAV (0600) and storing it encrypted")
        size = write_wav(plain, seconds, args.seed)
        began = time.perf_counter()
        rid = store_recording(vault, plain, seconds)
        progress(f"stored {size / 1e6:.1f} MB in {time.perf_counter() - began:.1f} s")
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        access, secret = sw.credentials
        config = {"dsn": dsn, "port": port, "state": str(work / "state"),
                  "endpoint": sw.endpoint_url, "access": access, "secret": secret,
                  "bucket": store.bucket, "keyring": str(keyring)}
        progress("starting the QA app in a child process")
        server = subprocess.Popen([sys.executable, __file__, "--serve"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert server.stdin is not None and server.stdout is not None
        server.stdin.write(json.dumps(config))    # not on the command line: credentials
        server.stdin.close()
        ready = server.stdout.readline().split()
        if not ready or ready[0] != "ready":
            raise SystemExit("the QA app did not start")
        token = asyncio.run(sign_in(base))
        audio = f"{base}/api/recordings/{rid}/audio/redacted"
        t = Target(base, audio, token, size, plain)
        pids = Pids(server.pid, postmaster(pg), sw.pid)
        return asyncio.run(client(args, t, pids, vault, rid, seconds))
    finally:
        if server is not None:
            stop_server(server)
        plain.unlink(missing_ok=True)
        progress(f"plaintext baseline file deleted: {not plain.exists()}")
        sw.stop()
        pg.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--minutes", type=int, default=60, help="recording length")
    ap.add_argument("--reps", type=int, default=40, help="TTFB repetitions")
    ap.add_argument("--seeks", type=int, default=100, help="random seeks")
    ap.add_argument("--max-streams", type=int, default=256)
    ap.add_argument("--window-s", type=float, default=10.0, help="playback window")
    ap.add_argument("--warmup-s", type=float, default=3.0,
                    help="the clock starts this long after the requests are sent")
    ap.add_argument("--ahead-s", type=float, default=5.0,
                    help="a player reads at most this far ahead of its clock")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--quick", action="store_true",
                    help="10 minutes, 15 TTFB, 30 seeks, K up to 16, 5 s window")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_serve(json.loads(sys.stdin.read())))
        return
    if args.quick:
        args.minutes, args.reps, args.seeks = 10, 15, 30
        args.max_streams, args.window_s, args.warmup_s = 16, 5.0, 2.0
    if min(args.minutes, args.reps, args.seeks, args.max_streams) < 1 or args.window_s <= 0:
        raise SystemExit("--minutes, --reps, --seeks, --max-streams >= 1; --window-s > 0")
    with tempfile.TemporaryDirectory(prefix="cv-replay-bench-") as tmp:
        figures = bench(args, Path(tmp))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
