"""Peak memory of `callvault redact` against recording length: it should not grow.

Makes a short and a long recording (the demo call looped with its audio, 8 kHz µ-law
mono), redacts each in a fresh `callvault redact` process, reads the process's peak
resident set size (ru_maxrss of the child), and prints the long/short ratio. Streaming in
`block_seconds` blocks keeps it near 1; holding the whole file would grow it with length.

    .venv/bin/python bench/redact_memory.py [--short-min 10] [--long-min 40] [--model tiny.en]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from callvault.demo import make_sample


def _looped(sample: Path, minutes: float, out: Path) -> None:
    data, rate = sf.read(str(sample), dtype="float32", always_2d=True)
    caller = data[:, 1]
    reps = int(np.ceil(minutes * 60 * rate / len(caller)))
    with sf.SoundFile(str(out), "w", samplerate=rate, channels=1, subtype="ULAW",
                      format="WAV") as fh:
        for _ in range(reps):  # written piecewise so the bench itself stays small
            fh.write(caller)


_WRAPPER = (
    "import resource, subprocess, sys\n"
    "code = subprocess.run(sys.argv[1:], capture_output=True).returncode\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, code)\n"
)


def _redact(src: Path, model: str, state: Path) -> tuple[float, float, int]:
    """(peak RSS MiB, seconds, exit code) of one `callvault redact` process.

    A fresh wrapper process runs it, so the wrapper's children-maximum is this run's alone.
    """
    env = {**os.environ, "CALLVAULT_STATE_DIR": str(state), "CALLVAULT_WHISPER_MODEL": model}
    cmd = [sys.executable, "-c", _WRAPPER, sys.executable, "-c",
           "from callvault.cli import main; main()", "redact", str(src), "--out",
           str(src.with_suffix(".redacted.wav"))]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - t0
    peak_kib, code = (int(v) for v in proc.stdout.split())
    if code:
        print(f"  {src.name}: exit {code}")
    return peak_kib / 1024, seconds, code


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short-min", type=float, default=10.0)
    parser.add_argument("--long-min", type=float, default=40.0)
    parser.add_argument("--model", default="tiny.en")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        sample = root / "sample.wav"
        make_sample(sample)
        short, long_ = root / "short.wav", root / "long.wav"
        _looped(sample, args.short_min, short)
        _looped(sample, args.long_min, long_)
        peak_long, t_long, _ = _redact(long_, args.model, root / "state")
        peak_short, t_short, _ = _redact(short, args.model, root / "state2")
    print(f"short {args.short_min:g} min: peak {peak_short:.0f} MiB ({t_short:.0f} s)")
    print(f"long  {args.long_min:g} min: peak {peak_long:.0f} MiB ({t_long:.0f} s)")
    print(f"RATIO long/short peak memory = {peak_long / peak_short:.2f} "
          f"for {args.long_min / args.short_min:.1f}x the audio")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
