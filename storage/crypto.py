"""The bytes of one encrypted object: the streaming envelope format "CVLT" version 1.

This module owns how a plaintext stream becomes ciphertext under a 32-byte data key and
back, and nothing else: where the data key comes from is `storage.keys`, where the bytes
go is `storage.s3`. The design follows Tink's AES-GCM streaming AEAD and age's STREAM:

    header   = b"CVLT" | version (1) | segment size (uint32 BE) | object id (16)
               | nonce prefix (7)                                  -- HEADER_SIZE bytes
    segment  = AES-256-GCM(data key, nonce, plaintext segment, aad=header)
    nonce    = nonce prefix (7) | segment index (uint32 BE) | final flag (1)

Every segment but the last holds exactly `segment_size` plaintext bytes; the last holds
0..segment_size (an empty plaintext is one empty final segment, and an empty final
segment never follows a full one). Because the index and the final flag are in the
nonce and the whole header is in every segment's AAD, a flipped bit, a truncation,
reordered segments, bytes after the final segment, a header swapped from another object
and the wrong key all fail authentication and raise `IntegrityError` naming the segment.

Everything streams in constant memory (about two segments), and segments can be
decrypted on their own for HTTP Range playback (`segment_span`, `decrypt_segments`).
A streaming decryptor hands out each segment as soon as it authenticates, so a caller
that sees `IntegrityError` part-way must throw away what it already received.
"""

from __future__ import annotations

import io
import secrets
import struct
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from storage.errors import IntegrityError, StorageError

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

MAGIC = b"CVLT"
VERSION = 1
KEY_SIZE = 32
TAG_SIZE = 16
NONCE_PREFIX_SIZE = 7
DEFAULT_SEGMENT = 64 * 1024
MIN_SEGMENT = 4 * 1024
MAX_SEGMENT = 4 * 1024 * 1024
HEADER_SIZE = 32

_HEADER = struct.Struct(">4sBI16s7s")
assert _HEADER.size == HEADER_SIZE
_NONCE_TAIL = struct.Struct(">IB")
# The index is a uint32 in the nonce; past it nonces would repeat under one key.
_MAX_SEGMENTS = 2**32


@dataclass(frozen=True)
class Header:
    """The parsed fixed-size header of a CVLT object (nothing in it is secret)."""

    version: int
    segment_size: int
    object_id: uuid.UUID
    nonce_prefix: bytes

    def encode(self) -> bytes:
        return _HEADER.pack(MAGIC, self.version, self.segment_size, self.object_id.bytes,
                            self.nonce_prefix)


def new_data_key() -> bytes:
    """A fresh random 32-byte AES-256 data key."""
    return secrets.token_bytes(KEY_SIZE)


def read_header(data: bytes) -> Header:
    """Parse the first `HEADER_SIZE` bytes of an object; `IntegrityError` if they are not
    a CVLT v1 header. Authentication happens later: the header is every segment's AAD."""
    if len(data) < HEADER_SIZE:
        raise IntegrityError(f"header truncated: {len(data)} of {HEADER_SIZE} bytes")
    magic, version, segment_size, object_id, prefix = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise IntegrityError("header damaged: not a CVLT object")
    if version != VERSION:
        raise IntegrityError(f"header damaged or unsupported: CVLT version {version}")
    if not MIN_SEGMENT <= segment_size <= MAX_SEGMENT:
        raise IntegrityError("header damaged: segment size out of range")
    return Header(version, segment_size, uuid.UUID(bytes=object_id), prefix)


def segment_count(plaintext_size: int, segment_size: int) -> int:
    """How many segments a plaintext of this size is stored in (at least one)."""
    _check_segment_size(segment_size)
    if plaintext_size < 0:
        raise ValueError("plaintext size must not be negative")
    return max(1, -(-plaintext_size // segment_size))


def ciphertext_size(plaintext_size: int, segment_size: int) -> int:
    """Exact size of the stored object for a plaintext of `plaintext_size` bytes."""
    count = segment_count(plaintext_size, segment_size)
    return HEADER_SIZE + plaintext_size + count * TAG_SIZE


def plaintext_size(ciphertext_size: int, segment_size: int) -> int:
    """Inverse of `ciphertext_size`; `IntegrityError` if no plaintext encrypts to that
    many bytes (the object was truncated or extended)."""
    _check_segment_size(segment_size)
    body = ciphertext_size - HEADER_SIZE
    if body < TAG_SIZE:
        raise IntegrityError(f"object of {ciphertext_size} bytes is too short to be CVLT")
    full, rest = divmod(body, segment_size + TAG_SIZE)
    if rest == 0:
        return full * segment_size
    if rest < TAG_SIZE or (rest == TAG_SIZE and full > 0):
        raise IntegrityError(f"object of {ciphertext_size} bytes cannot be CVLT with "
                             f"{segment_size}-byte segments")
    return full * segment_size + rest - TAG_SIZE


def segment_span(plaintext_start: int, plaintext_end_exclusive: int,
                 segment_size: int) -> tuple[int, int, int]:
    """For plaintext bytes [start, end): (first segment index, ciphertext offset of that
    segment, ciphertext length through the end segment). The length assumes full
    segments; if the range touches the final segment it may run past the end of the
    object, which an S3 Range request (or a slice) simply clamps."""
    _check_segment_size(segment_size)
    if not 0 <= plaintext_start < plaintext_end_exclusive:
        raise ValueError("need 0 <= start < end for a plaintext range")
    stride = segment_size + TAG_SIZE
    first = plaintext_start // segment_size
    last = (plaintext_end_exclusive - 1) // segment_size
    return first, HEADER_SIZE + first * stride, (last - first + 1) * stride


def decrypt_segments(header: Header, data_key: bytes, first_index: int, ciphertext: bytes,
                     total_segments: int) -> bytes:
    """Decrypt consecutive whole segments starting at `first_index`; the one at index
    `total_segments - 1` is authenticated as final. Returns their joined plaintext,
    which starts at plaintext offset `first_index * header.segment_size`."""
    seal = _Segments(_aead(data_key), header)
    stride = header.segment_size + TAG_SIZE
    if not ciphertext or first_index < 0:
        raise IntegrityError(f"no ciphertext for segment {first_index}")
    out = bytearray()
    index = first_index
    for pos in range(0, len(ciphertext), stride):
        if index >= total_segments:
            raise IntegrityError(f"segment {index} lies past the final segment")
        final = index == total_segments - 1
        piece = ciphertext[pos:pos + stride]
        if len(piece) < stride and not final:
            raise IntegrityError(f"segment {index} truncated")
        out += seal.open(index, final, piece)
        index += 1
    return bytes(out)


def encrypt_stream(src: BinaryIO, dst: BinaryIO, data_key: bytes, object_id: uuid.UUID,
                   segment_size: int = DEFAULT_SEGMENT) -> int:
    """Encrypt all of `src` into `dst`; returns the ciphertext bytes written."""
    written = 0
    for chunk in _encrypt(src, _aead(data_key), object_id, segment_size, None):
        dst.write(chunk)
        written += len(chunk)
    return written


def decrypt_stream(src: BinaryIO, dst: BinaryIO, data_key: bytes,
                   object_id: uuid.UUID) -> int:
    """Decrypt a whole object from `src` into `dst`; returns the plaintext bytes written.
    On `IntegrityError` `dst` holds an unauthenticated prefix and must be discarded."""
    written = 0
    for chunk in _decrypt(src, _aead(data_key), object_id):
        dst.write(chunk)
        written += len(chunk)
    return written


class _ChunkReader(io.RawIOBase):
    """A readable raw stream over an iterator of byte chunks. `readinto` fills the whole
    buffer unless the stream ends, because boto3's upload of a non-seekable stream takes
    a short read for the end of a part."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        super().__init__()
        self._chunks = chunks
        self._buf = memoryview(b"")
        self._error: StorageError | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        # A generator that raised is finished; without this a second read after an
        # IntegrityError would look like a clean end of stream.
        if self._error is not None:
            raise self._error
        view = memoryview(buffer).cast("B")
        filled = 0
        while filled < len(view):
            if not self._buf:
                try:
                    chunk = next(self._chunks, None)
                except StorageError as exc:
                    self._error = exc
                    raise
                if chunk is None:
                    break
                self._buf = memoryview(chunk)
            take = min(len(view) - filled, len(self._buf))
            view[filled:filled + take] = self._buf[:take]
            self._buf = self._buf[take:]
            filled += take
        return filled


class EncryptingReader(_ChunkReader):
    """Reading this yields the CVLT object (header, then segments) for the plaintext in
    `src`, so `upload_fileobj` can stream it. If `plaintext_size` is given the total is
    known up front (`ciphertext_size`) and a source of another length is an error."""

    def __init__(self, src: BinaryIO, data_key: bytes, object_id: uuid.UUID,
                 segment_size: int = DEFAULT_SEGMENT, *,
                 plaintext_size: int | None = None) -> None:
        _check_segment_size(segment_size)
        self._ciphertext_size = (None if plaintext_size is None
                                 else ciphertext_size(plaintext_size, segment_size))
        super().__init__(_encrypt(src, _aead(data_key), object_id, segment_size,
                                  plaintext_size))

    @property
    def ciphertext_size(self) -> int | None:
        return self._ciphertext_size


class DecryptingReader(_ChunkReader):
    """Reading this yields the plaintext of the CVLT object read from `src` (a file or a
    botocore StreamingBody). Damage raises `IntegrityError`, including an object that
    ends before its final segment; bytes already returned are then unauthenticated."""

    def __init__(self, src: BinaryIO, data_key: bytes, object_id: uuid.UUID) -> None:
        super().__init__(_decrypt(src, _aead(data_key), object_id))


class _Segments:
    """Seals and opens the segments of one object: nonce and AAD from its header."""

    def __init__(self, aead: AESGCM, header: Header) -> None:
        self._aead = aead
        self._aad = header.encode()
        self._prefix = header.nonce_prefix

    def _nonce(self, index: int, final: bool) -> bytes:
        if index >= _MAX_SEGMENTS:
            raise StorageError("object too large: segment index overflows the nonce")
        return self._prefix + _NONCE_TAIL.pack(index, final)

    def seal(self, index: int, final: bool, plaintext: bytes) -> bytes:
        return self._aead.encrypt(self._nonce(index, final), plaintext, self._aad)

    def open(self, index: int, final: bool, ciphertext: bytes) -> bytes:
        if len(ciphertext) < TAG_SIZE:
            raise IntegrityError(f"segment {index} truncated")
        try:
            return self._aead.decrypt(self._nonce(index, final), ciphertext, self._aad)
        except InvalidTag:
            pass
        # Only on failure: try the other flag to say *how* the object is damaged.
        try:
            self._aead.decrypt(self._nonce(index, not final), ciphertext, self._aad)
        except InvalidTag:
            raise IntegrityError(
                f"segment {index} failed authentication "
                "(damaged, reordered, from another object or wrong key)") from None
        if final:
            raise IntegrityError(f"object truncated: segment {index} is not the final one")
        raise IntegrityError(f"data follows the final segment {index}")


def _aead(data_key: bytes) -> AESGCM:
    if len(data_key) != KEY_SIZE:
        raise ValueError(f"a data key is {KEY_SIZE} bytes")
    return AESGCM(data_key)


def _check_segment_size(segment_size: int) -> None:
    if not MIN_SEGMENT <= segment_size <= MAX_SEGMENT:
        raise ValueError(f"segment size must be {MIN_SEGMENT}..{MAX_SEGMENT} bytes")


def _read_exact(src: BinaryIO, size: int) -> bytes:
    """Up to `size` bytes, fewer only at end of stream (sockets and pipes read short)."""
    data = src.read(size)
    if not data or len(data) == size:
        return data or b""
    parts = bytearray(data)
    while len(parts) < size and (more := src.read(size - len(parts))):
        parts += more
    return bytes(parts)


def _encrypt(src: BinaryIO, aead: AESGCM, object_id: uuid.UUID, segment_size: int,
             expected_size: int | None) -> Iterator[bytes]:
    _check_segment_size(segment_size)
    header = Header(VERSION, segment_size, object_id, secrets.token_bytes(NONCE_PREFIX_SIZE))
    segments = _Segments(aead, header)
    yield header.encode()
    # One segment of look-ahead: a segment is final when nothing follows it.
    current = _read_exact(src, segment_size)
    index = total = 0
    while True:
        following = _read_exact(src, segment_size) if len(current) == segment_size else b""
        final = not following
        total += len(current)
        if expected_size is not None and (total > expected_size
                                          or (final and total != expected_size)):
            raise StorageError(
                f"source gave {total} plaintext bytes, {expected_size} were announced")
        yield segments.seal(index, final, current)
        if final:
            return
        current, index = following, index + 1


def _decrypt(src: BinaryIO, aead: AESGCM, object_id: uuid.UUID) -> Iterator[bytes]:
    header = read_header(_read_exact(src, HEADER_SIZE))
    if header.object_id != object_id:
        raise IntegrityError(f"header names another object than {object_id}")
    segments = _Segments(aead, header)
    stride = header.segment_size + TAG_SIZE
    current = _read_exact(src, stride)
    index = 0
    while True:
        following = _read_exact(src, stride) if len(current) == stride else b""
        final = not following
        plaintext = segments.open(index, final, current)
        if final and not plaintext and index > 0:
            # Never written by `_encrypt`: the format has one encoding per plaintext.
            raise IntegrityError(f"segment {index} is an empty final after a full one")
        yield plaintext
        if final:
            return
        current, index = following, index + 1
