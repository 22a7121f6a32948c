"""Redaction measured from the output audio over a generated espeak-ng speech corpus.

The corpus (tests/support/corpus.py) is built at test time: several voices, speeds and
pitches, 8 and 16 kHz, µ-law/A-law/PCM, mono and dual-channel, telephone band and noise,
every label in many phrasings, harmless numbers, and DTMF bursts.

Issue 2 targets item recall >= 0.98 (an item counts when >= 90 % of its voiced time is
muted), DTMF recall 1.0 and over-redaction <= 5 % of non-sensitive speech time. DTMF is
held to its target. Speech is NOT there yet: Whisper base mis-hears espeak-ng digits at
8 kHz so often that some items never come out as numbers or cues at all (see the README's
"Measured" section).

The speech figures also move with the processor. CTranslate2 and MKL pick their kernels by
the CPU's vector extensions, the last bits of the scores differ, and on this mis-heard
speech the beam search then writes different words: the same code and corpus gave 66/72
items on one machine, 54/72 on another (AVX-512 and AMX) and 58/72 on that one with both
libraries forced to their AVX2 kernels. The decoder's random seed is fixed per clip, so a
run repeats on one machine, and every run writes its figures and the CPU to
artifacts/recall.json. Until the recogniser is better the speech assertions are
regression floors under the lowest figures measured (recall 0.76, over-redaction 0.12 to
0.17 with this version's detection, harmless kept 0.81), not the targets.

A second, held-out corpus is spoken by flite's voices (the same scripts, other speech)
on a seed that was never looked at while the rules were mended: there Whisper hears the
values far better, and recall came out at 43/44 with over-redaction 0.14, so the gap on
the espeak-ng corpus is mostly the recogniser on robotic 8 kHz speech, while
over-redaction is the rules' and the padding's on both. Its figures go to
artifacts/recall-flite.json.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

import ctranslate2
import pytest

from callvault import wiring
from callvault.config import load_settings
from redaction.errors import RedactionError
from tests.support.corpus import Clip, Score, build_corpus, merge_scores, score

pytestmark = pytest.mark.slow

SEED = 20261204
N_CLIPS = 24
# The held-out corpus: flite's voices, a seed never looked at while the rules were mended.
FLITE_SEED = 4242
FLITE_CLIPS = 16


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Clip], Score, list[str]]:
    return _measure(tmp_path_factory.mktemp("recall"), "espeak-ng", SEED, N_CLIPS,
                    "recall.json")


@pytest.fixture(scope="module")
def flite_results(tmp_path_factory: pytest.TempPathFactory
                  ) -> tuple[list[Clip], Score, list[str]]:
    return _measure(tmp_path_factory.mktemp("recall-flite"), "flite", FLITE_SEED,
                    FLITE_CLIPS, "recall-flite.json")


def _measure(root: Path, synth: str, seed: int, n_clips: int,
             artifact: str) -> tuple[list[Clip], Score, list[str]]:
    clips = build_corpus(root / "in", seed=seed, n_clips=n_clips, synth=synth)
    settings = load_settings(None, state_dir=root / "state")
    transcriber = wiring.transcriber(settings)
    cfg = wiring.redact_config(settings)
    scores: list[Score] = []
    failures: list[str] = []
    for clip in clips:
        out = root / "out" / clip.path.name
        # Whisper's temperature fallback samples, and CTranslate2's random state runs on
        # from clip to clip: without a fixed seed the same code scores +-3 items between
        # runs, which hides any change smaller than that. Fixed here, for the test only.
        ctranslate2.set_random_seed(1)
        try:
            wiring.redact_file(clip.path, out, transcriber, cfg)
        except RedactionError as exc:
            failures.append(f"{clip.path.name}: {exc}")
            continue
        scores.append(score(clip, out))
    merged = merge_scores(scores)
    artifacts = Path(__file__).resolve().parents[2] / "artifacts"
    artifacts.mkdir(exist_ok=True)
    (artifacts / artifact).write_text(json.dumps({
        "synth": synth, "seed": seed, "clips": len(clips), "failed": len(failures),
        "recall": merged.recall(),
        "items": [merged.items_muted, merged.items_total],
        "dtmf_recall": merged.dtmf_recall(), "over_redaction": merged.over_redaction(),
        "harmless_kept": [merged.harmless_kept, merged.harmless_total],
        "missed_labels": sorted(m.label for m in merged.missed), "cpu": _cpu()}, indent=2))
    return clips, merged, failures


def _cpu() -> dict[str, object]:
    """The processor and the vector extensions that pick CTranslate2's and MKL's kernels:
    the figures differ between machines by these (see the module docstring)."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                name = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
                break
    except OSError:
        pass
    return {"name": name, "extensions": sorted(flags & {"avx2", "avx512f", "avx512_vnni",
                                                          "avx_vnni", "amx_int8"})}


def test_corpus_covers_every_label(results: tuple[list[Clip], Score, list[str]]) -> None:
    """The generated corpus holds every CPNI label, harmless numbers and DTMF."""
    clips, _, _ = results
    labels = {i.label for c in clips for items in c.channel_items for i in items}
    assert labels >= {"ACCOUNT_NUMBER", "PIN", "SSN", "CARD_NUMBER", "CARD_EXPIRY",
                      "CARD_CVV", "PHONE_NUMBER", "CALL_DATETIME", "CALL_DURATION",
                      "BILL_AMOUNT", "ADDRESS", "HARMLESS"}
    assert any(tones for c in clips for tones in c.dtmf)


def test_no_clip_fails_verification(results: tuple[list[Clip], Score, list[str]]) -> None:
    """Every clip is redacted and proven clean (fail-closed never fires on this corpus)."""
    _, _, failures = results
    assert failures == []


RECALL_FLOOR = 0.70            # target 0.98, not met: see the module docstring
OVER_REDACTION_CEILING = 0.22  # target 0.05, not met
HARMLESS_KEPT_FLOOR = 0.7


def test_item_recall(results: tuple[list[Clip], Score, list[str]]) -> None:
    """Sensitive items muted >= 90 %: no worse than the lowest recall measured (floor)."""
    _, merged, _ = results
    missed = [(m.label, round(m.start, 2)) for m in merged.missed]
    assert merged.recall() >= RECALL_FLOOR, missed


def test_dtmf_recall(results: tuple[list[Clip], Score, list[str]]) -> None:
    """Every in-band DTMF tone is muted."""
    _, merged, _ = results
    assert merged.dtmf_total > 0 and merged.dtmf_recall() == 1.0


def test_over_redaction(results: tuple[list[Clip], Score, list[str]]) -> None:
    """Muted non-sensitive speech time stays under the highest measured (ceiling)."""
    _, merged, _ = results
    assert merged.over_redaction() <= OVER_REDACTION_CEILING


def test_harmless_numbers_kept(results: tuple[list[Clip], Score, list[str]]) -> None:
    """Most harmless numbers ("press one", "a two minute wait") are left audible."""
    _, merged, _ = results
    assert merged.harmless_kept >= HARMLESS_KEPT_FLOOR * merged.harmless_total


# Measured on 2026-12-05 (AVX-512 machine): see the README, "Voices the corpus does not use".
FLITE_RECALL_FLOOR = 0.90
FLITE_OVER_REDACTION_CEILING = 0.20
FLITE_HARMLESS_KEPT_FLOOR = 0.7


def test_held_out_voices(flite_results: tuple[list[Clip], Score, list[str]]) -> None:
    """The same detection over flite's voices, on a seed the rules were not tuned on:
    every clip proven clean, DTMF all muted, and speech no worse than measured. Clearer
    speech than espeak-ng's is heard far better (the README has the figures)."""
    _, merged, failures = flite_results
    assert failures == []
    assert merged.dtmf_total == 0 or merged.dtmf_recall() == 1.0
    missed = [(m.label, round(m.start, 2)) for m in merged.missed]
    assert merged.recall() >= FLITE_RECALL_FLOOR, missed
    assert merged.over_redaction() <= FLITE_OVER_REDACTION_CEILING
    assert merged.harmless_kept >= FLITE_HARMLESS_KEPT_FLOOR * merged.harmless_total
