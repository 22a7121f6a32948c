"""Reading, checking and writing call recordings as WAV, one bounded block at a time.

callvault takes what PBXs and Twilio write: WAV at 8 or 16 kHz, 16-bit PCM, 8-bit µ-law
or 8-bit A-law, mono or stereo (one party per channel). Every other file is refused here,
with an error naming the problem, before any model runs. Long recordings are never held
whole: callers read fixed-size blocks of one channel and write the redacted copy block by
block, so memory stays bounded whatever the duration.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Literal, Self

import av
import numpy as np
import numpy.typing as npt
import soundfile as sf

from redaction.errors import (
    CorruptAudio,
    EmptyAudio,
    InputMissing,
    NotAudio,
    OutputError,
    TooLong,
    UnsupportedAudio,
)

Encoding = Literal["pcm16", "ulaw", "alaw"]
Samples = npt.NDArray[np.float32]

WHISPER_RATE = 16000
_SUBTYPES: dict[str, Encoding] = {"PCM_16": "pcm16", "ULAW": "ulaw", "ALAW": "alaw"}
_WAV_SUBTYPE = {v: k for k, v in _SUBTYPES.items()}
_RATES = (8000, 16000)
# WAVE format tags, used to name an unsupported encoding in the error message.
_FORMAT_TAGS = {1: "PCM", 3: "IEEE float", 6: "A-law", 7: "µ-law", 0x11: "IMA ADPCM",
                0x31: "GSM 6.10", 0x55: "MP3", 0xFFFE: "extensible"}


@dataclass(frozen=True, slots=True)
class AudioInfo:
    """What a recording is: the facts needed to process and rewrite it faithfully."""

    sample_rate: int
    channels: int
    encoding: Encoding
    frames: int

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate


def probe(path: Path, *, max_seconds: float) -> AudioInfo:
    """Check that `path` is a WAV callvault can redact, and describe it.

    Raises the specific `RedactionError` for each kind of bad input. The RIFF chunks are
    walked by hand first because libsndfile silently accepts a file whose data chunk is
    shorter than its header says, and a truncated upload must never be called clean.
    """
    try:
        if not path.is_file():
            raise InputMissing(f"{path.name}: no such file")
        size = path.stat().st_size
        with path.open("rb") as fh:
            head = fh.read(12)
            if size == 0:
                raise EmptyAudio(f"{path.name}: file is empty (0 bytes)")
            if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
                raise NotAudio(f"{path.name}: not a WAV file (no RIFF/WAVE header)")
            fmt_tag, data_size, data_offset = _walk_chunks(path.name, fh, size)
    except OSError as exc:
        raise InputMissing(f"{path.name}: cannot read ({exc.strerror or 'I/O error'})") from None
    if fmt_tag not in (1, 6, 7, 0xFFFE):
        name = _FORMAT_TAGS.get(fmt_tag, f"format tag {fmt_tag}")
        raise UnsupportedAudio(
            f"{path.name}: unsupported encoding {name}; use 16-bit PCM, µ-law or A-law WAV"
        )
    available = size - data_offset
    if data_size > available:
        raise CorruptAudio(
            f"{path.name}: truncated WAV: header declares {data_size} bytes of audio, "
            f"file holds {available}"
        )
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError):
        raise CorruptAudio(f"{path.name}: damaged WAV header") from None
    encoding = _SUBTYPES.get(info.subtype)
    if encoding is None:
        raise UnsupportedAudio(
            f"{path.name}: unsupported encoding {info.subtype_info}; "
            "use 16-bit PCM, µ-law or A-law WAV"
        )
    if info.samplerate not in _RATES:
        raise UnsupportedAudio(f"{path.name}: unsupported sample rate {info.samplerate} Hz; "
                               "use 8000 or 16000 Hz")
    if info.channels not in (1, 2):
        raise UnsupportedAudio(f"{path.name}: {info.channels} channels; use mono or stereo")
    if info.frames <= 0:
        raise EmptyAudio(f"{path.name}: WAV holds no samples (zero length)")
    result = AudioInfo(info.samplerate, info.channels, encoding, info.frames)
    if result.duration > max_seconds:
        raise TooLong(
            f"{path.name}: {result.duration / 3600:.2f} h is longer than the limit of "
            f"{max_seconds / 3600:.2f} h (setting max_duration_seconds)"
        )
    return result


def _walk_chunks(name: str, fh: BinaryIO, size: int) -> tuple[int, int, int]:
    """Return (format tag, declared data bytes, offset of data) from the RIFF chunk list."""
    pos = 12
    fmt_tag: int | None = None
    while pos + 8 <= size:
        fh.seek(pos)
        header = fh.read(8)
        if len(header) < 8:
            break
        chunk_id, chunk_size = header[:4], struct.unpack("<I", header[4:])[0]
        if chunk_id == b"fmt ":
            body = fh.read(min(chunk_size, 40))
            if len(body) < 16:
                raise CorruptAudio(f"{name}: damaged WAV header (short fmt chunk)")
            fmt_tag = struct.unpack("<H", body[:2])[0]
            if fmt_tag == 0xFFFE and len(body) >= 26:
                fmt_tag = 0xFFFE if struct.unpack("<H", body[24:26])[0] not in (1, 6, 7) else 1
        elif chunk_id == b"data":
            if fmt_tag is None:
                raise CorruptAudio(f"{name}: damaged WAV header (data before fmt)")
            return fmt_tag, chunk_size, pos + 8
        pos += 8 + chunk_size + (chunk_size & 1)
    if fmt_tag is None:
        raise CorruptAudio(f"{name}: damaged WAV header (no fmt chunk)")
    raise CorruptAudio(f"{name}: truncated WAV: no audio data chunk")


class WavReader:
    """Reads blocks of float32 samples in [-1, 1] from a probed WAV, seeking as needed."""

    def __init__(self, path: Path, info: AudioInfo) -> None:
        self.info = info
        self._file = sf.SoundFile(str(path))

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self._file.close()

    def read(self, start: int, frames: int) -> npt.NDArray[np.float32]:
        """Frames [start, start+frames) of every channel, shape (n, channels)."""
        self._file.seek(max(0, start))
        data = self._file.read(frames, dtype="float32", always_2d=True)
        return np.asarray(data, dtype=np.float32)

    def blocks(self, block_frames: int) -> Iterator[tuple[int, npt.NDArray[np.float32]]]:
        """Every (start frame, block) in order, each at most `block_frames` long."""
        start = 0
        while start < self.info.frames:
            block = self.read(start, block_frames)
            if len(block) == 0:
                return
            yield start, block
            start += len(block)


class WavWriter:
    """Writes a WAV in the same rate, channel count and encoding as the original."""

    def __init__(self, path: Path, info: AudioInfo) -> None:
        try:
            self._file = sf.SoundFile(str(path), mode="w", samplerate=info.sample_rate,
                                      channels=info.channels, subtype=_WAV_SUBTYPE[info.encoding],
                                      format="WAV")
        except (sf.LibsndfileError, OSError, RuntimeError):
            raise OutputError(f"{path.name}: cannot create the output file") from None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._file.close()

    def write(self, block: npt.NDArray[np.float32]) -> None:
        self._file.write(np.clip(block, -1.0, 1.0))


class Resampler:
    """Streams one channel to Whisper's 16 kHz, keeping filter state across blocks."""

    def __init__(self, source_rate: int) -> None:
        self._rate = source_rate
        self._resampler = (None if source_rate == WHISPER_RATE else
                           av.AudioResampler(format="flt", layout="mono", rate=WHISPER_RATE))

    def feed(self, mono: npt.NDArray[np.float32]) -> Samples:
        if self._resampler is None:
            return np.ascontiguousarray(mono, dtype=np.float32)
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(mono, dtype=np.float32)[None, :], format="flt", layout="mono")
        frame.sample_rate = self._rate
        return self._collect(self._resampler.resample(frame))

    def flush(self) -> Samples:
        if self._resampler is None:
            return np.zeros(0, dtype=np.float32)
        return self._collect(self._resampler.resample(None))

    @staticmethod
    def _collect(frames: list[av.AudioFrame]) -> Samples:
        if not frames:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate([f.to_ndarray()[0] for f in frames]).astype(np.float32)


def to_whisper_rate(mono: npt.NDArray[np.float32], source_rate: int) -> Samples:
    """Resample a whole (short) clip to 16 kHz."""
    resampler = Resampler(source_rate)
    return np.concatenate([resampler.feed(mono), resampler.flush()])
