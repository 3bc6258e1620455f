#!/usr/bin/env python3
"""Decoding real-time factor of a model folder on a cut manifest (greedy and modified beam search),
plus training throughput of the same model (input frames/s for forward+backward of the loss).

    python bench/asr_decode.py --model egs/mini_synth/exp/model-avg \
        --cuts egs/mini_synth/data/fbank/librispeech_cuts_test-clean.jsonl.gz [--threads 2]
"""

import argparse
import json
import time

import torch


def load_model_and_batches(model_dir: str, cuts: str, max_duration: float):
    """A model folder, the decoding batches of a cut manifest (in memory) and their seconds of
    audio: what the decoding benchmarks time."""
    from auden_kit.data.datamodule import DataConfig, make_loader
    from auden_kit.hub import load_pretrained

    lm = load_pretrained(model_dir)
    cfg = DataConfig(max_duration=max_duration, num_workers=0, spec_augment=False, min_cut_duration=0,
                     max_cut_duration=1e9)
    batches = list(make_loader(cfg, [cuts], train=False, task=lm.task)[0])
    return lm, batches, sum(c.duration for b in batches for c in b["cuts"])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--cuts", required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-duration", type=float, default=100.0)
    p.add_argument("--methods", default="greedy,modified_beam_search")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    lm, batches, audio = load_model_and_batches(a.model, a.cuts, a.max_duration)
    out = {"threads": a.threads, "audio_s": round(audio, 1)}
    for m in a.methods.split(","):
        t0 = time.time()
        for b in batches:
            lm.task.infer(lm.model, b, method=m, beam=4)
        out[f"decode.{m}.rtf"] = round((time.time() - t0) / audio, 5)
    lm.model.train()
    frames, t0 = 0, time.time()
    for b in batches[:5]:
        loss, _, _ = lm.task.compute_loss(lm.model, b, step=10 ** 6)
        loss.backward()
        frames += int(b["input_lens"].sum())
    out["train.input_frames_per_s"] = round(frames / (time.time() - t0), 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
