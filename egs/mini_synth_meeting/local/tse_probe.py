#!/usr/bin/env python3
"""An experiment, not a stage: can a small target-speaker extractor in front of the frozen ASR
read one chosen talker out of two? (RESULTS.md, "A second target-speaker reader"). A network
(three stacked fbank frames, a FiLM layer fed the target's voice embedding, two BiGRU layers)
turns the fbank of a two-talker mixture into the target's fbank: a non-positive log-mel mask
(mixing only adds energy), trained with L1 to the target's clean fbank (floored 8 nats below
the mixture) plus ``--ctc-weight`` times the frozen ASR's CTC loss on the target's words.
Mixtures are made on the fly from the ASR recipe's single-talker training cuts: a random other
speaker's utterance at a random offset (up to 70 % outside the target), at -3..3 dB; the
enrolment is the mean voice embedding of two other utterances of the target speaker. Prints the
greedy WER of the recipe's test utterances mixed the same way (at -3, 0 and 3 dB; those whose
overlap is > 30 % of the target) read from the mixture, from the extractor's output with the
target's enrolment and with the other talker's (a check that the extractor follows the
enrolment), and from the clean target.

    python local/tse_probe.py --asr ../mini_synth/exp/model-avg --voice ../mini_synth_voice/exp/model-avg \
        --corpus ../mini_synth --steps 700 --ctc-weight 1 --out exp/tse_probe.json
"""
import argparse
import json
import os
import random
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from lhotse import load_manifest_lazy

import auden_kit
from auden_kit.api import fbank_of
from auden_kit.data.audio import load_cut_audio
from auden_kit.data.features import PAD_VALUE
from auden_kit.metrics.wer import compute_wer

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--asr", required=True, help="ASR model folder (frozen: reads the extractor's output)")
p.add_argument("--voice", required=True, help="voice model folder (enrolment embeddings)")
p.add_argument("--corpus", required=True, help="the ASR recipe's folder (data/fbank/librispeech_cuts_*.jsonl.gz)")
p.add_argument("--steps", type=int, default=700, help="training steps of 16 mixtures")
p.add_argument("--ctc-weight", type=float, default=1.0, help="weight of the frozen ASR's CTC loss (0: L1 only)")
p.add_argument("--lr", type=float, default=1e-3)
p.add_argument("--out", required=True, help="JSON file for the WER table")
a = p.parse_args()
torch.manual_seed(0)
random.seed(0)
torch.set_num_threads(min(2, os.cpu_count() or 1))
asr, voice = auden_kit.load(a.asr), auden_kit.load(a.voice)
asr.model.eval()
for prm in asr.model.parameters():
    prm.requires_grad_(False)


def read(split: str) -> list:
    """(speaker, text, waveform) of the unperturbed cuts of one split."""
    root, here = os.path.abspath(a.corpus), os.getcwd()
    os.chdir(root)  # recording paths are relative to the recipe folder
    try:
        return [(c.supervisions[0].speaker, c.supervisions[0].text, load_cut_audio(c, 16000))
                for c in load_manifest_lazy(f"data/fbank/librispeech_cuts_{split}.jsonl.gz") if "_sp" not in c.id]
    finally:
        os.chdir(here)


class Pool:
    """Utterances with their voice embeddings, grouped by speaker."""

    def __init__(self, utts: list):
        self.utts = utts
        rs = voice.infer([u[2] for u in utts], 16000)
        self.emb = F.normalize(torch.tensor(np.stack([np.asarray(r.embedding) for r in rs]), dtype=torch.float32), dim=-1)
        self.by_spk: dict = {}
        for i, u in enumerate(utts):
            self.by_spk.setdefault(u[0], []).append(i)

    def enrol(self, i: int) -> torch.Tensor:
        others = [j for j in self.by_spk[self.utts[i][0]] if j != i]
        return F.normalize(self.emb[random.sample(others, min(2, len(others)))].mean(0), dim=-1)

    def mixture(self, i: int, sir_db=None):
        """(mixture fbank, clean target fbank, target enrolment, other talker's enrolment, overlap)."""
        tgt, spk = self.utts[i][2], self.utts[i][0]
        j = random.choice([k for k in range(len(self.utts)) if self.utts[k][0] != spk])
        other = self.utts[j][2]
        n, m = tgt.numel(), other.numel()
        start = random.randint(-int(0.7 * m), int(0.7 * n))
        lo, hi = max(0, start), min(n, start + m)
        placed = torch.zeros(n)
        if hi > lo:
            placed[lo:hi] = other[lo - start:hi - start]
        sir_db = random.uniform(-3, 3) if sir_db is None else sir_db
        placed = placed * torch.sqrt(tgt.pow(2).mean() / other.pow(2).mean() / 10 ** (sir_db / 10))
        fb = lambda w: fbank_of(w, asr.features, asr._extractor)  # noqa: E731
        return fb(tgt + placed), fb(tgt), self.enrol(i), self.enrol(j), max(0, hi - lo) / n


class Extractor(nn.Module):
    def __init__(self, emb_dim: int, d: int = 256, bins: int = 80):
        super().__init__()
        self.inp = nn.Sequential(nn.Linear(3 * bins, d), nn.ReLU())
        self.film = nn.Linear(emb_dim, 2 * d)
        self.rnn = nn.GRU(d, d, num_layers=2, batch_first=True, bidirectional=True)
        self.out = nn.Linear(2 * d, bins)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        z = (x + 10) / 5
        z = torch.cat([F.pad(z, (0, 0, 1, 0))[:, :-1], z, F.pad(z, (0, 0, 0, 1))[:, 1:]], -1)
        gain, bias = self.film(emb).chunk(2, -1)
        h, _ = self.rnn(self.inp(z) * (1 + gain[:, None]) + bias[:, None])
        return x + F.logsigmoid(self.out(h) + 2.0)  # starts near the identity


def pad(feats: list) -> tuple[torch.Tensor, torch.Tensor]:
    lens = torch.tensor([f.shape[0] for f in feats])
    x = torch.full((len(feats), int(lens.max()), feats[0].shape[1]), PAD_VALUE)
    for k, f in enumerate(feats):
        x[k, : f.shape[0]] = f
    return x, lens


t0 = time.time()
train, test = Pool(read("train-clean-100")), Pool(read("test-clean"))
print(f"{len(train.utts)} training and {len(test.utts)} test utterances embedded in {time.time() - t0:.0f} s", flush=True)
net = Extractor(train.emb.shape[1])
opt = torch.optim.Adam(net.parameters(), a.lr)
tok = asr.task.tokenizer
t0 = time.time()
for step in range(a.steps):
    pick = [random.randrange(len(train.utts)) for _ in range(16)]
    items = [train.mixture(i) for i in pick]
    x, lens = pad([it[0] for it in items])
    y, _ = pad([it[1] for it in items])
    mask = (torch.arange(x.shape[1])[None] < lens[:, None]).float()
    est = net(x, torch.stack([it[2] for it in items]))
    l1 = ((est - torch.maximum(y, x - 8.0)).abs().mean(-1) * mask).sum() / mask.sum()
    loss = l1
    if a.ctc_weight > 0:
        enc, enc_lens = asr.model.encode(est, lens)
        lp = asr.model.ctc_output(enc).log_softmax(-1)
        ys = [torch.tensor(tok.encode(train.utts[i][1])) for i in pick]
        ctc = F.ctc_loss(lp.transpose(0, 1), torch.cat(ys), enc_lens, torch.tensor([len(t) for t in ys]),
                         reduction="sum", zero_infinity=True) / lens.sum() * 100
        loss = l1 + a.ctc_weight * ctc
    opt.zero_grad()
    loss.backward()
    nn.utils.clip_grad_norm_(net.parameters(), 5.0)
    opt.step()
    if step % 50 == 0 or step == a.steps - 1:
        print(f"step {step} loss {loss.item():.3f} (L1 {l1.item():.3f}) {time.time() - t0:.0f} s", flush=True)

random.seed(1)
net.eval()
rows = {k: [] for k in ("mixture", "extracted", "extracted, other's enrolment", "clean")}
meta = []
with torch.no_grad():
    for n in range(240):
        i, sir = n % len(test.utts), (-3, 0, 3)[n % 3]
        mix, clean, enrol, wrong, overlap = test.mixture(i, sir)
        rows["mixture"].append(mix)
        rows["extracted"].append(net(mix[None], enrol[None])[0])
        rows["extracted, other's enrolment"].append(net(mix[None], wrong[None])[0])
        rows["clean"].append(clean)
        meta.append((test.utts[i][1], sir, overlap))
    table = {}
    for name, feats in rows.items():
        hyps = []
        for s in range(0, len(feats), 40):
            x, lens = pad(feats[s:s + 40])
            hyps += [r.text for r in asr.task.infer(asr.model, {"inputs": x, "input_lens": lens}, method="greedy")]
        for sir in (-3, 0, 3):
            sel = [k for k, (_, s, ov) in enumerate(meta) if s == sir and ov > 0.3]
            st = compute_wer([(str(k), meta[k][0], hyps[k]) for k in sel])
            table[f"{name} @ {sir} dB"] = {"wer": round(st.wer, 2), "utterances": len(sel)}
            print(f"{name:32s} SIR {sir:+d} dB  WER {st.wer:6.2f}  ({len(sel)} utterances)", flush=True)
with open(a.out, "w") as f:
    json.dump({"args": vars(a), "wer": table}, f, indent=1)
