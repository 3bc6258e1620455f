#!/usr/bin/env python3
"""Voice encoders: embedding extraction real-time factor (one file at a time and batched),
training throughput of the voice task, and EER/minDCF time on a million trials. Prints one JSON
line. With ``--model DIR`` a trained voice folder is timed; without, a freshly initialised one
of ``--preset`` (speed does not depend on the weights).

    python bench/voice.py --files 'egs/mini_synth/download/LibriSpeech/test-clean/*/*/*.flac' --n 40
"""

import argparse
import glob
import json
import time


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--files", required=True, help="glob of audio files")
    p.add_argument("--model", default="", help="a voice model folder (default: a fresh --preset model)")
    p.add_argument("--preset", default="zipformer-s")
    p.add_argument("--n", type=int, default=40)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()

    import numpy as np
    import soundfile as sf
    import torch

    torch.set_num_threads(a.threads)
    import auden_kit
    from auden_kit.api import Model
    from auden_kit.data.features import FbankSettings
    from auden_kit.hub import LoadedModel
    from auden_kit.metrics.verification import eer, min_dcf
    from auden_kit.runtime import tune_allocator
    from auden_kit.tasks.base import ModelAssets
    from auden_kit.tasks.voice import VoiceModelConfig, VoiceTask

    tune_allocator()
    files = sorted(glob.glob(a.files))[: a.n]
    audio_s = sum(sf.info(f).duration for f in files)
    if a.model:
        m = auden_kit.load(a.model)
    else:
        cfg = VoiceModelConfig(encoder={"preset": a.preset}, heads=["gender"])
        assets = ModelAssets(label_maps={"speaker": [f"s{i}" for i in range(1000)], "gender": ["F", "M"]})
        task = VoiceTask().setup(cfg, assets)
        model = task.build_model().eval()
        m = Model(LoadedModel(task, model, cfg, assets, FbankSettings(), None))
    out = {"model": a.model or f"fresh {a.preset}", "threads": a.threads, "files": len(files),
           "audio_s": round(audio_s, 1)}
    t0 = time.perf_counter()
    for f in files:
        m.embed(f)
    out["embed.single_file.rtf"] = round((time.perf_counter() - t0) / audio_s, 5)
    t0 = time.perf_counter()
    m.embed(files)
    out["embed.batched.rtf"] = round((time.perf_counter() - t0) / audio_s, 5)
    # training throughput: forward + backward of the voice loss on 3 s crops, batch 16
    model = m.model.train()
    x, lens = torch.randn(16, 300, 80), torch.full((16,), 300)
    targets = {h: torch.randint(0, len(m.assets.labels(h.replace(".", "_"))), (16,)) for h in model.cfg.all_heads()}
    batch = {"inputs": x, "input_lens": lens, "targets": targets, "cut_ids": [str(i) for i in range(16)]}
    times = []
    for step in range(4):
        t0 = time.perf_counter()
        loss, _, n = m.task.compute_loss(model, batch, step + 1000)
        (loss / n).backward()
        times.append(time.perf_counter() - t0)
    med = sorted(times[1:])[1]
    out["train.median_s_per_step"] = round(med, 3)
    out["train.input_frames_per_s"] = round(16 * 300 / med, 1)
    rng = np.random.RandomState(0)
    labels = rng.rand(1_000_000) < 0.5
    scores = rng.randn(1_000_000) + 2 * labels
    t0 = time.perf_counter()
    eer(scores, labels)
    min_dcf(scores, labels, 0.01)
    out["eer_and_min_dcf.1M_trials_s"] = round(time.perf_counter() - t0, 3)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
