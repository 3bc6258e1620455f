#!/usr/bin/env python3
"""Per-call overhead of the Python API (``auden_kit.load(DIR).transcribe``) against the bare
decoding path it wraps (read audio, fbank, one batch through ``task.infer``), on short files.
Prints one JSON line; the goal is an overhead within 5 %.

    python bench/api_overhead.py --model egs/mini_synth/exp/model-avg \\
        --files 'egs/mini_synth/download/LibriSpeech/test-clean/*/*/*.flac' --n 50
"""

import argparse
import glob
import json
import time


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--files", required=True, help="glob of audio files")
    p.add_argument("--n", type=int, default=50)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()

    import torch

    torch.set_num_threads(a.threads)
    import auden_kit
    from auden_kit.data.audio import load_audio
    from auden_kit.data.features import fbank_from_waveform

    files = sorted(glob.glob(a.files))[: a.n]
    m = auden_kit.load(a.model)
    ext = m.features.extractor()

    def bare(f):  # what decoding costs without the API: read, fbank, one batch through the task
        feats = fbank_from_waveform(load_audio(f, m.features.sample_rate), m.features, ext).unsqueeze(0)
        batch = {"inputs": feats, "input_lens": torch.tensor([feats.shape[1]]), "cut_ids": [f]}
        return m.task.infer(m.model, batch)[0]

    def api(f):
        return m.transcribe(f)

    # interleaved per file (bare, API, API, bare, ...) so that drifts of the machine's speed hit
    # both alike; the overhead is the median of the per-call differences
    res, diffs, base, same = {}, [], [], True
    for _ in range(a.repeats):
        for i, f in enumerate(files):
            order = (bare, api) if i % 2 == 0 else (api, bare)
            t = {}
            for fn in order:
                t0 = time.perf_counter()
                out = fn(f)
                t[fn.__name__] = time.perf_counter() - t0
                t[fn.__name__ + "_text"] = out.text
            diffs.append(t["api"] - t["bare"])
            base.append(t["bare"])
            same = same and t["api_text"] == t["bare_text"]
    med = sorted(base)[len(base) // 2]
    d = sorted(diffs)[len(diffs) // 2]
    res["bare.median_ms_per_file"] = round(1000 * med, 2)
    res["api_overhead.median_ms_per_call"] = round(1000 * d, 3)
    res["api_per_file_overhead_pct"] = round(100 * d / med, 2)
    t0 = time.perf_counter()
    m.transcribe(files)
    res["api_list.ms_per_file"] = round(1000 * (time.perf_counter() - t0) / len(files), 2)
    res["same_text_per_file"] = same
    print(json.dumps({"files": len(files), "threads": a.threads, **res}))


if __name__ == "__main__":
    main()
