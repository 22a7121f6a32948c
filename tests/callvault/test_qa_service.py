"""The QA service's pure parts: Range header parsing and the waveform peaks, checked
against libsndfile's own decoding of the same files."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from callvault.qa_service import BadWave, parse_range, wave_peaks
from storage.errors import RangeNotSatisfiable


@pytest.mark.parametrize("header, expected", [
    (None, None),
    ("", None),
    ("bytes=0-", (0, 1000)),
    ("bytes=0-0", (0, 1)),
    ("bytes=10-19", (10, 20)),
    ("bytes=990-5000", (990, 1000)),
    ("bytes=-100", (900, 1000)),
    ("bytes=-5000", (0, 1000)),
    ("bytes=0-10,20-30", None),         # several ranges: the whole object instead
    ("items=0-10", None),
    ("bytes=20-10", None),              # invalid: ignored
    ("bytes=-", None),
    ("bytes=99999999999999999999-", None),
])
def test_range_headers(header: str | None, expected: tuple[int, int] | None) -> None:
    assert parse_range(header, 1000) == expected


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=5000-6000", "bytes=-0"])
def test_unsatisfiable_ranges(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable):
        parse_range(header, 1000)


def _wav(subtype: str, channels: int, tmp_path: Path) -> tuple[bytes, np.ndarray]:
    rate = 8000
    t = np.arange(rate * 3) / rate
    data = np.stack([0.5 * np.sin(2 * np.pi * 440 * t) * (1 + c) / channels
                     for c in range(channels)], axis=1)
    data[8000:16000] = 0.0                                    # a muted second
    path = tmp_path / f"{subtype}-{channels}.wav"
    sf.write(str(path), data, rate, subtype=subtype, format="WAV")
    decoded, _ = sf.read(str(path), always_2d=True)
    return path.read_bytes(), decoded


@pytest.mark.parametrize("subtype", ["PCM_16", "ULAW", "ALAW"])
@pytest.mark.parametrize("channels", [1, 2])
def test_peaks_match_libsndfile(subtype: str, channels: int, tmp_path: Path) -> None:
    blob, decoded = _wav(subtype, channels, tmp_path)
    chunks = [blob[i:i + 777] for i in range(0, len(blob), 777)]   # odd chunk edges
    got = wave_peaks(chunks, bins_per_second=10)
    assert got["bins"] == 30 and got["duration_seconds"] == pytest.approx(3.0)
    for c in range(channels):
        expected = np.abs(decoded[:, c]).reshape(30, -1).max(axis=1)
        assert np.allclose(got["channels"][c]["peaks"], expected, atol=2e-3)
        peaks = got["channels"][c]["peaks"]
        assert max(peaks[10:20]) < 1e-3 and min(peaks[:10] + peaks[20:]) > 0.2


def test_peaks_are_bounded_in_number() -> None:
    buf = io.BytesIO()
    sf.write(buf, np.zeros(8000 * 600), 8000, subtype="PCM_16", format="WAV")
    got = wave_peaks([buf.getvalue()], bins_per_second=20, max_bins=1000)
    assert got["bins"] == 1000 and len(got["channels"][0]["peaks"]) == 1000


@pytest.mark.parametrize("blob", [b"", b"not a wave file at all", b"RIFF\0\0\0\0WAVEjunk"])
def test_garbage_is_refused(blob: bytes) -> None:
    with pytest.raises(BadWave):
        wave_peaks([blob])


def test_unsupported_encodings_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "f.wav"
    sf.write(str(path), np.zeros(800), 8000, subtype="FLOAT", format="WAV")
    with pytest.raises(BadWave, match="unsupported"):
        wave_peaks([path.read_bytes()])
