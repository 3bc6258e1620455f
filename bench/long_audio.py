#!/usr/bin/env python3
"""Audio of any length: one long file (test utterances concatenated) decoded through the API,
against the same utterances decoded one by one. Prints one JSON line:

* ``long.rtf`` / ``short.rtf``: real-time factors (their ratio: goal <= 1.2),
* ``long.peak_mib_above_baseline``: peak resident memory while decoding the long file, above the
  process after the model is loaded (goal < 2 GiB for an hour),
* ``long.wer`` / ``short.wer``: WER of the long file's stitched transcript and of the utterances
  decoded one by one (goal: within 1 point).

    python bench/long_audio.py --model egs/mini_synth/exp/model-avg \\
        --corpus egs/mini_synth/download/LibriSpeech/test-clean --hours 1
"""

import argparse
import json
import time
from pathlib import Path


def _status(key: str) -> float:
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024
    return 0.0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--corpus", required=True, help="LibriSpeech-layout folder (*.flac + *.trans.txt)")
    p.add_argument("--hours", type=float, default=1.0)
    p.add_argument("--gap", type=float, default=0.3, help="seconds of silence between utterances")
    p.add_argument("--max-segment", type=float, default=30.0)
    p.add_argument("--method", default="greedy")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="/tmp/auden_kit_long.flac")
    a = p.parse_args()

    import numpy as np
    import soundfile as sf
    import torch

    torch.set_num_threads(a.threads)
    import auden_kit
    from auden_kit.data.audio import load_audio
    from auden_kit.metrics.wer import compute_wer
    from auden_kit.runtime import tune_allocator

    tune_allocator()
    refs = {}
    for t in Path(a.corpus).rglob("*.trans.txt"):
        for line in t.read_text().splitlines():
            k, v = line.split(" ", 1)
            refs[k] = v
    files = sorted(f for f in Path(a.corpus).rglob("*.flac") if f.stem in refs)
    m = auden_kit.load(a.model)
    # short files, one by one (batched as the CLI does)
    t0 = time.time()
    short = m.transcribe([str(f) for f in files], method=a.method)
    short_s = time.time() - t0
    audio_s = sum(sf.info(str(f)).duration for f in files)
    short_wer = compute_wer([(f.stem, refs[f.stem], r.text) for f, r in zip(files, short)]).wer
    # one long file: the utterances repeated to the asked length
    gap = np.zeros(int(a.gap * 16000), dtype=np.float32)
    total, ref_words = 0.0, []
    with sf.SoundFile(a.out, "w", samplerate=16000, channels=1, subtype="PCM_16") as out:
        while total < a.hours * 3600:
            for f in files:
                x = load_audio(f).numpy()
                out.write(x)
                out.write(gap)
                ref_words.append(refs[f.stem])
                total += len(x) / 16000 + a.gap
                if total >= a.hours * 3600:
                    break
    base = _status("VmRSS")
    try:  # reset the high-water mark so that VmHWM measures the long decode only
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    t0 = time.time()
    long = m.transcribe(a.out, method=a.method, max_segment=a.max_segment)
    long_s = time.time() - t0
    peak = _status("VmHWM")
    long_wer = compute_wer([("long", " ".join(ref_words), long.text)]).wer
    print(json.dumps({
        "model": a.model, "threads": a.threads, "method": a.method,
        "short.files": len(files), "short.audio_s": round(audio_s, 1), "short.rtf": round(short_s / audio_s, 5),
        "short.wer": round(short_wer, 2),
        "long.audio_s": round(total, 1), "long.rtf": round(long_s / total, 5), "long.wer": round(long_wer, 2),
        "long.peak_mib_above_baseline": round(peak - base, 1),
        "rtf_ratio_long_over_short": round((long_s / total) / (short_s / audio_s), 3),
        "wer_diff_long_minus_short": round(long_wer - short_wer, 2),
    }))


if __name__ == "__main__":
    main()
