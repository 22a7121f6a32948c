"""Tests for storage.keys: the local keyring file and AWS KMS (emulated by moto's server)."""

from __future__ import annotations

import json
import multiprocessing
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.stub import Stubber
from moto.server import ThreadedMotoServer

from callvault.config import load_settings
from storage.errors import IntegrityError, KeyUnavailable, StorageError
from storage.keys import (
    PURPOSES,
    KmsKeyProvider,
    LocalKeyring,
    WrappedKey,
    open_key_provider,
)


def flip(wrapped: WrappedKey, pos: int) -> WrappedKey:
    """The same wrapped key with one bit flipped at byte `pos`."""
    blob = bytearray(wrapped.blob)
    blob[pos] ^= 0x01
    return WrappedKey(wrapped.key_id, bytes(blob))


# --- local keyring ---------------------------------------------------------------------


@pytest.fixture
def ring_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "keys" / "keyring.json"


def test_keyring_created_private_on_first_use(ring_path: Path) -> None:
    """First use writes a 0600 keyring in a 0700 folder with one KEK per purpose."""
    ring = LocalKeyring(ring_path)
    assert not ring_path.exists()
    assert ring.current_key_id("raw") == "local:raw:1"
    assert stat.S_IMODE(ring_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(ring_path.parent.stat().st_mode) == 0o700
    doc = json.loads(ring_path.read_text())
    assert doc["format"] == "callvault-keyring/1"
    assert doc["current"] == {p: f"local:{p}:1" for p in PURPOSES}
    assert sorted(k["purpose"] for k in doc["keys"]) == sorted(PURPOSES)


def test_local_data_key_round_trip(ring_path: Path) -> None:
    """A generated DEK unwraps to itself for each purpose, in a second instance too."""
    ring = LocalKeyring(ring_path)
    for purpose in PURPOSES:
        dek, wrapped = ring.generate_data_key(purpose)
        assert len(dek) == 32 and wrapped.key_id == f"local:{purpose}:1"
        assert dek not in wrapped.blob
        assert ring.unwrap(wrapped, purpose) == dek
        assert LocalKeyring(ring_path).unwrap(wrapped, purpose) == dek


def test_purposes_use_different_keks(ring_path: Path) -> None:
    """raw, redacted, audit and customer have different KEK material."""
    LocalKeyring(ring_path).current_key_id("raw")
    materials = {k["material"] for k in json.loads(ring_path.read_text())["keys"]}
    assert len(materials) == 4


def test_local_purpose_mismatch_fails(ring_path: Path) -> None:
    """A raw DEK cannot be unwrapped as redacted, even if its key id is relabelled."""
    ring = LocalKeyring(ring_path)
    _, wrapped = ring.generate_data_key("raw")
    with pytest.raises(IntegrityError):
        ring.unwrap(wrapped, "redacted")
    _, redacted = ring.generate_data_key("redacted")
    with pytest.raises(IntegrityError):
        ring.unwrap(WrappedKey(redacted.key_id, wrapped.blob), "redacted")


def test_rotate_adds_versions_and_old_keys_still_unwrap(ring_path: Path) -> None:
    """rotate makes version 2 current for every purpose; version-1 wraps still open."""
    ring = LocalKeyring(ring_path)
    dek, old = ring.generate_data_key("raw")
    assert ring.rotate() == ["local:raw:2", "local:redacted:2", "local:audit:2",
                             "local:customer:2"]
    assert ring.current_key_id("raw") == "local:raw:2"
    assert ring.unwrap(old, "raw") == dek
    _, fresh = ring.generate_data_key("raw")
    assert fresh.key_id == "local:raw:2"
    assert LocalKeyring(ring_path).current_key_id("audit") == "local:audit:2"


def test_rewrap_moves_to_current_key(ring_path: Path) -> None:
    """rewrap puts the same DEK under the new KEK; rewrapping a current wrap is a no-op."""
    ring = LocalKeyring(ring_path)
    dek, old = ring.generate_data_key("redacted")
    ring.rotate()
    new = ring.rewrap(old, "redacted")
    assert new.key_id == "local:redacted:2" and new.blob != old.blob
    assert ring.unwrap(new, "redacted") == dek
    assert ring.rewrap(new, "redacted") == new
    with pytest.raises(IntegrityError):
        ring.rewrap(old, "raw")


@pytest.mark.parametrize("pos", [0, 11, 12, 30, 59])
def test_tampered_local_blob_fails(ring_path: Path, pos: int) -> None:
    """A flipped bit in the nonce, the wrapped key or the tag raises IntegrityError."""
    ring = LocalKeyring(ring_path)
    _, wrapped = ring.generate_data_key("audit")
    with pytest.raises(IntegrityError):
        ring.unwrap(flip(wrapped, pos), "audit")
    with pytest.raises(IntegrityError):
        ring.unwrap(WrappedKey(wrapped.key_id, wrapped.blob[:-1]), "audit")


def test_unknown_key_id_is_unavailable(ring_path: Path) -> None:
    """A key id the keyring never had raises KeyUnavailable."""
    ring = LocalKeyring(ring_path)
    _, wrapped = ring.generate_data_key("raw")
    for key_id in ("local:raw:9", "arn:aws:kms:us-east-1:000000000000:key/x"):
        with pytest.raises(KeyUnavailable):
            ring.unwrap(WrappedKey(key_id, wrapped.blob), "raw")


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620])
def test_loose_keyring_is_refused(ring_path: Path, mode: int) -> None:
    """A keyring readable or writable by group or others is refused with a clear message."""
    LocalKeyring(ring_path).current_key_id("raw")
    ring_path.chmod(mode)
    with pytest.raises(StorageError, match="chmod 600"):
        LocalKeyring(ring_path).current_key_id("raw")


def test_loosened_keyring_is_refused_by_a_running_instance(ring_path: Path) -> None:
    """An instance that already loaded the keyring refuses it once it becomes readable."""
    ring = LocalKeyring(ring_path)
    _, wrapped = ring.generate_data_key("raw")
    ring_path.chmod(0o644)
    with pytest.raises(StorageError, match="group or others"):
        ring.unwrap(wrapped, "raw")


def test_damaged_keyring_file_is_refused_without_echoing_it(ring_path: Path) -> None:
    """A keyring that is not valid JSON of the format raises StorageError, no contents."""
    LocalKeyring(ring_path).current_key_id("raw")
    text = ring_path.read_text()
    material = json.loads(text)["keys"][0]["material"]
    ring_path.write_text(text.replace('"format"', '"formt"'))
    with pytest.raises(StorageError, match="damaged") as info:
        LocalKeyring(ring_path).current_key_id("raw")
    assert material not in str(info.value)


def test_no_secret_in_reprs(ring_path: Path) -> None:
    """Neither a WrappedKey nor the keyring shows key material in its repr."""
    ring = LocalKeyring(ring_path)
    _, wrapped = ring.generate_data_key("raw")
    assert wrapped.blob.hex() not in repr(wrapped) and "blob" not in repr(wrapped)
    assert "material" not in repr(ring)


def _rotate_many(path: str, times: int, barrier: Any) -> None:
    """Child process: wait for the others, then rotate `times` times."""
    ring = LocalKeyring(Path(path))
    barrier.wait()
    for _ in range(times):
        ring.rotate()


def test_concurrent_rotation_keeps_every_key(ring_path: Path) -> None:
    """Four processes rotating at once lose no key version and leave no temp files."""
    LocalKeyring(ring_path).current_key_id("raw")
    ctx = multiprocessing.get_context("spawn")
    workers, times = 4, 5
    barrier = ctx.Barrier(workers)
    procs = [ctx.Process(target=_rotate_many, args=(str(ring_path), times, barrier))
             for _ in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    doc = json.loads(ring_path.read_text())
    last = 1 + workers * times
    for purpose in PURPOSES:
        versions = sorted(int(k["id"].rsplit(":", 1)[1]) for k in doc["keys"]
                          if k["purpose"] == purpose)
        assert versions == list(range(1, last + 1))
        assert doc["current"][purpose] == f"local:{purpose}:{last}"
    assert sorted(p.name for p in ring_path.parent.iterdir()) == ["keyring.json",
                                                                 "keyring.json.lock"]


def test_open_key_provider_local(tmp_path: Path) -> None:
    """The default settings give the local keyring at settings.keyring_path."""
    settings = load_settings(None, state_dir=tmp_path)
    provider = open_key_provider(settings)
    assert isinstance(provider, LocalKeyring) and provider.name == "local"
    provider.current_key_id("raw")
    assert settings.keyring_path.is_file()


def test_open_key_provider_kms_needs_both_keys(tmp_path: Path) -> None:
    """key_provider = kms without both key ids is refused, naming the settings."""
    settings = load_settings(None, state_dir=tmp_path, key_provider="kms",
                             kms_raw_key_id="k1")
    with pytest.raises(StorageError, match="kms_redacted_key_id"):
        open_key_provider(settings)


# --- AWS KMS, emulated by moto's server --------------------------------------------------


@pytest.fixture(scope="module")
def kms_url() -> Iterator[str]:
    """AWS KMS emulated by moto, as a real HTTP server on a loopback port."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def kms_client(url: str) -> Any:
    """A KMS client for the emulator with dummy credentials passed explicitly."""
    session = boto3.session.Session(aws_access_key_id="testing",
                                    aws_secret_access_key="testing",
                                    region_name="us-east-1")
    return session.client("kms", endpoint_url=url,
                          config=Config(retries={"max_attempts": 1, "mode": "standard"}))


@pytest.fixture
def kms(kms_url: str) -> tuple[Any, str, str]:
    """A client and two fresh KMS keys (raw, redacted) in the emulator."""
    client = kms_client(kms_url)
    raw = client.create_key(Description="callvault raw")["KeyMetadata"]["KeyId"]
    redacted = client.create_key(Description="callvault redacted")["KeyMetadata"]["KeyId"]
    return client, raw, redacted


def test_kms_generate_and_unwrap(kms: tuple[Any, str, str]) -> None:
    """GenerateDataKey gives a 32-byte DEK that Decrypt returns, wrapped under the ARN."""
    client, raw, redacted = kms
    provider = KmsKeyProvider(client, raw, redacted)
    for purpose in PURPOSES:
        dek, wrapped = provider.generate_data_key(purpose)
        assert len(dek) == 32
        assert wrapped.key_id == provider.current_key_id(purpose)
        assert wrapped.key_id.startswith("arn:") and wrapped.key_id.endswith(
            raw if purpose == "raw" else redacted)
        assert provider.unwrap(wrapped, purpose) == dek


def test_kms_purpose_binding(kms: tuple[Any, str, str]) -> None:
    """A DEK unwraps only for its own purpose, including audit vs redacted on one key."""
    client, raw, redacted = kms
    provider = KmsKeyProvider(client, raw, redacted)
    wraps = {p: provider.generate_data_key(p)[1] for p in PURPOSES}
    assert wraps["raw"].key_id != wraps["redacted"].key_id
    assert wraps["redacted"].key_id == wraps["audit"].key_id
    for wrapped_for in PURPOSES:
        for asked in PURPOSES:
            if asked != wrapped_for:
                with pytest.raises(IntegrityError):
                    provider.unwrap(wraps[wrapped_for], asked)


def test_kms_tampered_blob_fails_without_leaking(kms: tuple[Any, str, str]) -> None:
    """A flipped bit in the tag raises IntegrityError whose message holds no blob."""
    client, raw, redacted = kms
    provider = KmsKeyProvider(client, raw, redacted)
    dek, wrapped = provider.generate_data_key("raw")
    with pytest.raises(IntegrityError) as info:
        provider.unwrap(flip(wrapped, len(wrapped.blob) - 1), "raw")
    text = str(info.value)
    assert wrapped.blob.hex()[:16] not in text and dek.hex()[:16] not in text


def test_kms_unknown_key_is_unavailable(kms: tuple[Any, str, str]) -> None:
    """A wrapped key naming a KMS key that does not exist raises KeyUnavailable."""
    client, raw, redacted = kms
    provider = KmsKeyProvider(client, raw, redacted)
    _, wrapped = provider.generate_data_key("raw")
    missing = "00000000-0000-0000-0000-000000000000"
    with pytest.raises(KeyUnavailable):
        provider.unwrap(WrappedKey(missing, wrapped.blob), "raw")


def test_kms_rewrap_to_a_new_key(kms: tuple[Any, str, str]) -> None:
    """rewrap moves a DEK to the purpose's configured key; it unwraps to the same DEK."""
    client, raw, redacted = kms
    old_provider = KmsKeyProvider(client, raw, redacted)
    dek, old = old_provider.generate_data_key("raw")
    new_raw = client.create_key(Description="callvault raw 2")["KeyMetadata"]["KeyId"]
    provider = KmsKeyProvider(client, new_raw, redacted)
    new = provider.rewrap(old, "raw")
    assert new.key_id == provider.current_key_id("raw") != old.key_id
    assert provider.unwrap(new, "raw") == dek
    assert provider.unwrap(old, "raw") == dek  # the old key still opens old wraps
    with pytest.raises(IntegrityError):
        provider.rewrap(old, "redacted")


def test_kms_rotate_on_demand(kms: tuple[Any, str, str]) -> None:
    """rotate rotates each distinct KMS key once; ids stay, old and rewrapped DEKs open."""
    client, raw, redacted = kms
    provider = KmsKeyProvider(client, raw, redacted)
    dek, old = provider.generate_data_key("redacted")
    rotated = provider.rotate()
    assert rotated == [provider.current_key_id("raw"), provider.current_key_id("redacted")]
    for key in (raw, redacted):
        kinds = [r["RotationType"] for r in client.list_key_rotations(KeyId=key)["Rotations"]]
        assert kinds == ["ON_DEMAND"]
    assert provider.unwrap(old, "redacted") == dek
    new = provider.rewrap(old, "redacted")
    assert new.key_id == old.key_id and provider.unwrap(new, "redacted") == dek


def test_kms_rotation_refusal_is_explained() -> None:
    """A key KMS will not rotate on demand (botocore Stubber, no server) is a StorageError."""
    client = kms_client("http://127.0.0.1:9")
    provider = KmsKeyProvider(client, "raw-key", "redacted-key")
    with Stubber(client) as stub:
        stub.add_client_error("rotate_key_on_demand", "UnsupportedOperationException")
        with pytest.raises(StorageError, match="rotated by the operator") as info:
            provider.rotate()
    assert not isinstance(info.value, KeyUnavailable)


def test_kms_unreachable_is_key_unavailable() -> None:
    """A KMS endpoint nobody listens on raises KeyUnavailable."""
    provider = KmsKeyProvider(kms_client("http://127.0.0.1:9"), "raw-key", "redacted-key")
    with pytest.raises(KeyUnavailable, match="GenerateDataKey"):
        provider.generate_data_key("raw")


def test_kms_same_key_for_raw_and_redacted_is_refused() -> None:
    """Raw and redacted audio must not share a KMS key."""
    with pytest.raises(StorageError, match="different"):
        KmsKeyProvider(kms_client("http://127.0.0.1:9"), "k", "k")


def test_open_key_provider_kms(kms: tuple[Any, str, str], kms_url: str, tmp_path: Path,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    """key_provider = kms builds a working client from the settings and the boto3 chain."""
    client, raw, redacted = kms
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    settings = load_settings(None, state_dir=tmp_path, key_provider="kms",
                             kms_endpoint_url=kms_url, kms_raw_key_id=raw,
                             kms_redacted_key_id=redacted)
    provider = open_key_provider(settings)
    assert provider.name == "kms"
    dek, wrapped = provider.generate_data_key("raw")
    assert KmsKeyProvider(client, raw, redacted).unwrap(wrapped, "raw") == dek
