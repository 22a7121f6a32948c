"""Vault throughput on this machine, as ratios against baselines measured in the same run.

1. encrypt-and-upload (CVLT streaming AES-256-GCM + S3 PUT) against a plain upload of the
   same bytes to the same SeaweedFS (target ratio >= 0.9), and against a bare AESGCM
   call over the same bytes in memory (the upper bound of the cipher alone);
2. the whole pipeline (register, upload raw, transcribe, redact, verify, store redacted
   audio and transcript) with 1 and with 2 workers, in recordings per minute.

Everything runs on the embedded PostgreSQL and SeaweedFS started in a temporary folder.
Usage: .venv/bin/python bench/vault_throughput.py [--mib 256] [--rounds 3] [--calls 4]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import shutil
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from callvault import wiring
from callvault.config import load_settings
from callvault.demo import make_sample
from recordings import pipeline
from storage import crypto
from storage.audit import AccessLog
from storage.db import EmbeddedPostgres, connect, migrate
from storage.keys import LocalKeyring
from storage.s3 import EmbeddedSeaweed, open_object_store
from storage.vault import Vault, load_audit_key


class _Repeat(io.RawIOBase):
    """`size` bytes of a repeated random block, generated as read (no big buffer)."""

    def __init__(self, block: bytes, size: int) -> None:
        self._block, self._left, self._pos = block, size, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buf: memoryview) -> int:  # type: ignore[override]
        n = min(len(buf), self._left)
        out = 0
        while out < n:
            take = min(n - out, len(self._block) - self._pos)
            buf[out:out + take] = self._block[self._pos:self._pos + take]
            out += take
            self._pos = (self._pos + take) % len(self._block)
        self._left -= n
        return n


def _mbps(nbytes: int, seconds: float) -> float:
    return nbytes / seconds / 1e6


def bench_upload(vault: Vault, size: int, rounds: int) -> None:
    block = os.urandom(1 << 20)
    store = vault.store
    plain_t, enc_t, aes_t = [], [], []
    for r in range(rounds):
        t0 = time.perf_counter()
        store.put_stream(f"bench/plain-{r}", io.BufferedReader(_Repeat(block, size)),
                         content_length=size)
        plain_t.append(time.perf_counter() - t0)

        rid = uuid.uuid4()
        with connect(vault.dsn) as conn:
            conn.execute("INSERT INTO recordings (id, source_name) VALUES (%s, 'bench.wav')",
                         (rid,))
            conn.commit()
        t0 = time.perf_counter()
        vault.put_plaintext(rid, "raw", io.BufferedReader(_Repeat(block, size)), size)
        enc_t.append(time.perf_counter() - t0)

        key, nonce = AESGCM.generate_key(256), os.urandom(12)
        aead = AESGCM(key)
        seg = crypto.DEFAULT_SEGMENT
        t0 = time.perf_counter()
        done = 0
        piece = block[:seg]
        while done < size:
            aead.encrypt(nonce, piece, b"")
            done += seg
        aes_t.append(time.perf_counter() - t0)
    plain, enc, aes = (statistics.median(x) for x in (plain_t, enc_t, aes_t))
    print(f"upload of {size / 2**20:.0f} MiB, median of {rounds}:")
    print(f"  plain S3 upload          {_mbps(size, plain):8.1f} MB/s")
    print(f"  encrypt-and-upload       {_mbps(size, enc):8.1f} MB/s")
    print(f"  bare AESGCM (in memory)  {_mbps(size, aes):8.1f} MB/s")
    print(f"  ratio encrypted/plain upload   {plain / enc:.3f}  (target >= 0.9)")
    print(f"  ratio encrypted/bare AESGCM    {aes / enc:.3f}  (upper bound 1.0)")


def bench_pipeline(vault: Vault, workdir: Path, calls: int) -> None:
    settings = load_settings(None, state_dir=workdir / "state")
    sample = workdir / "sample.wav"
    make_sample(sample)
    wiring.transcriber(settings)  # load once, outside the timing
    pipeline.ensure_job_schema(vault.dsn)
    rates = {}
    for workers in (1, 2):
        rt = pipeline.Runtime(dsn=vault.dsn, vault=vault, spool_dir=workdir / "spool",
                              redact_config=wiring.redact_config(settings),
                              transcriber=lambda: wiring.transcriber(settings))
        ids = []
        for i in range(calls):
            src = workdir / f"in-{workers}-{i}.wav"
            shutil.copyfile(sample, src)
            ids.append(pipeline.register(rt, src).recording_id)
        t0 = time.perf_counter()

        def done(ids: list[uuid.UUID] = ids) -> bool:
            return all(pipeline.recording_state(vault.dsn, r) in ("stored", "failed")
                       for r in ids)

        def run(rt: pipeline.Runtime = rt) -> None:
            async def main() -> None:
                app = pipeline.build_app(rt)
                async with app.open_async():
                    await pipeline.run_worker(rt, app, stop=done,
                                              install_signal_handlers=False)
            asyncio.run(main())

        threads = [threading.Thread(target=run) for _ in range(workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - t0
        states = [pipeline.recording_state(vault.dsn, r) for r in ids]
        rates[workers] = calls / elapsed * 60
        print(f"pipeline, {workers} worker(s): {calls} calls in {elapsed:.1f} s = "
              f"{rates[workers]:.1f} calls/min ({states.count('stored')} stored)")
    print(f"  ratio 2 workers / 1 worker     {rates[2] / rates[1]:.2f}  "
          f"(2 cores; Whisper already uses both)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--calls", type=int, default=4)
    ap.add_argument("--skip-pipeline", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="cv-bench-") as tmp:
        work = Path(tmp)
        pg = EmbeddedPostgres(work / "pg")
        dsn = pg.start()
        sw = EmbeddedSeaweed(work / "sw", s3_port=0)
        sw.start()
        try:
            migrate(dsn)
            settings = load_settings(None, state_dir=work / "state")
            store = open_object_store(settings, sw)
            store.ensure_bucket(False)
            keys = LocalKeyring(work / "keys" / "keyring.json")
            vault = Vault(dsn, store, keys, AccessLog(dsn, load_audit_key(dsn, keys)))
            bench_upload(vault, args.mib << 20, args.rounds)
            if not args.skip_pipeline:
                bench_pipeline(vault, work, args.calls)
        finally:
            sw.stop()
            pg.stop()


if __name__ == "__main__":
    main()
