#!/usr/bin/env python3
"""Untrained baselines, computed on the same cuts and trials as the trained model:

- ``stats-cosine``: each utterance's mean and standard deviation of its log-mel frames (160 dims),
  cosine scored after subtracting the training mean;
- ``stats-lda``: the same statistics projected by LDA fitted on the training speakers
  (within-class whitening, then the between-class directions), cosine scored;
- ``seconds-per-char`` for the speaking style: duration / characters of the transcript, classified
  by the nearest class mean (fitted on the training cuts);
- ``stats-gender``: nearest class mean of the LDA-free statistics (for scale).

Writes one JSON object (the figures RESULTS.md quotes) and prints it.
"""

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np
from lhotse import CutSet

from auden_kit.metrics.verification import cosine_scores, eer, min_dcf, read_trials, utterance_id


def stats(cuts):
    ids, feats, meta = [], [], []
    for c in cuts:
        if re.search(r"-sp[0-9.]+$", c.supervisions[0].speaker or ""):
            continue  # speed copies (stage 2's --perturbed-speakers): the baselines use the real speakers
        f = c.load_features()
        ids.append(utterance_id(c))
        feats.append(np.concatenate([f.mean(0), f.std(0)]))
        s = c.supervisions[0]
        meta.append({"speaker": s.speaker, "gender": s.gender, "style": (s.custom or {}).get("style"),
                     "spc": c.duration / max(1, len((s.text or "").replace(" ", "")))})
    return ids, np.stack(feats).astype(np.float64), meta


def lda(x, labels, dim):
    mu = x.mean(0)
    classes = sorted(set(labels))
    sw = np.zeros((x.shape[1],) * 2)
    sb = np.zeros_like(sw)
    lab = np.array(labels)
    for k in classes:
        xk = x[lab == k]
        mk = xk.mean(0)
        sw += (xk - mk).T @ (xk - mk)
        sb += len(xk) * np.outer(mk - mu, mk - mu)
    sw = sw / len(x) + 1e-6 * np.eye(x.shape[1]) * np.trace(sw) / len(x) / x.shape[1]
    w, v = np.linalg.eigh(sw)
    whiten = v / np.sqrt(w)
    bw = whiten.T @ (sb / len(x)) @ whiten
    w2, v2 = np.linalg.eigh(bw)
    proj = whiten @ v2[:, ::-1][:, :dim]
    return mu, proj


def verification(trials, index, emb, mean):
    a = emb[[index[t[0]] for t in trials]]
    b = emb[[index[t[1]] for t in trials]]
    s = cosine_scores(a, b, mean)
    lab = [t[2] for t in trials]
    return {"eer": round(100 * eer(s, lab)[0], 3), "min_dcf_0.01": round(min_dcf(s, lab, 0.01)[0], 4)}


def nearest_mean(train_x, train_y, test_x):
    classes = sorted(set(train_y))
    ty = np.array(train_y)
    means = np.stack([train_x[ty == k].mean(0) for k in classes])
    sd = train_x.std(0) + 1e-9
    d = (((test_x[:, None, :] - means[None]) / sd) ** 2).sum(-1)
    return [classes[i] for i in d.argmin(1)]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", type=Path, required=True)
    p.add_argument("--test", type=Path, required=True)
    p.add_argument("--trials", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()
    tr_ids, tr_x, tr_meta = stats(CutSet.from_file(a.train))
    te_ids, te_x, te_meta = stats(CutSet.from_file(a.test))
    index = {k: i for i, k in enumerate(te_ids)}
    trials = read_trials(a.trials)
    missing = [t for t in trials for k in t[:2] if k not in index]
    if missing:
        sys.exit(f"error: trial list '{a.trials}' names cut '{missing[0][0]}' that '{a.test}' lacks")
    out = {"stats-cosine": verification(trials, index, te_x, tr_x.mean(0))}
    spk = [m["speaker"] for m in tr_meta]
    mu, proj = lda(tr_x, spk, min(len(set(spk)) - 1, tr_x.shape[1]))
    te_l, tr_l = (te_x - mu) @ proj, (tr_x - mu) @ proj
    out["stats-lda"] = verification(trials, index, te_l, tr_l.mean(0))
    for key, feat in (("style", "spc"), ("gender", "stats")):
        y_tr = [m[key] for m in tr_meta]
        y_te = [m[key] for m in te_meta]
        if None in y_tr or None in y_te:
            continue
        if feat == "spc":
            x_tr = np.array([[m["spc"]] for m in tr_meta])
            x_te = np.array([[m["spc"]] for m in te_meta])
        else:
            x_tr, x_te = tr_x, te_x
        hyp = nearest_mean(x_tr, y_tr, x_te)
        name = "seconds-per-char" if feat == "spc" else "stats-nearest-mean"
        out[f"{key}-{name}"] = {"accuracy": round(100 * float(np.mean([h == r for h, r in zip(hyp, y_te)])), 2)}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = a.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(out, indent=1) + "\n")
    tmp.replace(a.out)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
