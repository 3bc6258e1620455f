#!/usr/bin/env python3
"""Zipformer front end + encoder speed on CPU.

Training step: forward + backward on random fbank B=4, T=1000, regularizer schedules at their
final values; median seconds, input frames/s, peak RSS growth. Inference: B=1, T=3000 (30 s),
real-time factor. Prints one JSON line.

    python bench/zipformer_speed.py [--presets zipformer-s,zipformer-m] [--threads 2] [--repeats 3]
"""

import argparse
import json
import resource
import time

import torch


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2 ** 20


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", default="zipformer-s,zipformer-m")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    from auden_kit.encoders.zipformer import ZipformerConfig, ZipformerEncoder
    from auden_kit.nn.scaling import set_batch_count

    out = {"threads": a.threads}
    for preset in a.presets.split(","):
        torch.manual_seed(0)
        enc = ZipformerEncoder(ZipformerConfig(preset=preset))
        out[f"params.{preset}.encoder"] = sum(x.numel() for x in enc.parameters())
        enc.train()
        set_batch_count(enc, 1e6)
        x, lens = torch.randn(4, 1000, 80), torch.full((4,), 1000)
        base = _rss_mib()
        peak = base
        times = []
        for _ in range(a.repeats + 1):
            t0 = time.time()
            y, _ = enc(x, lens)
            peak = max(peak, _rss_mib())
            y.pow(2).mean().backward()
            times.append(time.time() - t0)
            enc.zero_grad(set_to_none=True)
        med = sorted(times[1:])[len(times[1:]) // 2]
        out[f"bench.{preset}.train.median_s"] = round(med, 4)
        out[f"bench.{preset}.train.frames_per_s"] = round(4 * 1000 / med, 1)
        out[f"bench.{preset}.train.peak_minus_baseline_mib"] = round(peak - base, 1)
        enc.eval()
        xi, li = torch.randn(1, 3000, 80), torch.tensor([3000])
        with torch.no_grad():
            enc(xi, li)
            times = []
            for _ in range(a.repeats):
                t0 = time.time()
                enc(xi, li)
                times.append(time.time() - t0)
        med = sorted(times)[len(times) // 2]
        out[f"bench.{preset}.infer.median_s"] = round(med, 4)
        out[f"bench.{preset}.infer.rtf"] = round(med / 30.0, 5)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
