"""`callvault demo`: a sample call made with espeak-ng, redacted end to end on this machine.

The call is scripted, so the demo can show what was said next to what QA will read; every
number in it is invented. Agent on the left channel, caller on the right, 8 kHz µ-law, as
a contact centre's dual-channel recorder writes it, with the caller keying four digits.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import numpy.typing as npt
import soundfile as sf
from rich.console import Console

from callvault import wiring
from callvault.config import Settings
from redaction import report
from redaction.errors import RedactionError

RATE = 8000
SCRIPT: tuple[tuple[int, str], ...] = (
    (0, "Thank you for calling Northwind Mobile. Can I have your account number please?"),
    (1, "Sure, it's 4 8 2 0 1 7 3 5."),
    (0, "Thanks. For billing questions, press one. How can I help?"),
    (1, "I was charged eighty four dollars and twenty cents for a call to 415 555 0192."),
    (0, "I see it. There may be a two minute wait while I check."),
    (1, "Fine. My card number is 4111 1111 1111 1111."),
)
_KEYS = "7391"
_FREQS = {"1": (697, 1209), "3": (697, 1477), "7": (852, 1209), "9": (852, 1477)}


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RedactionError(f"the demo needs {name} (make installs it)")
    return path


def _speak(text: str, voice: str, tmp: Path) -> npt.NDArray[np.float32]:
    wav = tmp / "piece.wav"
    subprocess.run([_tool("espeak-ng"), "-v", voice, "-s", "160", "-w", str(wav), text], check=True,
                   capture_output=True)
    low = tmp / "piece8k.wav"  # espeak writes 22.05 kHz; sox does the anti-aliased step
    subprocess.run([_tool("sox"), str(wav), "-r", str(RATE), "-c", "1", str(low)], check=True,
                   capture_output=True)
    data, _ = sf.read(str(low), dtype="float32")
    return np.asarray(data, dtype=np.float32) * 0.8


def _tones() -> npt.NDArray[np.float32]:
    t = np.arange(int(0.1 * RATE)) / RATE
    gap = np.zeros(int(0.1 * RATE), dtype=np.float32)
    parts: list[npt.NDArray[np.float32]] = []
    for key in _KEYS:
        lo, hi = _FREQS[key]
        parts += [(0.2 * (np.sin(2 * np.pi * lo * t) + np.sin(2 * np.pi * hi * t)))
                  .astype(np.float32), gap]
    return np.concatenate(parts)


def make_sample(path: Path) -> list[tuple[int, float, float, str]]:
    """Write the scripted two-channel call to `path`; return where each line was said.

    Each entry is (channel, start s, end s, what): the line's index in `SCRIPT`, or "dtmf".
    """
    _tool("espeak-ng")
    _tool("sox")
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        tracks: list[list[npt.NDArray[np.float32]]] = [[], []]
        where: list[tuple[int, float, float, str]] = []
        cursor = [0, 0]
        pause = np.zeros(int(0.4 * RATE), dtype=np.float32)
        for speaker, line in SCRIPT:
            audio = _speak(line, "en-us" if speaker == 0 else "en-gb+f3", tmp)
            start = max(cursor) + len(pause)
            for ch in (0, 1):
                tracks[ch].append(np.zeros(start - cursor[ch], dtype=np.float32))
                cursor[ch] = start
            tracks[speaker].append(audio)
            where.append((speaker, start / RATE, (start + len(audio)) / RATE,
                          str(SCRIPT.index((speaker, line)))))
            cursor[speaker] += len(audio)
            if speaker == 0 and line.startswith("Thanks."):
                tones = _tones()
                tracks[1].append(tones)
                where.append((1, cursor[1] / RATE, (cursor[1] + len(tones)) / RATE, "dtmf"))
                cursor[1] += len(tones)
        end = max(cursor) + len(pause)
        chans = [np.concatenate([*tracks[ch], np.zeros(end - cursor[ch], np.float32)])
                 for ch in (0, 1)]
        rng = np.random.default_rng(1)
        stereo = np.stack(chans, axis=1) + rng.normal(0, 0.002, (end, 2)).astype(np.float32)
        sf.write(str(path), np.clip(stereo, -1, 1), RATE, subtype="ULAW", format="WAV")
    return where


def run(settings: Settings, workdir: Path, console: Console) -> int:
    """Make the sample, redact it, print where everything went; return the exit code."""
    workdir.mkdir(parents=True, exist_ok=True)
    sample = workdir / "sample-call.wav"
    out = workdir / "sample-call.redacted.wav"
    rep = workdir / "sample-call.report.json"
    console.print(f"1. synthesising a two-channel sample call -> {sample}", markup=False)
    make_sample(sample)
    console.print(f"2. loading Whisper model {settings.whisper_model}", markup=False)
    transcriber = wiring.transcriber(settings)
    cfg = wiring.redact_config(settings)
    console.print("3. transcribing, detecting, muting, verifying ...", markup=False)
    outcome = wiring.redact_file(sample, out, transcriber, cfg)
    doc = report.build(src=sample, out=out, outcome=outcome, model=transcriber.spec, cfg=cfg,
                       status="clean")
    report.write(rep, doc)
    console.print("\nWhat QA reads (redacted transcript):", markup=False)
    for channel in doc["channels"]:
        who = "agent " if channel["channel"] == 0 else "caller"
        console.print(f"  {who}: {channel['transcript']}", markup=False, soft_wrap=True)
    labels = sorted({s["label"] for s in doc["spans"]})
    console.print(f"\n{len(doc['spans'])} spans muted ({', '.join(labels)}); "
                  f"verification: {json.dumps(doc['verification']['passed'])} over "
                  f"{doc['verification']['checked_seconds']} s re-heard", markup=False)
    console.print(f"\nfiles:\n  original  {sample}\n  redacted  {out}\n  report    {rep}",
                  markup=False)
    return 0


def run_vault(settings: Settings, workdir: Path, console: Console) -> int:
    """The same call through the vault: ingest, pipeline, QA and compliance access, the
    access log. Runs on the embedded PostgreSQL and SeaweedFS unless configured away."""
    import secrets
    import shutil

    from callvault import services
    from recordings import pipeline
    from storage.access import UserRole
    from storage.errors import AccessDenied, StorageError

    inbox = workdir / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    src = inbox / "sample-call.wav"
    shutil.copyfile(workdir / "sample-call.wav", src)
    console.print("\n4. starting the vault (PostgreSQL, SeaweedFS S3) ...", markup=False)
    with services.services(settings) as svc:
        users = svc.db.users
        passwords = {}
        demo_users: tuple[tuple[str, UserRole], ...] = (
            ("demo-qa", "qa"), ("demo-compliance", "compliance"))
        for name, role in demo_users:
            passwords[name] = secrets.token_urlsafe(18)
            try:
                users.add(name, role, passwords[name])
            except StorageError:
                users.set_password(name, passwords[name])
        qa = users.authenticate("demo-qa", passwords["demo-qa"])
        compliance = users.authenticate("demo-compliance", passwords["demo-compliance"])
        rt = svc.runtime()
        reg = pipeline.register(rt, src, agent="demo-agent")
        console.print(f"5. ingested as recording {reg.recording_id}; the source file is "
                      f"{'gone' if not src.exists() else 'still there'}, an encrypted copy "
                      "waits in the spool", markup=False)
        console.print("6. pipeline: upload raw, transcribe, redact, verify, store ...",
                      markup=False)

        async def drain() -> None:
            app = pipeline.build_app(rt)
            async with app.open_async():
                await pipeline.run_worker(
                    rt, app, install_signal_handlers=False,
                    stop=lambda: pipeline.recording_state(rt.dsn, reg.recording_id)
                    in ("stored", "failed"))

        import asyncio
        asyncio.run(drain())
        state = pipeline.recording_state(rt.dsn, reg.recording_id)
        console.print(f"   recording {state}", markup=False)
        if state != "stored":
            return 9
        vault = svc.vault
        doc = json.loads(vault.read_all(qa, reg.recording_id, "transcript",
                                        origin="demo"))
        for channel in doc["channels"]:
            who = "agent " if channel["channel"] == 0 else "caller"
            console.print(f"   QA reads, {who}: {channel['text']}", markup=False,
                          soft_wrap=True)
        (workdir / "vault-redacted.wav").write_bytes(
            vault.read_all(qa, reg.recording_id, "redacted", origin="demo"))
        try:
            vault.read_all(qa, reg.recording_id, "raw", origin="demo")
        except AccessDenied as exc:
            console.print(f"7. QA asking for the raw audio: refused ({exc})", markup=False)
        raw = vault.read_all(compliance, reg.recording_id, "raw", origin="demo",
                             reason="demo: compliance review of the sample call")
        console.print(f"8. compliance, with a reason: raw audio, {len(raw)} bytes",
                      markup=False)
        result = svc.db.log.verify()
        console.print(f"9. access log: {result.checked} entries, chain "
                      f"{'intact' if result.ok else 'BROKEN'}; the latest:", markup=False)
        for row in reversed(svc.db.log.show(recording_id=reg.recording_id, limit=6)):
            console.print(f"   {row.at:%H:%M:%S} {row.actor:<18} {row.role:<10} "
                          f"{row.action:<9} {row.variant or '-':<10} {row.outcome}",
                          markup=False)
        svc.db.log.write_head(svc.store.put_bytes)
    console.print(f"\nredacted copy from the vault: {workdir / 'vault-redacted.wav'}",
                  markup=False)
    return 0 if result.ok else 27
