#!/usr/bin/env python3
"""An experiment, not a stage: can the ASR read one chosen talker out of an overlap? (RESULTS.md,
"A first target-speaker reader"). The ASR folder's model is fine-tuned on the reference
supervision spans of the training meetings (+-0.2 s), with (--cond 1) or without (--cond 0) a FiLM
layer on the encoder's subsampled input fed the target speaker's voice embedding (that speaker's
other supervisions in the same window, read by the tagspeech folder's voice layers); --pairs 1
adds spans holding both talkers of an overlap, each the target in turn. Prints the WER of the test
meetings' spans (all, overlapped > 0.3 s, clean, pair spans) before and after each epoch.

    python local/ts_reader_probe.py --asr ../mini_synth/exp/model-avg --tag exp/tagspeech/model-avg \
        --train data/fbank/meetings_cuts_train.jsonl.gz --test data/fbank/meetings_cuts_test.jsonl.gz \
        --cond 1 --pairs 1 --epochs 3 --out exp/ts_reader.json
"""
import argparse
import json
import random
import time

import torch
from torch import nn
from lhotse import load_manifest_lazy
import auden_kit
from auden_kit.data.features import PAD_VALUE
from auden_kit.metrics.wer import compute_wer

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--asr", required=True, help="ASR model folder (the semantic stream)")
p.add_argument("--tag", required=True, help="tagspeech model folder (its voice layers give the embeddings)")
p.add_argument("--train", required=True, help="training meetings (cut manifest with features)")
p.add_argument("--test", required=True, help="test meetings (cut manifest with features)")
p.add_argument("--cond", type=int, default=1, help="1: FiLM conditioning on the target's voice; 0: none")
p.add_argument("--pairs", type=int, default=0, help="1: also spans holding both talkers of an overlap")
p.add_argument("--epochs", type=int, default=2)
p.add_argument("--lr", type=float, default=2e-4)
p.add_argument("--batch-s", type=float, default=120, help="seconds of audio per batch")
p.add_argument("--limit", type=int, default=0, help="training windows to read (0: all)")
p.add_argument("--test-limit", type=int, default=0, help="test windows to read (0: all)")
p.add_argument("--out", required=True, help="JSON file for the WER after each epoch")
a = p.parse_args()
torch.manual_seed(0); random.seed(0)
torch.set_num_threads(2)
T = auden_kit.load(a.tag).model.eval()
A = auden_kit.load(a.asr)
task, model = A.task, A.model


@torch.no_grad()
def examples(path, limit):
    out = []
    for n, c in enumerate(load_manifest_lazy(path)):
        if limit and n >= limit:
            break
        x = torch.from_numpy(c.load_features())
        sups = [s for s in c.supervisions if s.start >= -0.01 and s.end <= c.duration + 0.05 and s.text]
        if not sups:
            continue
        emb = T.segment_embeddings(x, [(max(0, s.start), min(c.duration, s.end)) for s in sups])
        emb = nn.functional.normalize(emb, dim=-1)
        def enrol(t):  # the target's voice: its other supervisions in the window (itself if none)
            others = [k for k, q in enumerate(sups) if q.speaker == sups[t].speaker and k != t]
            return nn.functional.normalize(emb[others].mean(0) if others else emb[t], dim=-1)

        def example(t, lo, hi, ov, key, pair):
            lo, hi = max(0, lo - 0.2), min(c.duration, hi + 0.2)
            return {"x": x[int(lo * 100): int(hi * 100), :80].clone(), "text": sups[t].text, "e": enrol(t),
                    "ov": ov, "id": f"{c.id}:{key}", "pair": pair}

        for i, s in enumerate(sups):
            ov = max([min(s.end, o.end) - max(s.start, o.start) for o in sups if o.speaker != s.speaker] + [0])
            out.append(example(i, s.start, s.end, ov > 0.3, i, False))
        if a.pairs:  # both talkers of an overlap in one span (their union), each the target in turn
            for i, s in enumerate(sups):
                for j, o in enumerate(sups):
                    if j <= i or o.speaker == s.speaker or min(s.end, o.end) - max(s.start, o.start) < 0.3:
                        continue
                    for t in (i, j):
                        out.append(example(t, min(s.start, o.start), max(s.end, o.end), True, f"{i}-{j}:{t}", True))
    return out


t0 = time.time()
train = examples(a.train, a.limit)
test = examples(a.test, a.test_limit)
print(f"examples {len(train)} train {len(test)} test ({sum(t['ov'] for t in test)} overlapped, {sum(t['pair'] for t in test)} pair), {time.time()-t0:.0f} s",
      flush=True)

C0 = model.encoder.encoder_embed(torch.zeros(1, 40, 80), torch.tensor([40]))[0].shape[-1]
film = nn.Linear(train[0]["e"].shape[0], 2 * C0)
nn.init.zeros_(film.weight); nn.init.zeros_(film.bias)
state = {"e": None}


def hook(mod, inp, out):
    if not a.cond or state["e"] is None:
        return out
    x, lens = out
    g, b = film(state["e"]).unsqueeze(1).chunk(2, dim=-1)
    return x * (1 + g) + b, lens


model.encoder.encoder_embed.register_forward_hook(hook)


def batches(items, shuffle):
    items = sorted(items, key=lambda t: t["x"].shape[0])
    out, cur, s = [], [], 0.0
    for t in items:
        cur.append(t); s += t["x"].shape[0] / 100
        if s >= a.batch_s:
            out.append(cur); cur, s = [], 0.0
    if cur:
        out.append(cur)
    if shuffle:
        random.shuffle(out)
    return out


def collate(b):
    lens = torch.tensor([t["x"].shape[0] for t in b])
    x = torch.full((len(b), int(lens.max()), 80), PAD_VALUE)
    for i, t in enumerate(b):
        x[i, : t["x"].shape[0]] = t["x"]
    state["e"] = torch.stack([t["e"] for t in b])
    return {"inputs": x, "input_lens": lens, "cut_ids": [t["id"] for t in b],
            "targets": {"texts": [t["text"] for t in b], "tokens": [task.tokenizer.encode(t["text"]) for t in b]}}


def evaluate(tag):
    model.eval()
    hyps = {}
    for b in batches(test, False):
        for r in task.infer(model, collate(b)):
            hyps[r.cut_id] = r.text
    res = {}
    for name, sel in (("all", lambda t: not t["pair"]), ("overlapped", lambda t: t["ov"] and not t["pair"]),
                      ("clean", lambda t: not t["ov"]), ("pair_union", lambda t: t["pair"])):
        st = compute_wer([(t["id"], t["text"], hyps[t["id"]]) for t in test if sel(t)])
        res[name] = round(st.wer, 2) if any(sel(t) for t in test) else None
    print(tag, json.dumps(res), flush=True)
    return res


results = {"before": evaluate("before")}
params = [{"params": model.parameters(), "lr": a.lr}, {"params": film.parameters(), "lr": 10 * a.lr}]
opt = torch.optim.AdamW(params, weight_decay=0.0)
step = 10 ** 6
for ep in range(a.epochs):
    model.train(); t0 = time.time(); tot = 0.0; n = 0
    for b in batches(train, True):
        loss, stats, frames = task.compute_loss(model, collate(b), step)
        opt.zero_grad(); (loss / frames).backward()
        torch.nn.utils.clip_grad_norm_(list(model.parameters()) + list(film.parameters()), 5.0)
        opt.step(); tot += float(loss.detach()); n += frames
    print(f"epoch {ep+1}: loss/frame {tot/n:.4f}, {time.time()-t0:.0f} s", flush=True)
    results[f"epoch{ep+1}"] = evaluate(f"epoch {ep+1}")
json.dump(results, open(a.out, "w"), indent=1)
