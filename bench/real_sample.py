#!/usr/bin/env python3
"""Real-audio smoke check of diarized ASR: the 30 s two-speaker telephone excerpt that the
``pyannote.audio`` wheel ships (``pyannote/audio/sample/sample.{wav,rttm,stm}``), decoded by a
tagspeech model folder (and the cascade, given a voice and an ASR model), written as RTTM and STM,
and scored against both references with ``auden-kit score-segments`` (DER against the RTTM;
cpWER, tcpWER, DER against the STM). The wheel is read as a zip file; pyannote.audio is never
imported or installed. Get it once (network):

    pip download --no-deps pyannote.audio -d /tmp/pyannote_wheel

    python bench/real_sample.py --wheel /tmp/pyannote_wheel --model egs/mini_synth_meeting/exp/tagspeech/model-avg \\
        --voice-model egs/mini_synth_voice/exp/model-avg --asr-model egs/mini_synth/exp/model-avg

Prints one line per system and reference, and the real-time factor of each decode."""

import argparse
import json
import subprocess
import sys
import time
import zipfile
from pathlib import Path

SAMPLE = "pyannote/audio/sample/sample."


def extract(wheel: Path, out: Path) -> dict:
    whl = wheel if wheel.is_file() else next(iter(sorted(wheel.glob("pyannote_audio-*.whl"))), None)
    if whl is None:
        sys.exit(f"no pyannote_audio-*.whl in '{wheel}' (pip download --no-deps pyannote.audio -d {wheel})")
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    with zipfile.ZipFile(whl) as z:
        for ext in ("wav", "rttm", "stm"):
            try:
                data = z.read(SAMPLE + ext)
            except KeyError:
                sys.exit(f"'{whl}' has no {SAMPLE + ext} (a pyannote.audio wheel from 3.x on ships it)")
            files[ext] = out / f"sample.{ext}"
            files[ext].write_bytes(data)
    print(f"sample from {whl.name}")
    return files


def cli(*args: str) -> str:
    r = subprocess.run([sys.executable, "-m", "auden_kit.cli.main", *args], capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"auden-kit {' '.join(args)} failed:\n{r.stderr[-2000:]}")
    return r.stdout


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wheel", type=Path, required=True, help="the pyannote.audio wheel, or a folder holding it")
    ap.add_argument("--model", default="", help="tagspeech model folder")
    ap.add_argument("--voice-model", default="", help="voice model folder (cascade)")
    ap.add_argument("--asr-model", default="", help="ASR model folder (cascade)")
    ap.add_argument("--threshold", default="0.4", help="cascade clustering threshold")
    ap.add_argument("--out-dir", type=Path, default=Path("exp/real_sample"))
    a = ap.parse_args()
    f = extract(a.wheel, a.out_dir)
    systems = []
    if a.model:
        systems.append(("tagspeech", ["decode", "--model", a.model]))
    if a.voice_model and a.asr_model:
        systems.append(("cascade", ["diarize", "--voice-model", a.voice_model, "--asr-model", a.asr_model,
                                    "--threshold", a.threshold]))
    if not systems:
        sys.exit("give --model (tagspeech) and/or --voice-model with --asr-model (cascade)")
    report = {}
    for name, cmd in systems:
        t0 = time.time()
        for fmt in ("stm", "rttm"):
            hyp = a.out_dir / f"hyp-{name}.{fmt}"
            hyp.write_text(cli(*cmd, "--output", fmt, str(f["wav"])))
        rtf = (time.time() - t0) / 2 / 30.0
        report[name] = {"rtf": round(rtf, 3)}
        for ref in ("stm", "rttm"):
            js = a.out_dir / f"metrics-{name}-vs-{ref}.json"
            line = cli("score-segments", str(f[ref]), str(a.out_dir / f"hyp-{name}.{ref}"), "--out", str(js))
            report[name][ref] = {k: v for k, v in json.loads(js.read_text()).items() if k != "per_meeting"}
            print(f"{name:10} vs {ref:4}: {line.strip()}")
        print(f"{name:10} RTF {rtf:.3f} (CLI start-up included)")
    (a.out_dir / "report.json").write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
