"""Self-test of the synthetic corpus builder and the audio-only redaction scorer."""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.support.corpus import (
    HARMLESS,
    LABELS,
    SUBTYPES,
    SYNTHS,
    Clip,
    Item,
    Score,
    build_corpus,
    make_value,
    merge_scores,
    score,
)

SEED = 20240607
N_CLIPS = 3


@pytest.fixture(scope="module", params=SYNTHS)
def synth(request: pytest.FixtureRequest) -> str:
    """Every synthesizer the corpus speaks with: each must give exact spans."""
    return str(request.param)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, synth: str) -> list[Clip]:
    """Three clips built once per synthesizer."""
    return build_corpus(tmp_path_factory.mktemp("corpus"), seed=SEED, n_clips=N_CLIPS,
                        synth=synth)


def _encoding(clip: Clip) -> str:
    match = re.search(r"_(ulaw|alaw|pcm16)\.wav$", clip.path.name)
    assert match is not None, clip.path.name
    return match.group(1)


def _sensitive(clip: Clip, ch: int) -> list[Item]:
    return [it for it in clip.channel_items[ch] if it.label != HARMLESS]


Change = Callable[[np.ndarray, int, int, int, int], None]


def _edit(clip: Clip, dest: Path, change: Change) -> Path:
    """Copy ``clip`` to ``dest`` in its format, applying ``change(data, ch, i0, i1, rate)``.

    ``change`` is called once per sensitive item and DTMF tone, with its sample range.
    """
    data, rate = sf.read(str(clip.path), dtype="float64", always_2d=True)
    for ch in range(clip.channels):
        spans = [(it.start, it.end) for it in _sensitive(clip, ch)]
        spans += [(start, end) for start, end, _digit in clip.dtmf[ch]]
        for start, end in spans:
            change(data, ch, int(np.floor(start * rate)), int(np.ceil(end * rate)), rate)
    subtype = sf.info(str(clip.path)).subtype
    sf.write(str(dest), data, rate, subtype=subtype, format="WAV")
    return dest


def test_files_have_declared_format(corpus: list[Clip]) -> None:
    """Each WAV exists with the declared rate, channel count, encoding and an 8-40 s length."""
    assert len(corpus) == N_CLIPS
    for clip in corpus:
        info = sf.info(str(clip.path))
        assert clip.path.is_file()
        assert info.samplerate == clip.sample_rate in (8000, 16000)
        assert info.channels == clip.channels in (1, 2)
        assert info.subtype == SUBTYPES[_encoding(clip)]
        assert 8.0 <= info.duration <= 40.0
        assert len(clip.channel_items) == len(clip.speech) == len(clip.dtmf) == clip.channels


def test_corpus_covers_labels_and_formats(corpus: list[Clip]) -> None:
    """The corpus has every label, harmless numbers, every encoding, stereo and DTMF."""
    labels = {it.label for clip in corpus for chan in clip.channel_items for it in chan}
    assert labels >= set(LABELS) | {HARMLESS}
    assert {_encoding(clip) for clip in corpus} == set(SUBTYPES)
    assert any(clip.channels == 2 for clip in corpus)
    assert any(any(chan) for clip in corpus for chan in clip.dtmf)
    for clip in corpus:
        for start, end, digit in (t for chan in clip.dtmf for t in chan):
            assert 0.055 <= end - start <= 0.125 and digit in "0123456789*#"


def test_items_are_in_bounds_and_disjoint(corpus: list[Clip]) -> None:
    """Items and speech lie inside the file, never overlap, and items are speech pieces."""
    for clip in corpus:
        duration = sf.info(str(clip.path)).duration
        everything: list[tuple[float, float]] = []
        for ch in range(clip.channels):
            items = clip.channel_items[ch]
            assert list(items) == sorted(items, key=lambda it: it.start)
            for it in items:
                assert 0.0 < it.start < it.end < duration and it.text.strip()
                assert (it.start, it.end) in clip.speech[ch]
            for a, b in itertools.pairwise(items):
                assert a.end <= b.start
            everything += list(clip.speech[ch])
            everything += [(start, end) for start, end, _digit in clip.dtmf[ch]]
        # one party talks at a time: nothing overlaps, even across channels
        everything.sort()
        for (_s1, e1), (s2, _e2) in itertools.pairwise(everything):
            assert e1 <= s2


def test_spans_match_the_audio(corpus: list[Clip]) -> None:
    """Each item's loudest 10 ms stands well above the gaps just before and after it."""
    for clip in corpus:
        data, rate = sf.read(str(clip.path), dtype="float64", always_2d=True)
        frame = rate // 100

        def rms(x: np.ndarray) -> float:
            return float(np.sqrt(np.mean(x**2)))

        for ch in range(clip.channels):
            x = data[:, ch]
            for it in clip.channel_items[ch]:
                i0, i1 = int(it.start * rate), int(it.end * rate)
                peak = max(rms(x[i : i + frame]) for i in range(i0, i1 - frame, frame // 2))
                before = rms(x[i0 - int(0.035 * rate) : i0 - int(0.008 * rate)])
                after = rms(x[i1 + int(0.008 * rate) : i1 + int(0.035 * rate)])
                assert peak > 4.0 * max(before, after), (clip.path.name, it)


def test_audio_is_telephone_like(corpus: list[Clip]) -> None:
    """Each channel has line noise, speech 15-45 dB above it, and nothing out of band."""
    for clip in corpus:
        data, rate = sf.read(str(clip.path), dtype="float64", always_2d=True)
        frame = rate // 100
        for ch in range(clip.channels):
            x = data[:, ch]
            frames = x[: len(x) // frame * frame].reshape(-1, frame)
            floor = float(np.percentile(np.sqrt(np.mean(frames**2, axis=1)), 10))
            assert floor > 1e-5, "no line noise"
            speech = np.concatenate([x[int(a * rate) : int(b * rate)] for a, b in clip.speech[ch]])
            snr_db = 20 * np.log10(np.sqrt(np.mean(speech**2)) / floor)
            assert 15.0 < snr_db < 45.0, snr_db
            power = np.abs(np.fft.rfft(x)) ** 2
            freqs = np.fft.rfftfreq(len(x), 1.0 / rate)
            outside = power[(freqs < 200) | (freqs > 3600)].sum() / power.sum()
            assert outside < 0.02, outside


def test_dtmf_tones_are_the_recorded_digits(corpus: list[Clip]) -> None:
    """The two strongest frequencies of each DTMF tone are those of its recorded digit."""
    freqs_of = {
        "1": (697, 1209), "2": (697, 1336), "3": (697, 1477),
        "4": (770, 1209), "5": (770, 1336), "6": (770, 1477),
        "7": (852, 1209), "8": (852, 1336), "9": (852, 1477),
        "*": (941, 1209), "0": (941, 1336), "#": (941, 1477),
    }  # fmt: skip
    tones = 0
    for clip in corpus:
        data, rate = sf.read(str(clip.path), dtype="float64", always_2d=True)
        for ch in range(clip.channels):
            for start, end, digit in clip.dtmf[ch]:
                seg = data[int(start * rate) : int(end * rate), ch]
                t = np.arange(len(seg)) / rate
                energy = {
                    f: abs(np.sum(seg * np.exp(-2j * np.pi * f * t)))
                    for f in (697, 770, 852, 941, 1209, 1336, 1477, 1633)
                }
                low = max((697, 770, 852, 941), key=lambda f: energy[f])
                high = max((1209, 1336, 1477, 1633), key=lambda f: energy[f])
                assert (low, high) == freqs_of[digit]
                tones += 1
    assert tones >= 3


def test_same_seed_same_corpus(corpus: list[Clip], synth: str, tmp_path: Path) -> None:
    """The same seed rebuilds identical items and audio; another seed does not."""
    again = build_corpus(tmp_path / "again", seed=SEED, n_clips=N_CLIPS, synth=synth)
    for a, b in zip(corpus, again, strict=True):
        assert a.path.name == b.path.name
        assert (a.channel_items, a.speech, a.dtmf) == (b.channel_items, b.speech, b.dtmf)
        assert a.path.read_bytes() == b.path.read_bytes()
    other = build_corpus(tmp_path / "other", seed=SEED + 1, n_clips=1, synth=synth)
    assert other[0].channel_items != corpus[0].channel_items


def test_identity_mutes_nothing(corpus: list[Clip]) -> None:
    """Scoring a clip against itself finds nothing muted and no over-redaction."""
    for clip in corpus:
        s = score(clip, clip.path)
        assert s.items_total > 0 or s.dtmf_total > 0 or s.harmless_total > 0
        assert s.items_muted == 0 and s.dtmf_muted == 0
        assert s.harmless_kept == s.harmless_total
        assert s.clean_speech_seconds > 2.0
        assert s.over_redacted_seconds == 0.0 and s.over_redaction() == 0.0
        assert len(s.missed) == s.items_total


def test_zeroing_sensitive_items_is_perfect(corpus: list[Clip], tmp_path: Path) -> None:
    """Silencing exactly the sensitive items and DTMF gives full recall and no over-redaction."""

    def zero(data: np.ndarray, ch: int, i0: int, i1: int, rate: int) -> None:
        data[i0:i1, ch] = 0.0

    for clip in corpus:
        s = score(clip, _edit(clip, tmp_path / clip.path.name, zero))
        assert s.recall() == 1.0 and s.dtmf_recall() == 1.0 and not s.missed
        assert s.harmless_kept == s.harmless_total
        assert s.over_redaction() < 0.005


def test_zeroing_everything_is_total_over_redaction(corpus: list[Clip], tmp_path: Path) -> None:
    """An all-silent output mutes every item, keeps no harmless number, over-redacts ~100 %."""
    for clip in corpus:
        data, rate = sf.read(str(clip.path), dtype="float64", always_2d=True)
        dest = tmp_path / clip.path.name
        sf.write(str(dest), np.zeros_like(data), rate, subtype=sf.info(str(clip.path)).subtype)
        s = score(clip, dest)
        assert s.recall() == 1.0 and s.dtmf_recall() == 1.0
        assert s.harmless_kept == 0
        assert s.over_redaction() > 0.99


def test_tone_replacement_counts_as_muted(corpus: list[Clip], tmp_path: Path) -> None:
    """Replacing items with a 1 kHz tone counts as muting them."""

    def tone(data: np.ndarray, ch: int, i0: int, i1: int, rate: int) -> None:
        t = np.arange(i1 - i0) / rate
        data[i0:i1, ch] = 0.1 * np.sin(2 * np.pi * 1000.0 * t)

    for clip in corpus:
        s = score(clip, _edit(clip, tmp_path / clip.path.name, tone))
        assert s.recall() == 1.0 and s.dtmf_recall() == 1.0
        assert s.over_redaction() < 0.005


def test_partial_muting_is_not_enough(corpus: list[Clip], tmp_path: Path) -> None:
    """Muting only the first half of each item leaves every item missed."""

    def half(data: np.ndarray, ch: int, i0: int, i1: int, rate: int) -> None:
        data[i0 : (i0 + i1) // 2, ch] = 0.0

    for clip in corpus:
        s = score(clip, _edit(clip, tmp_path / clip.path.name, half))
        assert s.items_muted == 0 and s.dtmf_muted == 0
        assert len(s.missed) == s.items_total


@pytest.mark.parametrize("subtype", ["PCM_16", "ULAW", "ALAW"])
def test_requantisation_is_not_muting(corpus: list[Clip], tmp_path: Path, subtype: str) -> None:
    """Re-encoding a clip as PCM-16, mu-law or A-law does not count as muting."""
    for clip in corpus:
        data, rate = sf.read(str(clip.path), dtype="float64", always_2d=True)
        dest = tmp_path / f"{subtype}_{clip.path.name}"
        sf.write(str(dest), data, rate, subtype=subtype, format="WAV")
        s = score(clip, dest)
        assert s.items_muted == 0 and s.dtmf_muted == 0
        assert s.harmless_kept == s.harmless_total
        assert s.over_redacted_seconds == 0.0


def test_mismatched_files_are_rejected(corpus: list[Clip], tmp_path: Path) -> None:
    """A redacted file with another length or sample rate is an error, not a score."""
    clip = corpus[0]
    data, rate = sf.read(str(clip.path), dtype="float64", always_2d=True)
    short = tmp_path / "short.wav"
    sf.write(str(short), data[:-10], rate, subtype="PCM_16")
    with pytest.raises(AssertionError):
        score(clip, short)
    other_rate = tmp_path / "rate.wav"
    sf.write(str(other_rate), data, 24000, subtype="PCM_16")
    with pytest.raises(AssertionError):
        score(clip, other_rate)


def test_merge_scores_adds_up() -> None:
    """merge_scores sums every field, and the ratios follow from the sums."""
    item = Item("PIN", 1.0, 2.0, "one two three four")
    a = Score(4, 3, 2, 2, 5, 4, 10.0, 1.0, (item,))
    b = Score(6, 6, 0, 0, 1, 0, 30.0, 3.0, ())
    m = merge_scores([a, b])
    assert m == Score(10, 9, 2, 2, 6, 4, 40.0, 4.0, (item,))
    assert m.recall() == 0.9 and m.dtmf_recall() == 1.0 and m.over_redaction() == 0.1
    empty = merge_scores([])
    assert empty.recall() == 1.0 and empty.dtmf_recall() == 1.0 and empty.over_redaction() == 0.0


def test_values_are_said_many_ways() -> None:
    """Each label's values come out in many different wordings, digits and words alike."""
    rng = random.Random(5)
    for label in LABELS:
        said = [make_value(label, rng) for _ in range(200)]
        assert all(s.strip() for s in said)
        assert len(set(said)) > 120, label
        if label not in ("CALL_DURATION", "CALL_DATETIME"):
            assert any(any(c.isdigit() for c in s) for s in said), label
        assert any(not any(c.isdigit() for c in s) for s in said), label


def test_flite_speaks_other_audio_with_the_same_script(tmp_path: Path) -> None:
    """Same seed, other synthesizer: the same items in the same order, other audio."""
    a = build_corpus(tmp_path / "espeak", seed=SEED, n_clips=1)[0]
    b = build_corpus(tmp_path / "flite", seed=SEED, n_clips=1, synth="flite")[0]
    assert [[(i.label, i.text) for i in ch] for ch in a.channel_items] == \
        [[(i.label, i.text) for i in ch] for ch in b.channel_items]
    assert a.path.read_bytes() != b.path.read_bytes()
    with pytest.raises(ValueError, match="unknown synthesizer"):
        build_corpus(tmp_path / "x", seed=SEED, n_clips=1, synth="festival")
