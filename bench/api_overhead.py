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

    def bare():  # what decoding costs without the API: one file, one batch
        out = []
        for f in files:
            feats = fbank_from_waveform(load_audio(f, m.features.sample_rate), m.features, ext).unsqueeze(0)
            batch = {"inputs": feats, "input_lens": torch.tensor([feats.shape[1]]), "cut_ids": [f]}
            out += m.task.infer(m.model, batch)
        return out

    def api_each():
        return [m.transcribe(f) for f in files]

    def api_list():
        return m.transcribe(files)

    res = {}
    texts = {}
    for name, fn in (("bare", bare), ("api_per_file", api_each), ("api_list", api_list)):
        times = []
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t0)
        texts[name] = [r.text for r in out]
        res[f"{name}.ms_per_file"] = round(1000 * min(times) / len(files), 2)
    res["api_per_file_overhead_pct"] = round(100 * (res["api_per_file.ms_per_file"] / res["bare.ms_per_file"] - 1), 2)
    res["api_list_vs_bare_pct"] = round(100 * (res["api_list.ms_per_file"] / res["bare.ms_per_file"] - 1), 2)
    res["same_text_per_file"] = texts["bare"] == texts["api_per_file"]
    print(json.dumps({"files": len(files), "threads": a.threads, **res}))


if __name__ == "__main__":
    main()
