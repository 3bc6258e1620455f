#!/usr/bin/env python3
"""Training-step throughput of pretraining and distillation against the ASR step of the same
encoder (CPU by default; ``--device cuda`` on a GPU).

Steps (forward + backward + an SGD update, random fbank B x T, the tasks' own ``compute_loss``):

* ``asr``      transducer (pruned RNN-T) + CTC, vocabulary 500, ~T/16 tokens per row (the reference)
* ``bestrq``   BEST-RQ (``--codebooks`` x 8192 codes, 16 dims): goal >= 0.9x the ASR step
* ``mae``      MAE reconstruction with its light decoder
* ``distill_live``    a frozen teacher (``--teacher-preset``) runs in every step, K=2 layers
* ``distill_cached``  the same student and heads reading stored teacher layers (no teacher)

Prints one JSON line: median seconds per step, input frames/s, and the ratios to ``asr``.

    python bench/ssl_step.py [--preset zipformer-s] [--teacher-preset zipformer-m] [--threads 2]
"""

import argparse
import json
import random
import tempfile
import time

import torch


def median(xs):
    return sorted(xs)[len(xs) // 2]


def time_step(task, model, batch, repeats: int) -> float:
    from auden_kit.nn.scaling import set_batch_count

    set_batch_count(model, 1e6)
    model.train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    times = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        loss, _, n = task.compute_loss(model, batch, step=10_000)
        (loss / max(n, 1.0)).backward()
        opt.step()
        opt.zero_grad()
        if batch["inputs"].is_cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return median(times[1:])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="zipformer-s")
    p.add_argument("--teacher-preset", default="zipformer-m")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--frames", type=int, default=1000)
    p.add_argument("--codebooks", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    from auden_kit.data.features import FbankSettings
    from auden_kit.hub import get_task, save_pretrained
    from auden_kit.tasks.asr import AsrModelConfig
    from auden_kit.tasks.base import ModelAssets
    from auden_kit.tasks.distill import DistillModelConfig
    from auden_kit.tasks.ssl import SslModelConfig

    dev = torch.device(a.device)
    torch.manual_seed(0)
    random.seed(0)
    B, T = a.batch, a.frames
    x = torch.randn(B, T, 80, device=dev)
    lens = torch.full((B,), T, device=dev)
    enc = {"preset": a.preset}
    out = {"preset": a.preset, "batch": B, "frames": T, "threads": a.threads, "device": a.device}

    def batch(**targets):
        return {"inputs": x, "input_lens": lens, "clean_inputs": x, "cut_ids": [str(i) for i in range(B)],
                "targets": targets}

    def setup(name, cfg):
        task = get_task(name)
        task.setup(cfg, ModelAssets())
        return task, task.build_model().to(dev)

    task, model = setup("asr", AsrModelConfig(encoder=enc, vocab_size=500, use_ctc=True))
    toks = [[random.randrange(1, 500) for _ in range(T // 16)] for _ in range(B)]
    out["asr_s"] = time_step(task, model, batch(tokens=toks), a.repeats)
    for name, obj in (("bestrq", "bestrq"), ("mae", "mae")):
        task, model = setup("ssl", SslModelConfig(encoder=enc, objective=obj, num_codebooks=a.codebooks))
        out[f"{name}_s"] = time_step(task, model, batch(), a.repeats)
    # distillation: a teacher model folder (random weights) run live, then its layers as cached targets
    with tempfile.TemporaryDirectory() as tmp:
        tcfg = AsrModelConfig(encoder={"preset": a.teacher_preset}, vocab_size=500)
        tt, tm = setup("asr", tcfg)
        save_pretrained(tmp, "asr", tcfg, tm, ModelAssets(), FbankSettings())
        taps = [{"name": "t", "kind": "model", "path": tmp, "layers": [2, -1], "student_taps": [1, -1]}]
        task = get_task("distill")
        cfg = DistillModelConfig(encoder=enc, teachers=taps)
        task.setup(cfg, task.build_assets(type("C", (), {"all_tokenizers": lambda self: {}})(), cfg, []))
        model = task.build_model().to(dev)
        out["distill_live_s"] = time_step(task, model, batch(domains=[None] * B), a.repeats)
        with torch.no_grad():
            feats, t_lens = model.teachers()["t"](batch())
        cached = torch.cat([feats[i] for i in cfg.teachers[0]["layers"]], dim=-1)
        ccfg = DistillModelConfig(encoder=enc, teachers=[{**cfg.teachers[0], "kind": "cached",
                                                          "dims": [cfg.teachers[0]["dims"][i] for i in
                                                                   cfg.teachers[0]["layers"]],
                                                          "layers": [0, 1]}])
        task2 = get_task("distill")
        task2.setup(ccfg, ModelAssets())
        model2 = task2.build_model().to(dev)
        out["distill_cached_s"] = time_step(task2, model2, batch(domains=[None] * B, cached={"t": cached},
                                                                 cached_lens={"t": t_lens}), a.repeats)
    for k in [k for k in out if k.endswith("_s")]:
        out[k] = round(out[k], 4)
        out[k[:-2] + "_frames_per_s"] = round(B * T / out[k])
        out[k[:-2] + "_vs_asr"] = round(out["asr_s"] / out[k], 3)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
