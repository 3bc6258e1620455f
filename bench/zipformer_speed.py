#!/usr/bin/env python3
"""Zipformer front end + encoder speed on CPU, optionally side by side with icefall's.

Training step: forward + backward on random fbank B=4, T=1000, regularizer schedules at their
final values; median seconds, input frames/s, peak RSS growth. Inference: B=1, T=3000 (30 s),
real-time factor. Also: the step's matrix-multiply work (GFLOP, counted by torch's
FlopCounterMode) and this machine's measured GEMM rate, which bound what any implementation
of the same model can reach here (``matmul_bound_frames_per_s``). Prints one JSON line.

    python bench/zipformer_speed.py [--presets zipformer-s,zipformer-m] [--threads 2] [--repeats 3]
    # side by side with icefall's implementation (a checkout of k2-fsa/icefall; without k2
    # installed, its Swoosh kernels are replaced by icefall's own pure-PyTorch functions):
    python bench/zipformer_speed.py --icefall ~/icefall/egs/librispeech/ASR/zipformer

Each implementation and preset runs in its own process (so peak memory is its own), with the
same allocator setting (``auden_kit.runtime``).
"""

import argparse
import json
import resource
import sys
import time

import torch


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2 ** 20


def _median(xs):
    return sorted(xs)[len(xs) // 2]


def gemm_gflops() -> float:
    """Best of a few fp32 matrix products of encoder-like shapes, GFLOP/s."""
    best = 0.0
    for m, k, n in ((2048, 256, 768), (1024, 512, 1536), (2048, 2048, 2048)):
        a, b = torch.randn(m, k), torch.randn(k, n)
        a @ b
        t0 = time.perf_counter()
        for _ in range(5):
            a @ b
        best = max(best, 2 * m * k * n * 5 / (time.perf_counter() - t0) / 1e9)
    return best


def matmul_gflop(step) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        step()
    counts = fc.get_flop_counts().get("Global", {})
    return sum(v for k, v in counts.items() if str(k).split(".")[-1] in ("mm", "addmm", "bmm")) / 1e9


def time_steps(step, repeats: int) -> tuple[float, float]:
    base = _rss_mib()
    peak = base
    times = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
        peak = max(peak, _rss_mib())
    return _median(times[1:]), peak - base


def ours(preset: str):
    from auden_kit.encoders.zipformer import ZipformerConfig, ZipformerEncoder
    from auden_kit.nn.scaling import set_batch_count

    torch.manual_seed(0)
    enc = ZipformerEncoder(ZipformerConfig(preset=preset))
    set_batch_count(enc, 1e6)

    def run(x, lens):
        return enc(x, lens)[0]

    return enc, [enc], run


def icefall(preset: str, folder: str):
    """icefall's Conv2dSubsampling + Zipformer2 with the preset's sizes."""
    from auden_kit.encoders.zipformer import ZipformerConfig

    from icefall_ref import build_icefall_encoder

    torch.manual_seed(0)
    model, run = build_icefall_encoder(ZipformerConfig(preset=preset), folder)
    return model, list(model), run


def bench(name: str, build, repeats: int, out: dict, gemm: float):
    model, parts, run = build()
    out[f"params.{name}.encoder"] = sum(p.numel() for p in model.parameters())
    model.train()
    x, lens = torch.randn(4, 1000, 80), torch.full((4,), 1000)

    def step():
        run(x, lens).pow(2).mean().backward()
        for p in model.parameters():
            p.grad = None

    med, mem = time_steps(step, repeats)
    flop = matmul_gflop(step)
    out[f"bench.{name}.train.median_s"] = round(med, 4)
    out[f"bench.{name}.train.frames_per_s"] = round(4 * 1000 / med, 1)
    out[f"bench.{name}.train.peak_minus_baseline_mib"] = round(mem, 1)
    out[f"bench.{name}.train.matmul_gflop"] = round(flop, 1)
    out[f"bench.{name}.train.matmul_bound_frames_per_s"] = round(4 * 1000 / (flop / gemm), 1)
    model.eval()
    xi, li = torch.randn(1, 3000, 80), torch.tensor([3000])
    with torch.no_grad():
        med, _ = time_steps(lambda: run(xi, li), repeats)
    out[f"bench.{name}.infer.median_s"] = round(med, 4)
    out[f"bench.{name}.infer.rtf"] = round(med / 30.0, 5)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", default="zipformer-s,zipformer-m")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--icefall", default="", metavar="DIR",
                   help="icefall's egs/librispeech/ASR/zipformer folder: time its implementation too")
    p.add_argument("--only", default="", help=argparse.SUPPRESS)  # internal: one run in this process
    p.add_argument("--gemm", default="0", help=argparse.SUPPRESS)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    from auden_kit.runtime import tune_allocator

    tuned = tune_allocator()
    if a.only:  # one implementation and preset, in a fresh process so memory figures are its own
        impl, preset = a.only.split(":")
        out = {}
        gemm = float(a.gemm)
        build = (lambda: ours(preset)) if impl == "ours" else (lambda: icefall(preset, a.icefall))
        bench(preset if impl == "ours" else f"icefall-{preset}", build, a.repeats, out, gemm)
        print(json.dumps(out))
        return
    import subprocess

    out = {"threads": a.threads, "allocator_tuned": tuned}
    gemm = gemm_gflops()
    out["machine.gemm_gflops"] = round(gemm, 1)
    for preset in a.presets.split(","):
        for impl in ["ours"] + (["icefall"] if a.icefall else []):
            cmd = [sys.executable, __file__, "--only", f"{impl}:{preset}", "--gemm", str(gemm), "--threads",
                   str(a.threads), "--repeats", str(a.repeats), "--icefall", a.icefall]
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                sys.exit(f"{impl} {preset} failed:\n{r.stderr[-3000:]}")
            out.update(json.loads(r.stdout.strip().splitlines()[-1]))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
