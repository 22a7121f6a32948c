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
import io
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import soundfile as sf
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
    print(f"  ratio encrypted/bare AESGCM    {aes / enc:.3f}  (the cipher alone is the "
          "upper bound, 1.0; the rest is the network and SeaweedFS)")


def bench_pipeline(vault: Vault, workdir: Path, calls: int, sw: EmbeddedSeaweed,
                   keyring: Path) -> None:
    """Register `calls` recordings, then time 1 or 2 `callvault worker` processes (each
    with cores/workers Whisper threads) until all are stored. Model loading is included."""
    sample = workdir / "sample.wav"
    make_sample(sample)
    pipeline.ensure_job_schema(vault.dsn)
    cores = os.cpu_count() or 2
    access, secret = sw.credentials
    rates = {}
    for workers in (1, 2):
        state = workdir / f"state-{workers}"
        settings = load_settings(None, state_dir=state)
        rt = pipeline.Runtime(dsn=vault.dsn, vault=vault, spool_dir=settings.spool_dir,
                              redact_config=wiring.redact_config(settings),
                              transcriber=lambda s=settings: wiring.transcriber(s))
        ids = []
        for i in range(calls):
            src = workdir / f"in-{workers}-{i}.wav"
            shutil.copyfile(sample, src)
            ids.append(pipeline.register(rt, src).recording_id)
        env = {**os.environ, "CALLVAULT_STATE_DIR": str(state),
               "CALLVAULT_DATABASE_URL": vault.dsn,
               "CALLVAULT_S3_ENDPOINT_URL": sw.endpoint_url,
               "CALLVAULT_S3_ACCESS_KEY_ID": access, "CALLVAULT_S3_SECRET_ACCESS_KEY": secret,
               "CALLVAULT_S3_BUCKET": vault.store.bucket,
               "CALLVAULT_KEYRING_FILE": str(keyring),
               "CALLVAULT_WHISPER_THREADS": str(max(1, cores // workers))}
        env.pop("CALLVAULT_CONFIG", None)
        t0 = time.perf_counter()
        procs = [subprocess.Popen([sys.executable, "-c",
                                   "from callvault.cli import main; main()", "worker"],
                                  env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL) for _ in range(workers)]
        try:
            while not all(pipeline.recording_state(vault.dsn, r) in ("stored", "failed")
                          for r in ids):
                time.sleep(0.2)
            elapsed = time.perf_counter() - t0
        finally:
            for p in procs:
                p.send_signal(signal.SIGTERM)
            for p in procs:
                p.wait(timeout=60)
        states = [pipeline.recording_state(vault.dsn, r) for r in ids]
        rates[workers] = calls / elapsed * 60
        print(f"pipeline, {workers} worker process(es): {calls} calls of "
              f"{sf.info(str(sample)).duration:.0f} s in {elapsed:.1f} s = "
              f"{rates[workers]:.1f} calls/min ({states.count('stored')} stored)")
    print(f"  ratio 2 workers / 1 worker     {rates[2] / rates[1]:.2f}  "
          f"({cores} cores shared by the workers' Whisper threads)")


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
                bench_pipeline(vault, work, args.calls, sw, work / "keys" / "keyring.json")
        finally:
            sw.stop()
            pg.stop()


if __name__ == "__main__":
    main()
