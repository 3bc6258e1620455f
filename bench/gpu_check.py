#!/usr/bin/env python3
"""The checks behind bench/gpu_check.sh; each prints one JSON line (errors included, so one failing
check does not hide the others)."""

import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# --smoke: every check on the CPU at toy sizes (float32/bfloat16, gloo), to catch a script that no
# longer matches the code before a GPU machine's time is spent on it (tests/test_recipes.py runs it).
SMOKE = "--smoke" in sys.argv
DEV = "cpu" if SMOKE else "cuda"


def sync():
    import torch

    if DEV == "cuda":
        torch.cuda.synchronize()


def reset_peak():
    import torch

    if DEV == "cuda":
        torch.cuda.reset_peak_memory_stats()


def peak_mib(base=0):
    import torch

    return round((torch.cuda.max_memory_allocated() - base) / 2 ** 20, 1) if DEV == "cuda" else None


def emit(check, **kw):
    print(json.dumps({"check": check, **kw}), flush=True)


def guarded(fn):
    def run(*a, **k):
        try:
            fn(*a, **k)
        except Exception as e:  # noqa: BLE001 - report and go on
            emit(fn.__name__, error=f"{e.__class__.__name__}: {e}", trace=traceback.format_exc()[-1500:])
    return run


def _model(vocab=500):
    from auden_kit.encoders.zipformer import ZipformerConfig
    from auden_kit.tasks.asr import AsrModel, AsrModelConfig

    return AsrModel(AsrModelConfig(encoder=ZipformerConfig(preset="zipformer-s" if SMOKE else "zipformer-m"),
                                   vocab_size=vocab, use_ctc=True, warm_step=0))


@guarded
def amp_steps(steps=8, B=8, T=1000, U=40):
    import torch

    from auden_kit.nn.scaling import set_batch_count
    from auden_kit.training.optim import OptimConfig, build_optimizer

    if SMOKE:
        steps, B, T, U = 3, 2, 200, 8
    dev = torch.device(DEV)
    for dtype in ("bfloat16",) if SMOKE else ("float32", "bfloat16", "float16"):
        torch.manual_seed(0)
        model = _model().to(dev).train()
        opt, sched = build_optimizer(model, OptimConfig())
        scaler = torch.amp.GradScaler(DEV, enabled=dtype == "float16")
        amp = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(dtype)
        x = torch.randn(B, T, 80, device=dev)
        lens = torch.full((B,), T, device=dev)
        targets = [torch.randint(3, 500, (U,)).tolist() for _ in range(B)]
        reset_peak()
        times, losses = [], []
        for i in range(steps):
            sync()
            t0 = time.time()
            set_batch_count(model, 1000 + i)
            with torch.autocast(DEV, dtype=amp, enabled=amp is not None):
                enc, enc_lens = model.encode(x, lens)
                simple, pruned = model.transducer_losses(enc, enc_lens, targets)
                loss = (0.5 * simple + pruned + 0.2 * model.ctc_loss(enc, enc_lens, targets)) / float(enc_lens.sum())
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            scaler.step(opt)
            scaler.update()
            sched.step_batch(i + 1)
            sync()
            times.append(time.time() - t0)
            losses.append(float(loss.detach()))
        med = sorted(times[2:])[len(times[2:]) // 2]
        emit("amp_steps", dtype=dtype, batch=f"B={B} T={T} U={U}", median_s_per_step=round(med, 4),
             frames_per_s=round(B * T / med, 1), peak_mem_mib=peak_mib(),
             losses_finite=all(map(lambda v: v == v and abs(v) < 1e9, losses)), first_loss=round(losses[0], 4),
             last_loss=round(losses[-1], 4), grad_scale=scaler.get_scale() if scaler.is_enabled() else None)


def _first_error(stderr: str) -> str:
    """The first error line of a failed run (a traceback's tail is torchrun's own report)."""
    lines = stderr.splitlines()
    for i, line in enumerate(lines):
        if "Error" in line or "error:" in line:
            return "\n".join(lines[max(0, i - 3):i + 3])[-1500:]
    return stderr[-1500:]


@guarded
def torchrun_nccl():
    import torch
    import yaml

    ngpu = torch.cuda.device_count() if DEV == "cuda" else 0
    nproc = 2 if ngpu >= 2 else 1
    work = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    from auden_kit.data.corpora.synthetic import SynthOptions, corpus_to_cuts, synthesize_corpus
    from auden_kit.data.features import compute_fbank
    from auden_kit.tokenizers import train_sentencepiece

    n = (2, 4) if SMOKE else (4, 16)
    root = synthesize_corpus(work, SynthOptions(num_speakers=n[0], train_utts=n[1], dev_utts=2, test_utts=2, jobs=2),
                             progress=False)
    cuts = corpus_to_cuts(root, work / "manifests")
    from lhotse import CutSet

    paths = {}
    for part, p in cuts.items():
        c = compute_fbank(CutSet.from_file(p), work / "fbank", part, num_jobs=2)
        paths[part] = work / f"cuts_{part}.jsonl.gz"
        c.to_file(paths[part])
    texts = [s.text for c in CutSet.from_file(cuts["train-clean-100"]) for s in c.supervisions]
    train_sentencepiece(texts, work / "lang", vocab_size=50 if SMOKE else 100)
    cfg = {"task": "asr", "exp_dir": str(work / "exp"), "tokenizer": str(work / "lang"),
           "model": {"encoder": {"preset": "zipformer-s"}, "use_ctc": True},
           "data": {"train_cuts": [str(paths["train-clean-100"])], "valid_cuts": [str(paths["dev-clean"])],
                    "max_duration": 8 if SMOKE else 40, "num_buckets": 2, "num_workers": 1},
           "trainer": {"num_epochs": 1, "max_steps": 2 if SMOKE else 6, "dtype": "float32" if SMOKE else "float16",
                       "device": DEV, "progress": False}}
    (work / "c.yaml").write_text(yaml.safe_dump(cfg))
    t0 = time.time()
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
                         "-m", "auden_kit.cli.main", "train", "--config", str(work / "c.yaml")],
                       capture_output=True, text=True, timeout=900, env={**os.environ, "PYTHONPATH": os.pathsep.join(
                           [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])})
    saved = sorted(p.name for p in (work / "exp").glob("*.pt"))  # epoch-1.pt when the epoch ends first
    emit("torchrun_nccl", nproc=nproc, backend="gloo" if SMOKE else "nccl", rc=r.returncode,
         seconds=round(time.time() - t0, 1), checkpoints=saved,
         stderr_tail=r.stderr[-800:] if r.returncode == 0 else _first_error(r.stderr))


@guarded
def rnnt_loss(B=8, T=500, U=100, V=500, J=512, S=5, repeats=5):
    import torch
    import torchaudio.functional as AF

    from auden_kit.heads.transducer import Joiner, joiner_on_band
    from auden_kit.losses.rnnt import band_indices, pruned_loss, simple_loss_and_ranges

    if SMOKE:
        B, T, U, V, J, repeats = 2, 50, 10, 50, 32, 2
    dev = torch.device(DEV)
    torch.manual_seed(0)
    joiner = Joiner(J, J, J, V).to(dev)
    am_proj, lm_proj = torch.nn.Linear(J, V).to(dev), torch.nn.Linear(J, V).to(dev)
    enc = torch.randn(B, T, J, device=dev, requires_grad=True)
    dec = torch.randn(B, U + 1, J, device=dev, requires_grad=True)
    y = torch.randint(1, V, (B, U), device=dev)
    frames = torch.full((B,), T, device=dev)
    labels = torch.full((B,), U, device=dev)
    out = {"shape": f"B={B} T={T} U={U} V={V} J={J} S={S}"}
    for method in ("pruned", "torchaudio_full"):
        sync()
        base = torch.cuda.memory_allocated() if DEV == "cuda" else 0
        reset_peak()
        times = []
        for _ in range(repeats):
            sync()
            t0 = time.time()
            if method == "pruned":
                simple, starts = simple_loss_and_ranges(am_proj(enc), lm_proj(dec), y, frames, labels, S)
                logits = joiner_on_band(joiner, enc, dec, band_indices(starts, S, U))
                loss = 0.5 * simple + pruned_loss(logits, y, starts, frames, labels)
            else:
                logits = joiner(enc.unsqueeze(2), dec.unsqueeze(1))
                loss = AF.rnnt_loss(logits, y.int(), frames.int(), labels.int(), blank=0, reduction="sum")
            loss.backward()
            sync()
            times.append(time.time() - t0)
            enc.grad = dec.grad = None
        out[f"{method}.median_s"] = round(sorted(times[1:])[len(times[1:]) // 2], 4)
        out[f"{method}.loss"] = round(float(loss.detach()), 3)
        out[f"{method}.peak_mib_above_baseline"] = peak_mib(base)
    if DEV == "cuda":
        out["memory_ratio_full_over_pruned"] = round(out["torchaudio_full.peak_mib_above_baseline"]
                                                     / max(1.0, out["pruned.peak_mib_above_baseline"]), 2)
    emit("rnnt_loss", **out)


@guarded
def icefall_side_by_side(B=8, T=1000, repeats=6):
    """Zipformer-M encoder training step (fp32 and bf16 autocast), ours and icefall's, same sizes."""
    d = os.environ.get("ICEFALL_DIR", "")
    if not d:
        emit("icefall_side_by_side", skipped="set ICEFALL_DIR=<icefall>/egs/librispeech/ASR/zipformer to time "
                                             "icefall's Zipformer-M beside ours")
        return
    import torch

    sys.path.insert(0, str(ROOT / "bench"))
    from icefall_ref import build_icefall_encoder

    from auden_kit.encoders.zipformer import ZipformerConfig, ZipformerEncoder
    from auden_kit.nn.scaling import set_batch_count

    if SMOKE:
        B, T, repeats = 1, 200, 3
    dev = torch.device(DEV)
    cfg = ZipformerConfig(preset="zipformer-m")
    impls = {}
    enc = ZipformerEncoder(cfg).to(dev)
    set_batch_count(enc, 1e6)
    impls["ours"] = (enc, lambda x, lens: enc(x, lens)[0])
    model, run = build_icefall_encoder(cfg, d)
    impls["icefall"] = (model.to(dev), run)
    x, lens = torch.randn(B, T, 80, device=dev), torch.full((B,), T, device=dev)
    # (icefall's own backward functions are CUDA-only under bf16 autocast: fp32 alone on the CPU)
    for dtype in ("float32",) if SMOKE else ("float32", "bfloat16"):
        row = {"dtype": dtype, "batch": f"B={B} T={T}"}
        for name, (m, fn) in impls.items():
            m.train()
            times = []
            reset_peak()
            for _ in range(repeats):
                sync()
                t0 = time.time()
                with torch.autocast(DEV, dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
                    out = fn(x, lens)
                out.float().pow(2).mean().backward()
                for p in m.parameters():
                    p.grad = None
                sync()
                times.append(time.time() - t0)
            med = sorted(times[2:])[len(times[2:]) // 2]
            row[f"{name}.frames_per_s"] = round(B * T / med, 1)
            row[f"{name}.peak_mem_mib"] = peak_mib()
        emit("icefall_side_by_side", **row)


def main():
    import torch

    if SMOKE:
        emit("environment", torch=torch.__version__, smoke="cpu, toy sizes: checks that the script runs")
    elif not torch.cuda.is_available():
        emit("environment", error="no CUDA device visible: run this on a GPU machine (or --smoke on the CPU)")
        sys.exit(1)
    else:
        emit("environment", torch=torch.__version__, cuda=torch.version.cuda, gpus=torch.cuda.device_count(),
             name=torch.cuda.get_device_name(0))
    amp_steps()
    torchrun_nccl()
    rnnt_loss()
    icefall_side_by_side()


if __name__ == "__main__":
    main()
