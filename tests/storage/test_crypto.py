"""Tests for storage.crypto: the CVLT v1 streaming envelope format and its failure modes."""

from __future__ import annotations

import io
import random
import tracemalloc
import uuid
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storage import crypto
from storage.errors import IntegrityError, StorageError

SEG = crypto.MIN_SEGMENT  # small segments keep the many-segment cases fast
STRIDE = SEG + crypto.TAG_SIZE
KEY = bytes(range(32))
OID = uuid.UUID("12345678-1234-5678-1234-567812345678")


def plain(size: int, seed: int = 1) -> bytes:
    """Deterministic pseudo-random plaintext of `size` bytes."""
    return random.Random(seed).randbytes(size)


def seal(data: bytes, segment_size: int = SEG, key: bytes = KEY, oid: uuid.UUID = OID) -> bytes:
    """Encrypt `data` with encrypt_stream into bytes."""
    out = io.BytesIO()
    crypto.encrypt_stream(io.BytesIO(data), out, key, oid, segment_size)
    return out.getvalue()


def unseal(blob: bytes, key: bytes = KEY, oid: uuid.UUID = OID) -> bytes:
    """Decrypt `blob` with decrypt_stream into bytes."""
    out = io.BytesIO()
    crypto.decrypt_stream(io.BytesIO(blob), out, key, oid)
    return out.getvalue()


class Trickle(io.RawIOBase):
    """A source that hands out at most `step` bytes per read, like a socket."""

    def __init__(self, data: bytes, step: int) -> None:
        super().__init__()
        self._data, self._pos, self._step = data, 0, step

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        take = min(len(buffer), self._step, len(self._data) - self._pos)
        buffer[:take] = self._data[self._pos:self._pos + take]
        self._pos += take
        return take


class Pattern(io.RawIOBase):
    """`size` bytes generated on demand, never held in memory at once."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self._left = size
        self._block = bytes(range(256)) * 256

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        take = min(len(buffer), self._left, len(self._block))
        buffer[:take] = self._block[:take]
        self._left -= take
        return take


class Sink(io.RawIOBase):
    """Counts what is written and keeps none of it."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.count += len(data)
        return len(data)


@pytest.mark.parametrize("size", [0, 1, SEG - 1, SEG, SEG + 1, 2 * SEG, 3 * SEG + 7])
def test_round_trip_at_segment_edges(size: int) -> None:
    """Plaintexts around segment boundaries decrypt to themselves, at the predicted size."""
    data = plain(size)
    blob = seal(data)
    assert len(blob) == crypto.ciphertext_size(size, SEG)
    assert crypto.plaintext_size(len(blob), SEG) == size
    assert unseal(blob) == data


def test_round_trip_several_mib_default_segment() -> None:
    """A 5 MiB plaintext round-trips with the default 64 KiB segments."""
    data = plain(5 * 1024 * 1024 + 123)
    blob = seal(data, crypto.DEFAULT_SEGMENT)
    assert len(blob) == crypto.ciphertext_size(len(data), crypto.DEFAULT_SEGMENT)
    assert unseal(blob) == data


def test_empty_plaintext_is_one_empty_final_segment() -> None:
    """An empty plaintext is stored as header plus one bare tag."""
    blob = seal(b"")
    assert len(blob) == crypto.HEADER_SIZE + crypto.TAG_SIZE
    assert unseal(blob) == b""


@given(data=st.binary(max_size=5 * SEG), step=st.integers(1, 3 * SEG))
@settings(max_examples=60, deadline=None)
def test_round_trip_property(data: bytes, step: int) -> None:
    """Any plaintext round-trips, even when both sources read short."""
    out = io.BytesIO()
    crypto.encrypt_stream(Trickle(data, step), out, KEY, OID, SEG)  # type: ignore[arg-type]
    back = io.BytesIO()
    crypto.decrypt_stream(Trickle(out.getvalue(), step), back, KEY, OID)  # type: ignore[arg-type]
    assert back.getvalue() == data


@pytest.mark.parametrize("size", [0, SEG, 3 * SEG + 5])
def test_encrypting_reader_produces_a_decryptable_object(size: int) -> None:
    """EncryptingReader's output has the announced size and decrypts to the source."""
    data = plain(size)
    reader = crypto.EncryptingReader(io.BytesIO(data), KEY, OID, SEG, plaintext_size=size)
    blob = reader.read()
    assert reader.ciphertext_size == len(blob) == len(seal(data))
    assert blob[:4] == b"CVLT"
    assert unseal(blob) == data


def test_encrypting_reader_fills_whole_reads() -> None:
    """readinto fills the caller's buffer until the end, as boto3 part uploads need."""
    data = plain(10 * SEG)
    reader = crypto.EncryptingReader(io.BytesIO(data), KEY, OID, SEG)
    sizes = []
    while chunk := reader.read(3 * SEG + 1):
        sizes.append(len(chunk))
    assert sizes[:-1] == [3 * SEG + 1] * (len(sizes) - 1)
    assert sum(sizes) == crypto.ciphertext_size(len(data), SEG)
    assert reader.ciphertext_size is None


def test_encrypting_reader_rejects_a_source_of_another_length() -> None:
    """A source longer or shorter than the announced plaintext size is an error."""
    for actual in (SEG - 1, SEG + 1):
        reader = crypto.EncryptingReader(io.BytesIO(plain(actual)), KEY, OID, SEG,
                                         plaintext_size=SEG)
        with pytest.raises(StorageError, match="announced"):
            reader.read()


def test_decrypting_reader_streams_plaintext() -> None:
    """DecryptingReader behind a BufferedReader yields the plaintext in small reads."""
    data = plain(4 * SEG + 99)
    reader = io.BufferedReader(crypto.DecryptingReader(io.BytesIO(seal(data)), KEY, OID))
    got = bytearray()
    while chunk := reader.read(1000):
        got += chunk
    assert bytes(got) == data


def test_decrypting_reader_keeps_failing_after_damage() -> None:
    """After IntegrityError a further read raises again instead of looking like EOF."""
    blob = seal(plain(3 * SEG))[:-1]
    reader = crypto.DecryptingReader(io.BytesIO(blob), KEY, OID)
    with pytest.raises(IntegrityError):
        reader.read()
    with pytest.raises(IntegrityError):
        reader.read(10)


@pytest.mark.parametrize("seed", range(6))
def test_flipped_bit_anywhere_is_detected(seed: int) -> None:
    """One flipped bit in the header or any segment raises IntegrityError."""
    rng = random.Random(seed)
    blob = bytearray(seal(plain(3 * SEG + 10)))
    positions = [rng.randrange(crypto.HEADER_SIZE), rng.randrange(len(blob)),
                 rng.randrange(crypto.HEADER_SIZE, len(blob))]
    for pos in positions:
        damaged = bytearray(blob)
        damaged[pos] ^= 1 << rng.randrange(8)
        with pytest.raises(IntegrityError):
            unseal(bytes(damaged))


def test_every_header_byte_is_authenticated() -> None:
    """Flipping any single header bit is detected (magic, version, size, id, nonce)."""
    blob = seal(plain(SEG + 1))
    for pos in range(crypto.HEADER_SIZE):
        damaged = bytearray(blob)
        damaged[pos] ^= 0x80
        with pytest.raises(IntegrityError):
            unseal(bytes(damaged))


def test_damage_message_names_the_segment_and_no_key() -> None:
    """The error names the damaged segment and carries no key bytes."""
    blob = bytearray(seal(plain(3 * SEG)))
    blob[crypto.HEADER_SIZE + STRIDE + 5] ^= 1
    with pytest.raises(IntegrityError, match="segment 1") as info:
        unseal(bytes(blob))
    assert KEY.hex() not in str(info.value) and repr(KEY) not in str(info.value)


def test_truncation_at_every_boundary_and_mid_segment() -> None:
    """Cutting the object at any segment boundary or inside a segment is detected."""
    blob = seal(plain(4 * SEG + 100))
    cuts = {0, crypto.HEADER_SIZE - 1, crypto.HEADER_SIZE}
    for i in range(1, 5):
        boundary = crypto.HEADER_SIZE + i * STRIDE
        cuts |= {boundary, boundary - 1, boundary + 1, boundary - STRIDE // 2}
    cuts.add(len(blob) - 1)
    for cut in sorted(c for c in cuts if c < len(blob)):
        with pytest.raises(IntegrityError):
            unseal(blob[:cut])


def test_truncation_at_boundary_is_reported_as_truncation() -> None:
    """Dropping whole trailing segments says the object was truncated."""
    blob = seal(plain(3 * SEG + 1))
    with pytest.raises(IntegrityError, match="truncated"):
        unseal(blob[:crypto.HEADER_SIZE + 2 * STRIDE])


def test_swapped_segments_are_detected() -> None:
    """Exchanging two full segments raises IntegrityError."""
    blob = seal(plain(3 * SEG + 1))
    h = crypto.HEADER_SIZE
    s0, s1 = blob[h:h + STRIDE], blob[h + STRIDE:h + 2 * STRIDE]
    with pytest.raises(IntegrityError, match="segment 0"):
        unseal(blob[:h] + s1 + s0 + blob[h + 2 * STRIDE:])


@pytest.mark.parametrize("extra", [b"\x00", bytes(crypto.TAG_SIZE), bytes(STRIDE),
                                   bytes(STRIDE + 20)])
def test_appended_bytes_are_detected(extra: bytes) -> None:
    """Bytes after the final segment raise IntegrityError, whatever their length."""
    for size in (0, SEG, SEG + 3):
        with pytest.raises(IntegrityError):
            unseal(seal(plain(size)) + extra)


def test_appended_copy_of_a_segment_is_reported_as_extension() -> None:
    """A duplicated final full segment is reported as data after the final segment."""
    blob = seal(plain(2 * SEG))
    with pytest.raises(IntegrityError, match="follows the final"):
        unseal(blob + blob[-STRIDE:])


def test_wrong_key_is_detected() -> None:
    """A different data key fails authentication at segment 0."""
    with pytest.raises(IntegrityError, match="segment 0"):
        unseal(seal(plain(100)), key=crypto.new_data_key())


def test_wrong_object_id_is_detected() -> None:
    """An object whose header names another id is refused before any plaintext."""
    out = io.BytesIO()
    with pytest.raises(IntegrityError, match="another object"):
        crypto.decrypt_stream(io.BytesIO(seal(plain(100))), out, KEY, uuid.uuid4())
    assert out.getvalue() == b""


def test_relabelled_object_id_fails_authentication() -> None:
    """A header rewritten to another object id fails even when that id is the one expected."""
    other = uuid.UUID(int=OID.int ^ 1)
    blob = seal(plain(2 * SEG))
    relabelled = blob[:9] + other.bytes + blob[25:]
    assert crypto.read_header(relabelled).object_id == other
    with pytest.raises(IntegrityError, match="segment 0"):
        unseal(relabelled, oid=other)
    header = crypto.read_header(relabelled)
    with pytest.raises(IntegrityError, match="segment 0"):
        crypto.decrypt_segments(header, KEY, 0, relabelled[crypto.HEADER_SIZE:], 2)


def test_header_swapped_from_another_object_is_detected() -> None:
    """A body under another object's header (same key) fails authentication."""
    a, b = seal(plain(100, 1)), seal(plain(100, 2))
    with pytest.raises(IntegrityError):
        unseal(b[:crypto.HEADER_SIZE] + a[crypto.HEADER_SIZE:])


def test_ciphertext_does_not_contain_the_plaintext() -> None:
    """A known, repetitive plaintext does not show through in the ciphertext."""
    data = b"account 48201735 pin 7391 " * 1000
    blob = seal(data)
    assert b"48201735" not in blob and b"account" not in blob
    assert seal(data) != blob  # fresh nonce prefix every time


def test_header_fields_parse() -> None:
    """read_header returns what encrypt_stream wrote, and refuses a foreign file."""
    blob = seal(b"x", segment_size=2 * SEG)
    header = crypto.read_header(blob)
    assert (header.version, header.segment_size, header.object_id) == (1, 2 * SEG, OID)
    assert len(header.nonce_prefix) == crypto.NONCE_PREFIX_SIZE
    assert header.encode() == blob[:crypto.HEADER_SIZE]
    with pytest.raises(IntegrityError, match="not a CVLT"):
        crypto.read_header(b"RIFF" + blob[4:])
    with pytest.raises(IntegrityError, match="truncated"):
        crypto.read_header(blob[:10])


@pytest.mark.parametrize("start,end", [(0, 1), (0, 5 * SEG + 17), (SEG - 1, SEG + 1),
                                       (2 * SEG, 3 * SEG), (3 * SEG + 5, 5 * SEG + 17),
                                       (5 * SEG, 5 * SEG + 17), (123, 4000)])
def test_range_read_equals_plaintext_slice(start: int, end: int) -> None:
    """Decrypting only the segments of a range gives the same slice of the plaintext."""
    data = plain(5 * SEG + 17)
    blob = seal(data)
    header = crypto.read_header(blob)
    first, offset, length = crypto.segment_span(start, end, SEG)
    total = crypto.segment_count(len(data), SEG)
    window = crypto.decrypt_segments(header, KEY, first, blob[offset:offset + length], total)
    skip = start - first * SEG
    assert window[skip:skip + end - start] == data[start:end]


def test_range_read_detects_damage_and_misplaced_segments() -> None:
    """Range decryption fails on a flipped bit or on segments given the wrong index."""
    data = plain(3 * SEG)
    blob = bytearray(seal(data))
    header = crypto.read_header(bytes(blob))
    h = crypto.HEADER_SIZE
    with pytest.raises(IntegrityError, match="segment 2"):
        crypto.decrypt_segments(header, KEY, 2, bytes(blob[h + STRIDE:h + 2 * STRIDE]), 3)
    with pytest.raises(IntegrityError, match="segment 1"):
        crypto.decrypt_segments(header, KEY, 1, bytes(blob[h + STRIDE:]), 2)
    blob[h + STRIDE + 1] ^= 4
    with pytest.raises(IntegrityError, match="segment 1"):
        crypto.decrypt_segments(header, KEY, 1, bytes(blob[h + STRIDE:]), 3)


def test_size_arithmetic_rejects_impossible_sizes() -> None:
    """plaintext_size refuses lengths no plaintext encrypts to."""
    h, t = crypto.HEADER_SIZE, crypto.TAG_SIZE
    for bad in (0, h, h + t - 1, h + STRIDE + 3, h + STRIDE + t):
        with pytest.raises(IntegrityError):
            crypto.plaintext_size(bad, SEG)
    for size in range(0, 3 * SEG + 2, 509):
        assert crypto.plaintext_size(crypto.ciphertext_size(size, SEG), SEG) == size


def test_bad_parameters_are_refused() -> None:
    """Segment sizes outside 4 KiB..4 MiB and keys that are not 32 bytes are refused."""
    bad: list[Callable[[], object]] = [
        lambda: seal(b"", segment_size=crypto.MIN_SEGMENT - 1),
        lambda: seal(b"", segment_size=crypto.MAX_SEGMENT + 1),
        lambda: seal(b"", key=KEY[:16]),
        lambda: crypto.EncryptingReader(io.BytesIO(), KEY, OID, 1000),
    ]
    for call in bad:
        with pytest.raises(ValueError):
            call()


def test_new_data_keys_are_fresh() -> None:
    """new_data_key returns 32 random bytes, different each call."""
    a, b = crypto.new_data_key(), crypto.new_data_key()
    assert len(a) == len(b) == 32 and a != b


def test_encryption_runs_in_constant_memory() -> None:
    """Encrypting then decrypting a 64 MiB generated stream peaks far below its size."""
    size = 64 * 1024 * 1024
    tracemalloc.start()
    try:
        sink = Sink()
        encrypting = crypto.EncryptingReader(Pattern(size), KEY, OID,  # type: ignore[arg-type]
                                             plaintext_size=size)
        decrypting = crypto.DecryptingReader(encrypting, KEY, OID)  # type: ignore[arg-type]
        buf = bytearray(1024 * 1024)
        while n := decrypting.readinto(buf):
            sink.write(bytes(buf[:n]))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sink.count == size
    assert peak < 8 * 1024 * 1024
