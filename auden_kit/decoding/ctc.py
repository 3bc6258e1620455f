"""CTC searches on log-probs (N, T, V); blank id 0."""

from __future__ import annotations

import math
from collections import defaultdict

import torch
from torch import Tensor

from auden_kit.decoding import Hypothesis


def ctc_greedy(log_probs: Tensor, lens: Tensor, blank: int = 0) -> list[Hypothesis]:
    best = log_probs.argmax(-1)  # (N, T)
    out = []
    for i in range(best.shape[0]):
        seq = best[i, : int(lens[i])].tolist()
        h = Hypothesis(score=float(log_probs[i, torch.arange(len(seq)), seq].sum()) if seq else 0.0)
        prev = blank
        for t, s in enumerate(seq):
            if s != blank and s != prev:
                h.tokens.append(s)
                h.frames.append(t)
            prev = s
        out.append(h)
    return out


def _lae(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    m = max(a, b)
    return m + math.log(math.exp(a - m) + math.exp(b - m))


def ctc_prefix_beam(log_probs: Tensor, lens: Tensor, beam: int = 4, blank: int = 0, return_nbest: bool = False):
    """Prefix beam search: each prefix keeps (log P ending in blank, log P ending in non-blank).
    With ``return_nbest`` each utterance gets its final beam (best first)."""
    out = []
    lp_all = log_probs.float().cpu()
    for i in range(lp_all.shape[0]):
        lp = lp_all[i, : int(lens[i])]
        beams = {(): (0.0, -math.inf)}
        frames: dict[tuple, list] = {(): []}
        for t in range(lp.shape[0]):
            top = torch.topk(lp[t], min(beam, lp.shape[1]))
            nxt: dict = defaultdict(lambda: (-math.inf, -math.inf))
            for prefix, (pb, pnb) in beams.items():
                for p, s in zip(top.values.tolist(), top.indices.tolist()):
                    if s == blank:
                        b, nb = nxt[prefix]
                        nxt[prefix] = (_lae(b, _lae(pb, pnb) + p), nb)
                        continue
                    last = prefix[-1] if prefix else None
                    new = prefix + (s,)
                    if new not in frames:
                        frames[new] = frames[prefix] + [t]
                    b, nb = nxt[new]
                    if s == last:
                        nxt[new] = (b, _lae(nb, pb + p))  # repeat needs a blank in between
                        b2, nb2 = nxt[prefix]
                        nxt[prefix] = (b2, _lae(nb2, pnb + p))  # collapse the repeat
                    else:
                        nxt[new] = (b, _lae(nb, _lae(pb, pnb) + p))
            beams = dict(sorted(nxt.items(), key=lambda kv: -_lae(*kv[1]))[:beam])
        ranked = [Hypothesis(list(p), frames.get(p, [])[: len(p)], _lae(*sc))
                  for p, sc in sorted(beams.items(), key=lambda kv: -_lae(*kv[1]))]
        out.append(ranked if return_nbest else ranked[0])
    return out
