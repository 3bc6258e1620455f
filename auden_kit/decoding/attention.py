"""Autoregressive search with an attention decoder (:class:`~auden_kit.heads.attention_decoder.AttentionDecoder`).

:func:`beam_search` is batched: all live hypotheses of all utterances go through the decoder in
one call per output step, over encoder memory projected once. Each utterance starts from its
own forced prefix (``<sos>`` plus e.g. language tags), stops at ``<eos>`` or at its own length
limit (from its input length), and finished hypotheses are ranked by
``log P / (tokens + 1) ** length_penalty`` (0: raw log-probability, 1: per-token average).
``beam=1`` is greedy search. An ending enters the finished list only when it ranks among the
``beam`` best candidates of its step; a row stops when it holds ``beam`` endings none of which is
worse than its best live hypothesis (the rule of Hugging Face's beam search).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor


@dataclasses.dataclass
class AttnHyp:
    tokens: list  # generated tokens (no prefix, no eos)
    logprob: float  # log P(tokens + eos | prefix, audio)
    score: float  # length-normalised, what hypotheses are ranked by
    finished: bool = True  # False: stopped at the length limit without eos


@torch.no_grad()
def next_token_logprobs(decoder, mem: Tensor, mem_pad: Tensor, seqs: list[list[int]]) -> Tensor:
    """log P(next token | seq, audio) (M, V) for M sequences over M rows of memory."""
    U = max(len(s) for s in seqs)
    ys = torch.full((len(seqs), U), decoder.eos_id, dtype=torch.long)
    pad = torch.ones(len(seqs), U, dtype=torch.bool)
    for i, s in enumerate(seqs):
        ys[i, : len(s)] = torch.tensor(s)
        pad[i, : len(s)] = False
    ys, pad = ys.to(mem.device), pad.to(mem.device)
    logits = decoder.decode(mem, mem_pad, ys, pad)
    last = torch.tensor([len(s) - 1 for s in seqs], device=mem.device)
    return logits[torch.arange(len(seqs), device=mem.device), last].float().log_softmax(-1)


@torch.no_grad()
def beam_search(decoder, enc: Tensor, enc_lens: Tensor, prefixes: list[list[int]], max_lens: list[int],
                beam: int = 4, length_penalty: float = 1.0) -> list[AttnHyp]:
    """Best hypothesis per row of ``enc`` (N, T, C). ``prefixes[i]`` starts with ``<sos>``;
    ``max_lens[i]`` caps the generated tokens of row ``i``."""
    N = enc.shape[0]
    mem_all, pad_all = decoder.memory(enc, enc_lens)
    eos = decoder.eos_id
    alive: list[list[tuple[list[int], float]]] = [[([], 0.0)] for _ in range(N)]
    done: list[list[AttnHyp]] = [[] for _ in range(N)]

    def norm(lp: float, n: int) -> float:
        return lp / ((n + 1) ** length_penalty) if length_penalty else lp

    step = 0
    while True:
        rows = [i for i in range(N) if alive[i]]
        if not rows:
            break
        index = [i for i in rows for _ in alive[i]]
        seqs = [prefixes[i] + toks for i in rows for toks, _ in alive[i]]
        ix = torch.tensor(index, device=enc.device)
        lp = next_token_logprobs(decoder, mem_all[ix], pad_all[ix], seqs).cpu()
        k = 0
        for i in rows:
            hyps = alive[i]
            cands = []
            for toks, score in hyps:
                top_lp, top_id = lp[k].topk(min(beam + 1, lp.shape[1]))
                cands += [(score + float(v), toks, int(t)) for v, t in zip(top_lp, top_id)]
                k += 1
            cands.sort(key=lambda c: -c[0])
            new = []
            for rank, (total, toks, t) in enumerate(cands):
                if t == eos:
                    if rank < beam:  # an ending counts only when it ranks among the beam best
                        done[i].append(AttnHyp(toks, total, norm(total, len(toks))))
                elif len(new) < beam:
                    new.append((toks + [t], total))
                if len(new) >= beam:
                    break
            done[i] = sorted(done[i], key=lambda h: -h.score)[:beam]
            # a row is finished at its length limit (live hypotheses end unfinished), or when it
            # holds `beam` endings and none of them is worse than the best live one now
            if step + 1 >= max_lens[i]:
                done[i] += [AttnHyp(t, s, norm(s, len(t)), finished=False) for t, s in new]
                new = []
            elif len(done[i]) >= beam and new and done[i][-1].score >= max(norm(s, len(t)) for t, s in new):
                new = []
            alive[i] = new
        step += 1
    return [max(d, key=lambda h: h.score) if d else AttnHyp([], float("-inf"), float("-inf"), False) for d in done]
