"""The post-call pipeline end to end on the real PostgreSQL, SeaweedFS and Whisper model:
register + enqueue in one transaction, raw/redacted/transcript stored encrypted, and the
faults it must survive (storage down, a worker SIGKILLed, PostgreSQL down)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import soundfile as sf

from callvault.config import Settings, load_settings
from callvault.demo import make_sample
from recordings import pipeline
from redaction.errors import NotAudio
from storage.audit import AccessLog
from storage.db import EmbeddedPostgres, connect, migrate
from storage.errors import StorageUnavailable
from storage.s3 import EmbeddedSeaweed, ObjectStore
from storage.vault import Vault, load_audit_key
from tests.recordings.pipeline_support import (
    BackgroundWorker,
    jobs,
    runtime,
    status,
    wait_for,
)
from tests.storage.vault_fixture import COMPLIANCE, QA

SECRETS = ("4820", "1735", "4111", "0192")


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return load_settings(None, state_dir=tmp_path_factory.mktemp("state"))


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sample") / "call.wav"
    make_sample(path)
    return path


def _copy(sample: Path, tmp_path: Path, name: str = "call.wav") -> Path:
    dst = tmp_path / "pbx" / name
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(sample, dst)
    return dst


def _register(rt: pipeline.Runtime, src: Path, **kw: object) -> pipeline.Registered:
    return pipeline.register(rt, src, **kw)  # type: ignore[arg-type]


def _versions(v: Vault, rid: uuid.UUID) -> dict[str, int]:
    return {var: len(v.store.list_versions(v.get_object(rid, var).s3_key))
            for var in ("raw", "redacted", "transcript")}


def test_ingest_end_to_end(vault: Vault, settings: Settings, sample: Path,
                           tmp_path: Path) -> None:
    """A recording goes in; raw, redacted audio and transcript come out encrypted, the
    source and the spool copy are gone, and QA hears the redacted audio only."""
    rt = runtime(vault, settings, tmp_path / "spool")
    src = _copy(sample, tmp_path)
    reg = _register(rt, src, call_id="call-0001", agent="alex")
    assert reg.created and not src.exists()
    spooled = list((tmp_path / "spool").iterdir())
    assert len(spooled) == 1 and b"RIFF" not in spooled[0].read_bytes()[:4096]
    with BackgroundWorker(rt):
        wait_for(lambda: status(vault.dsn, reg.recording_id) in ("stored", "failed"), 300,
                 "the recording to be stored")
    assert status(vault.dsn, reg.recording_id) == "stored"
    assert list((tmp_path / "spool").iterdir()) == []
    assert _versions(vault, reg.recording_id) == {"raw": 1, "redacted": 1, "transcript": 1}

    doc = json.loads(vault.read_all(QA, reg.recording_id, "transcript"))
    text = " ".join(c["text"] for c in doc["channels"])
    assert "[" in text and not any(s in text for s in SECRETS)
    assert {s["label"] for s in doc["spans"]} >= {"DTMF"}
    red = tmp_path / "red.wav"
    red.write_bytes(vault.read_all(QA, reg.recording_id, "redacted"))
    raw = tmp_path / "raw.wav"
    raw.write_bytes(vault.read_all(COMPLIANCE, reg.recording_id, "raw",
                                   reason="pipeline test compares lengths"))
    assert raw.read_bytes() == sample.read_bytes()
    assert sf.info(str(red)).frames == sf.info(str(sample)).frames
    assert red.read_bytes() != raw.read_bytes()


def test_same_call_registered_once(vault: Vault, settings: Settings, sample: Path,
                                   tmp_path: Path) -> None:
    """A call id registered twice gives the first recording back and stores nothing new."""
    rt = runtime(vault, settings, tmp_path / "spool")
    first = _register(rt, _copy(sample, tmp_path, "a.wav"), call_id="dup-1")
    again = _register(rt, _copy(sample, tmp_path, "b.wav"), call_id="dup-1")
    assert not again.created and again.recording_id == first.recording_id
    with connect(vault.dsn) as conn:
        n = conn.execute("SELECT count(*) AS n FROM recordings").fetchone()
    assert n is not None and n["n"] == 1
    assert len(list((tmp_path / "spool").iterdir())) == 1


def test_bad_audio_refused_before_anything_is_written(vault: Vault, settings: Settings,
                                                      tmp_path: Path) -> None:
    """Not-a-WAV input is refused with its own error; no row, no job, source kept."""
    rt = runtime(vault, settings, tmp_path / "spool")
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"this is not audio" * 100)
    with pytest.raises(NotAudio):
        _register(rt, bad)
    assert bad.exists()
    with connect(vault.dsn) as conn:
        n = conn.execute("SELECT count(*) AS n FROM recordings").fetchone()
        j = conn.execute("SELECT count(*) AS n FROM procrastinate_jobs").fetchone()
    assert n is not None and n["n"] == 0 and j is not None and j["n"] == 0


# ---------------------------------------------------------------- faults

@pytest.fixture
def own_seaweed(tmp_path: Path) -> Iterator[EmbeddedSeaweed]:
    """A SeaweedFS of this test's own, so it can be stopped and started again."""
    sw = EmbeddedSeaweed(tmp_path / "sw-state", s3_port=0)
    sw.start()
    yield sw
    sw.stop()


def test_storage_down_while_ingesting(pg_dsn: str, own_seaweed: EmbeddedSeaweed,
                                      settings: Settings, sample: Path,
                                      tmp_path: Path) -> None:
    """SeaweedFS stopped: the job waits and retries; when storage returns the recording is
    stored once."""
    from storage.keys import LocalKeyring
    from storage.s3 import open_object_store
    pipeline.ensure_job_schema(pg_dsn)
    store = open_object_store(settings, own_seaweed)
    store.ensure_bucket(True)
    keys = LocalKeyring(tmp_path / "keyring.json")
    v = Vault(pg_dsn, store, keys, AccessLog(pg_dsn, load_audit_key(pg_dsn, keys)))
    rt = runtime(v, settings, tmp_path / "spool", retry_base_seconds=0.5)
    own_seaweed.stop()
    reg = _register(rt, _copy(sample, tmp_path))
    with BackgroundWorker(rt):
        wait_for(lambda: any(j["attempts"] >= 2 for j in jobs(pg_dsn, reg.recording_id)), 60,
                 "the upload to fail and be retried")
        assert status(pg_dsn, reg.recording_id) == "queued"
        own_seaweed.start()
        wait_for(lambda: status(pg_dsn, reg.recording_id) in ("stored", "failed"), 300,
                 "the recording to be stored after storage came back")
    assert status(pg_dsn, reg.recording_id) == "stored"
    assert _versions(v, reg.recording_id) == {"raw": 1, "redacted": 1, "transcript": 1}


def test_worker_killed_mid_job(vault: Vault, settings: Settings, sample: Path,
                               tmp_path: Path, seaweed: EmbeddedSeaweed) -> None:
    """A worker SIGKILLed in the middle of redaction: another worker takes the job over
    once the dead one stops beating, and the recording is stored once."""
    state = tmp_path / "state"
    rt = runtime(vault, settings, state / "spool", stalled_seconds=6.0)
    reg = _register(rt, _copy(sample, tmp_path))
    access_key, secret_key = seaweed.credentials
    env = {**os.environ,
           "CALLVAULT_STATE_DIR": str(state),
           "CALLVAULT_DATABASE_URL": vault.dsn,
           "CALLVAULT_S3_ENDPOINT_URL": seaweed.endpoint_url,
           "CALLVAULT_S3_ACCESS_KEY_ID": access_key,
           "CALLVAULT_S3_SECRET_ACCESS_KEY": secret_key,
           "CALLVAULT_S3_BUCKET": vault.store.bucket,
           "CALLVAULT_KEYRING_FILE": str(tmp_path / "keys" / "keyring.json"),  # the fixture's
           "CALLVAULT_JOB_STALLED_SECONDS": "6"}
    env.pop("CALLVAULT_CONFIG", None)
    log_file = (tmp_path / "worker.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-c", "from callvault.cli import main; main()",
                             "worker"], env=env, stdout=subprocess.DEVNULL,
                            stderr=log_file, start_new_session=True)
    try:
        wait_for(lambda: any(j["task_name"] == "callvault.redact" and j["status"] == "doing"
                             for j in jobs(vault.dsn, reg.recording_id)), 180,
                 "the subprocess worker to start redacting")
        time.sleep(1.0)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
        log_file.close()
    assert status(vault.dsn, reg.recording_id) == "processing"
    with BackgroundWorker(rt):
        wait_for(lambda: status(vault.dsn, reg.recording_id) in ("stored", "failed"), 300,
                 "another worker to finish the job")
    assert status(vault.dsn, reg.recording_id) == "stored"
    assert _versions(vault, reg.recording_id) == {"raw": 1, "redacted": 1, "transcript": 1}
    redact_jobs = [j for j in jobs(vault.dsn, reg.recording_id)
                   if j["task_name"] == "callvault.redact"]
    assert [j["status"] for j in redact_jobs] == ["succeeded"]


def test_postgres_down_reads_fail_closed(tmp_path: Path, object_store: ObjectStore
                                         ) -> None:
    """With PostgreSQL stopped, reading a recording fails with StorageUnavailable and
    nothing is returned (no access without a log line)."""
    from storage.keys import LocalKeyring
    from tests.storage.vault_fixture import new_recording
    pg = EmbeddedPostgres(tmp_path / "pgstate")
    dsn = pg.start()
    migrate(dsn)
    keys = LocalKeyring(tmp_path / "keyring.json")
    v = Vault(dsn, object_store, keys, AccessLog(dsn, load_audit_key(dsn, keys)))
    rid = new_recording(dsn)
    import io
    v.put_plaintext(rid, "redacted", io.BytesIO(b"x" * 5000), 5000)
    assert v.read_all(QA, rid, "redacted") == b"x" * 5000
    pg.stop()
    with pytest.raises(StorageUnavailable):
        v.read_all(QA, rid, "redacted")



def test_registration_is_one_transaction(vault: Vault, settings: Settings, sample: Path,
                                         tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                         ) -> None:
    """If enqueueing the job fails, the recording row, its object row and the spool copy
    are all gone and the source is kept: registration is all or nothing."""
    rt = runtime(vault, settings, tmp_path / "spool")
    src = _copy(sample, tmp_path)

    def broken(_app: object) -> object:
        raise StorageUnavailable("job queue unreachable (test)")

    monkeypatch.setattr(pipeline, "store_raw_task", broken)
    with pytest.raises(StorageUnavailable):
        _register(rt, src, call_id="tx-1")
    assert src.exists()
    assert list((tmp_path / "spool").iterdir()) == []
    with connect(vault.dsn) as conn:
        rec = conn.execute("SELECT count(*) AS n FROM recordings").fetchone()
        obj = conn.execute("SELECT count(*) AS n FROM objects").fetchone()
    assert rec is not None and rec["n"] == 0 and obj is not None and obj["n"] == 0
