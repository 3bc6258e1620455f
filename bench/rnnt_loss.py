#!/usr/bin/env python3
"""Pruned RNN-T (ours, pure PyTorch) vs torchaudio's full RNN-T loss: time and peak memory.

    python bench/rnnt_loss.py [--B 8 --T 500 --U 100 --V 500 --J 512 --prune-range 5 --repeats 3]

Both include the joiner (encoder/decoder projections -> tanh -> output linear) and backward,
which is where the memory goes: full = (B, T, U+1, V) logits, pruned = (B, T, S, V).
Peak memory is measured as RSS growth above the start (CPU) in a fresh process per method.
"""

import argparse
import json
import multiprocessing as mp
import resource
import time


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2 ** 20


def _run(method: str, a, q):
    import torch

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    from auden_kit.heads.transducer import Joiner, joiner_on_band
    from auden_kit.losses.rnnt import band_indices, pruned_loss, simple_loss_and_ranges

    B, T, U, V, J = a.B, a.T, a.U, a.V, a.J
    joiner = Joiner(J, J, J, V)
    am_proj, lm_proj = torch.nn.Linear(J, V), torch.nn.Linear(J, V)
    enc = torch.randn(B, T, J, requires_grad=True)
    dec = torch.randn(B, U + 1, J, requires_grad=True)
    y = torch.randint(1, V, (B, U))
    frames = torch.full((B,), T)
    labels = torch.full((B,), U)
    base = _rss_mib()
    peak = base
    times = []
    for _ in range(a.repeats):
        t0 = time.time()
        if method == "pruned":
            simple, starts = simple_loss_and_ranges(am_proj(enc), lm_proj(dec), y, frames, labels, a.prune_range)
            logits = joiner_on_band(joiner, enc, dec, band_indices(starts, a.prune_range, U))
            loss = pruned_loss(logits, y, starts, frames, labels)
            loss = 0.5 * simple + loss
        else:
            import torchaudio.functional as AF

            logits = joiner(enc.unsqueeze(2), dec.unsqueeze(1))
            loss = AF.rnnt_loss(logits, y.int(), frames.int(), labels.int(), blank=0, reduction="sum")
        peak = max(peak, _rss_mib())
        loss.backward()
        peak = max(peak, _rss_mib(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        times.append(time.time() - t0)
        enc.grad = dec.grad = None
    q.put({"median_s": sorted(times)[len(times) // 2], "peak_minus_baseline_mib": round(peak - base, 1)})


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for k, v in dict(B=8, T=500, U=100, V=500, J=512, repeats=3, threads=2).items():
        p.add_argument(f"--{k}", type=int, default=v)
    p.add_argument("--prune-range", type=int, default=5)
    a = p.parse_args()
    out = {"shape": f"B={a.B} T={a.T} U={a.U} V={a.V} J={a.J} S={a.prune_range}", "threads": a.threads}
    ctx = mp.get_context("spawn")
    for method in ("pruned", "torchaudio_full"):
        q = ctx.Queue()
        pr = ctx.Process(target=_run, args=(method, a, q))
        pr.start()
        res = q.get()
        pr.join()
        for k, v in res.items():
            out[f"{method}.{k}"] = round(v, 4) if isinstance(v, float) else v
    out["memory_ratio_full_over_pruned"] = round(out["torchaudio_full.peak_minus_baseline_mib"]
                                                 / max(1.0, out["pruned.peak_minus_baseline_mib"]), 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
