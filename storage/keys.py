"""Key-encryption keys (KEKs): they wrap the per-object data keys of `storage.crypto`.

This module owns where KEKs live and how a 32-byte data key (DEK) is wrapped, unwrapped,
re-wrapped after a rotation, and bound to its purpose. There are three purposes: raw
audio, redacted audio and transcripts, and the access log. The purpose is
authenticated into every wrap (AES-GCM AAD locally, the EncryptionContext in KMS), so a
raw-audio DEK can never be unwrapped as "redacted", whatever the database row claims.

Two providers share the `KeyProvider` protocol: `LocalKeyring`, a 0600 JSON file for one
machine, and `KmsKeyProvider`, AWS KMS (or anything that speaks its API). Third-party
failures become `KeyUnavailable` (the KEK is gone or unreachable) or `IntegrityError`
(the wrapped key is damaged or bound to another purpose). Key material and wrapped blobs
never appear in a repr, a log line or an exception message.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import json
import os
import re
import secrets
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, get_args

from botocore.exceptions import BotoCoreError, ClientError
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from storage.crypto import KEY_SIZE, new_data_key
from storage.errors import IntegrityError, KeyUnavailable, StorageError

if TYPE_CHECKING:
    from mypy_boto3_kms import KMSClient

    from callvault.config import Settings

Purpose = Literal["raw", "redacted", "audit", "customer"]
PURPOSES: tuple[Purpose, ...] = get_args(Purpose)


@dataclass(frozen=True)
class WrappedKey:
    """A data key encrypted under the KEK `key_id` ("local:raw:3" or a KMS key ARN)."""

    key_id: str
    blob: bytes = field(repr=False)


class KeyProvider(Protocol):
    """What the vault needs from a key store."""

    name: str

    def generate_data_key(self, purpose: Purpose) -> tuple[bytes, WrappedKey]:
        """A fresh 32-byte DEK and its wrapping under the current KEK of `purpose`."""
        ...

    def unwrap(self, wrapped: WrappedKey, purpose: Purpose) -> bytes:
        """The DEK; `KeyUnavailable` if its KEK is unknown or unreachable,
        `IntegrityError` if the blob is damaged or was wrapped for another purpose."""
        ...

    def rewrap(self, wrapped: WrappedKey, purpose: Purpose) -> WrappedKey:
        """The same DEK wrapped under the current KEK of `purpose`."""
        ...

    def rotate(self) -> list[str]:
        """Make new KEKs current for every purpose; old ones still unwrap."""
        ...

    def current_key_id(self, purpose: Purpose) -> str:
        """The id new wraps of `purpose` carry (compare with `WrappedKey.key_id`)."""
        ...


def open_key_provider(settings: Settings) -> KeyProvider:
    """The provider the settings name: the local keyring, or KMS with its two keys."""
    if settings.key_provider == "local":
        return LocalKeyring(settings.keyring_path)
    if not settings.kms_raw_key_id or not settings.kms_redacted_key_id:
        raise StorageError("key_provider = kms needs both kms_raw_key_id and "
                           "kms_redacted_key_id")
    return KmsKeyProvider(_kms_client(settings), settings.kms_raw_key_id,
                          settings.kms_redacted_key_id)


def _check_purpose(purpose: str) -> None:
    if purpose not in PURPOSES:
        raise ValueError(f"unknown key purpose {purpose!r}")


# --- the local keyring -----------------------------------------------------------------

_FORMAT = "callvault-keyring/1"
_LOCAL_ID = re.compile(r"^local:(raw|redacted|audit|customer):([1-9][0-9]{0,8})$")
_NONCE = 12
_WRAPPED_SIZE = _NONCE + KEY_SIZE + 16


@dataclass(frozen=True)
class _Kek:
    id: str
    purpose: Purpose
    version: int
    created: str
    material: bytes = field(repr=False)


@dataclass(frozen=True)
class _Ring:
    keys: dict[str, _Kek]
    current: dict[Purpose, str]

    def newest(self, purpose: Purpose) -> int:
        return max(k.version for k in self.keys.values() if k.purpose == purpose)


class LocalKeyring:
    """KEKs in one JSON file (mode 0600, parent folder 0700), created on first use.

    Every change is a locked read-modify-write replaced atomically, so concurrent
    rotations in several processes never lose a key, and readers never see half a file.
    """

    name = "local"

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock_path = path.with_name(path.name + ".lock")
        self._ring: _Ring | None = None
        self._stamp: tuple[int, ...] = ()

    def generate_data_key(self, purpose: Purpose) -> tuple[bytes, WrappedKey]:
        _check_purpose(purpose)
        ring = self._current_ring()
        dek = new_data_key()
        return dek, _wrap(ring.keys[ring.current[purpose]], dek)

    def unwrap(self, wrapped: WrappedKey, purpose: Purpose) -> bytes:
        _check_purpose(purpose)
        kek = self._current_ring().keys.get(wrapped.key_id)
        if kek is None:
            raise KeyUnavailable(f"key {wrapped.key_id[:200]!r} is not in the local keyring")
        if kek.purpose != purpose:
            raise IntegrityError(f"a data key wrapped for {kek.purpose} cannot be unwrapped "
                                 f"for {purpose}")
        if len(wrapped.blob) != _WRAPPED_SIZE:
            raise IntegrityError(f"wrapped data key under {kek.id} has the wrong length")
        try:
            return AESGCM(kek.material).decrypt(wrapped.blob[:_NONCE], wrapped.blob[_NONCE:],
                                                _aad(purpose, kek.id))
        except InvalidTag:
            raise IntegrityError(f"wrapped data key under {kek.id} failed authentication"
                                 ) from None

    def rewrap(self, wrapped: WrappedKey, purpose: Purpose) -> WrappedKey:
        dek = self.unwrap(wrapped, purpose)  # also proves the old wrap is intact
        ring = self._current_ring()
        if wrapped.key_id == ring.current[purpose]:
            return wrapped
        return _wrap(ring.keys[ring.current[purpose]], dek)

    def rotate(self) -> list[str]:
        with self._locked():
            ring = self._read() if self._path.exists() else _Ring({}, {})
            keys, current = dict(ring.keys), dict(ring.current)
            for purpose in PURPOSES:
                kek = _new_kek(purpose, ring.newest(purpose) + 1 if ring.keys else 1)
                keys[kek.id] = kek
                current[purpose] = kek.id
            self._write(_Ring(keys, current))
        return [current[p] for p in PURPOSES]

    def current_key_id(self, purpose: Purpose) -> str:
        _check_purpose(purpose)
        return self._current_ring().current[purpose]

    def _current_ring(self) -> _Ring:
        """The keyring as on disk now; cached until the file is replaced or chmodded."""
        try:
            st = self._path.stat()
        except FileNotFoundError:
            self._create()
            st = self._path.stat()
        _refuse_loose_mode(self._path, st.st_mode)
        stamp = (st.st_ino, st.st_dev, st.st_mtime_ns, st.st_size, st.st_mode)
        if self._ring is None or stamp != self._stamp:
            self._ring, self._stamp = self._read(), stamp
        return self._ring

    def _create(self) -> None:
        with self._locked():
            if not self._path.exists():  # another process may have won the race
                self._write(_Ring(*_fresh_keys()))

    def _read(self) -> _Ring:
        try:
            with self._path.open("rb") as f:
                _refuse_loose_mode(self._path, os.fstat(f.fileno()).st_mode)
                raw = f.read()
        except FileNotFoundError:
            raise KeyUnavailable(f"keyring {self._path} has disappeared") from None
        except OSError as exc:
            raise KeyUnavailable(f"keyring {self._path} cannot be read: {exc.strerror}"
                                 ) from None
        try:
            return _parse(json.loads(raw))
        except (ValueError, KeyError, TypeError, binascii.Error):
            # ValueError covers bad JSON and bad base64; the text may hold key material.
            raise StorageError(f"keyring {self._path} is damaged or not a {_FORMAT} file"
                               ) from None

    def _write(self, ring: _Ring) -> None:
        data = json.dumps(_dump(ring), indent=2).encode() + b"\n"
        fd, tmp = tempfile.mkstemp(prefix=".keyring-", suffix=".tmp", dir=self._path.parent)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self._path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        # The rename is only durable once the folder itself is on disk.
        dir_fd = os.open(self._path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        self._ring = None

    @contextmanager
    def _locked(self) -> Iterator[None]:
        # The keyring file is replaced on every write, so the lock lives on a sibling
        # file whose inode never changes.
        parent = self._path.parent
        if not parent.exists():
            parent.parent.mkdir(parents=True, exist_ok=True)
            parent.mkdir(mode=0o700, exist_ok=True)
            parent.chmod(0o700)  # mkdir's mode is narrowed by the umask, never widened
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock


def _refuse_loose_mode(path: Path, mode: int) -> None:
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise StorageError(f"keyring {path} is open to group or others (mode "
                           f"{stat.S_IMODE(mode):04o}); run chmod 600 on it")


def _aad(purpose: Purpose, key_id: str) -> bytes:
    return f"callvault-dek|{purpose}|{key_id}".encode()


def _wrap(kek: _Kek, dek: bytes) -> WrappedKey:
    nonce = secrets.token_bytes(_NONCE)
    sealed = AESGCM(kek.material).encrypt(nonce, dek, _aad(kek.purpose, kek.id))
    return WrappedKey(kek.id, nonce + sealed)


def _new_kek(purpose: Purpose, version: int) -> _Kek:
    return _Kek(f"local:{purpose}:{version}", purpose, version,
                datetime.now(UTC).isoformat(timespec="seconds"), secrets.token_bytes(KEY_SIZE))


def _fresh_keys() -> tuple[dict[str, _Kek], dict[Purpose, str]]:
    keks = [_new_kek(p, 1) for p in PURPOSES]
    return {k.id: k for k in keks}, {k.purpose: k.id for k in keks}


def _parse(doc: Any) -> _Ring:
    if doc["format"] != _FORMAT:
        raise ValueError("format")
    keys: dict[str, _Kek] = {}
    for entry in doc["keys"]:
        match = _LOCAL_ID.match(entry["id"])
        if match is None or match[1] != entry["purpose"] or entry["id"] in keys:
            raise ValueError("key id")
        material = base64.b64decode(entry["material"], validate=True)
        if len(material) != KEY_SIZE:
            raise ValueError("material")
        purpose: Purpose = entry["purpose"]
        keys[entry["id"]] = _Kek(entry["id"], purpose, int(match[2]), str(entry["created"]),
                                 material)
    current: dict[Purpose, str] = {}
    for purpose in PURPOSES:
        key_id = doc["current"][purpose]
        if keys[key_id].purpose != purpose:
            raise ValueError("current")
        current[purpose] = key_id
    return _Ring(keys, current)


def _dump(ring: _Ring) -> dict[str, Any]:
    return {
        "format": _FORMAT,
        "keys": [{"id": k.id, "purpose": k.purpose, "created": k.created,
                  "material": base64.b64encode(k.material).decode()}
                 for k in sorted(ring.keys.values(), key=lambda k: (k.purpose, k.version))],
        "current": dict(ring.current),
    }


# --- AWS KMS ---------------------------------------------------------------------------

_CONTEXT_KEY = "callvault:purpose"
# Codes that mean "this blob does not open here" rather than "KMS is not available".
_DAMAGED = frozenset({"InvalidCiphertextException", "IncorrectKeyException"})
# Codes that mean "KMS works but will not do this to this key".
_REFUSED = frozenset({"UnsupportedOperationException", "LimitExceededException"})


class KmsKeyProvider:
    """KEKs in AWS KMS: raw audio and redacted data under two different KMS keys.

    The purpose is the EncryptionContext of every wrap, so "audit" may share the
    redacted key (the default) and still never unwrap a redacted DEK. KMS keeps every
    backing key of a rotated KMS key, so a key's ARN stays its id across rotations.
    """

    name = "kms"

    def __init__(self, client: KMSClient, raw_key_id: str, redacted_key_id: str,
                 audit_key_id: str | None = None) -> None:
        if raw_key_id == redacted_key_id:
            raise StorageError("raw and redacted audio need different KMS keys")
        self._client = client
        self._keys: dict[Purpose, str] = {"raw": raw_key_id, "redacted": redacted_key_id,
                                          "audit": audit_key_id or redacted_key_id,
                                          "customer": redacted_key_id}
        self._arns: dict[str, str] = {}

    def generate_data_key(self, purpose: Purpose) -> tuple[bytes, WrappedKey]:
        _check_purpose(purpose)
        with _kms_errors("GenerateDataKey"):
            out = self._client.generate_data_key(
                KeyId=self._keys[purpose], KeySpec="AES_256",
                EncryptionContext=_context(purpose))
        if len(out["Plaintext"]) != KEY_SIZE:
            raise KeyUnavailable("KMS returned a data key of the wrong size")
        self._arns.setdefault(self._keys[purpose], out["KeyId"])
        return out["Plaintext"], WrappedKey(out["KeyId"], out["CiphertextBlob"])

    def unwrap(self, wrapped: WrappedKey, purpose: Purpose) -> bytes:
        _check_purpose(purpose)
        with _kms_errors("Decrypt"):
            out = self._client.decrypt(CiphertextBlob=wrapped.blob, KeyId=wrapped.key_id,
                                       EncryptionContext=_context(purpose))
        if len(out["Plaintext"]) != KEY_SIZE:
            raise IntegrityError(f"data key under {wrapped.key_id} has the wrong size")
        return out["Plaintext"]

    def rewrap(self, wrapped: WrappedKey, purpose: Purpose) -> WrappedKey:
        # Always ReEncrypt: after a rotation the ARN is unchanged but KMS then wraps
        # under the newest backing key.
        _check_purpose(purpose)
        context = _context(purpose)
        with _kms_errors("ReEncrypt"):
            out = self._client.re_encrypt(
                CiphertextBlob=wrapped.blob, SourceKeyId=wrapped.key_id,
                SourceEncryptionContext=context, DestinationKeyId=self._keys[purpose],
                DestinationEncryptionContext=context)
        return WrappedKey(out["KeyId"], out["CiphertextBlob"])

    def rotate(self) -> list[str]:
        rotated = []
        for key_id in dict.fromkeys(self._keys.values()):  # audit may share a key
            with _kms_errors("RotateKeyOnDemand", refused=(
                    f"KMS key {key_id} cannot be rotated on demand; keys with imported "
                    "material, in a custom key store, or past the on-demand limit must be "
                    "rotated by the operator (configure a new key, then rewrap)")):
                self._client.rotate_key_on_demand(KeyId=key_id)
            rotated.append(self._arn(key_id))
        return rotated

    def current_key_id(self, purpose: Purpose) -> str:
        _check_purpose(purpose)
        return self._arn(self._keys[purpose])

    def _arn(self, key_id: str) -> str:
        """The key's ARN, which is what KMS puts in every response's KeyId."""
        if key_id not in self._arns:
            with _kms_errors("DescribeKey"):
                self._arns[key_id] = self._client.describe_key(KeyId=key_id)[
                    "KeyMetadata"]["Arn"]
        return self._arns[key_id]


def _context(purpose: Purpose) -> dict[str, str]:
    return {_CONTEXT_KEY: purpose}


@contextmanager
def _kms_errors(action: str, refused: str | None = None) -> Iterator[None]:
    """botocore failures as the vault's errors; only the error code is kept, never the
    request (which holds the blob) or the response text. `refused` explains a
    `_REFUSED` code as a `StorageError` instead of calling the key unavailable."""
    try:
        yield
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", "unknown error"))
        if code in _DAMAGED:
            raise IntegrityError(f"KMS {action}: {code}: the wrapped data key is damaged "
                                 "or bound to another purpose or key") from None
        if refused is not None and code in _REFUSED:
            raise StorageError(f"{refused} ({code})") from None
        raise KeyUnavailable(f"KMS {action} failed: {code}") from None
    except BotoCoreError as exc:
        raise KeyUnavailable(f"KMS {action} failed: {type(exc).__name__}") from None


def _kms_client(settings: Settings) -> KMSClient:
    import boto3
    from botocore.config import Config

    # Short timeouts and few retries: a dead KMS should surface as KeyUnavailable
    # within seconds, not stall a worker.
    config = Config(connect_timeout=5, read_timeout=15,
                    retries={"max_attempts": 3, "mode": "standard"})
    return boto3.session.Session().client("kms", endpoint_url=settings.kms_endpoint_url,
                                          region_name=settings.kms_region, config=config)
