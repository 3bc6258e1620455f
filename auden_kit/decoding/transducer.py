"""Transducer searches, batched over utterances.

``model`` must provide ``decoder`` (StatelessDecoder) and ``joiner`` (Joiner).
enc_out: (N, T, C) encoder output; enc_lens: (N,). Tokens never include blank (0).
"""

from __future__ import annotations

import torch
from torch import Tensor

from auden_kit.decoding import Hypothesis


def _contexts(hyps_tokens: list[list[int]], context_size: int, blank: int, device) -> Tensor:
    # as in training: the sequence starts with blank, and positions before it are -1
    # (the decoder maps them to zero embeddings, like the left padding it gets in training)
    rows = []
    for toks in hyps_tokens:
        ctx = ([-1] * (context_size - 1) + [blank] + toks)[-context_size:]
        rows.append(ctx)
    return torch.tensor(rows, dtype=torch.long, device=device)


@torch.no_grad()
def greedy_search(model, enc_out: Tensor, enc_lens: Tensor, max_sym_per_frame: int = 1) -> list[Hypothesis]:
    """Batched greedy search: at each frame emit argmax tokens until blank (or the cap)."""
    N, T, _ = enc_out.shape
    dec, joiner = model.decoder, model.joiner
    blank, ctx_size = dec.blank_id, dec.context_size
    enc_proj = joiner.encoder_proj(enc_out)
    hyps = [Hypothesis() for _ in range(N)]
    dec_out = joiner.decoder_proj(dec(_contexts([h.tokens for h in hyps], ctx_size, blank, enc_out.device),
                                      need_pad=False))  # (N, 1, J)
    for t in range(T):
        active = (enc_lens > t)
        if not bool(active.any()):
            break
        for _ in range(max_sym_per_frame):
            logits = joiner(enc_proj[:, t:t + 1].unsqueeze(2), dec_out.unsqueeze(1), project_input=False)
            y = logits.squeeze(1).squeeze(1).argmax(-1)  # (N,)
            emit = (y != blank) & active
            if not bool(emit.any()):
                break
            for i in torch.nonzero(emit).flatten().tolist():
                hyps[i].tokens.append(int(y[i]))
                hyps[i].frames.append(t)
            idx = torch.nonzero(emit).flatten()
            new = joiner.decoder_proj(dec(_contexts([hyps[i].tokens for i in idx.tolist()], ctx_size, blank,
                                                    enc_out.device), need_pad=False))
            dec_out = dec_out.clone()
            dec_out[idx] = new
    return hyps


@torch.no_grad()
def modified_beam_search(model, enc_out: Tensor, enc_lens: Tensor, beam: int = 4, return_nbest: bool = False):
    """Beam search with at most one symbol per frame (icefall's "modified" beam search).

    Hypotheses with the same token sequence are merged (log-add of scores). With
    ``return_nbest`` each utterance gets its whole final beam, best first.
    """
    N, T, _ = enc_out.shape
    dec, joiner = model.decoder, model.joiner
    blank, ctx_size = dec.blank_id, dec.context_size
    enc_proj = joiner.encoder_proj(enc_out)
    beams: list[list[Hypothesis]] = [[Hypothesis()] for _ in range(N)]
    for t in range(T):
        live = [i for i in range(N) if int(enc_lens[i]) > t]
        if not live:
            break
        flat = [(i, h) for i in live for h in beams[i]]
        ctx = _contexts([h.tokens for _, h in flat], ctx_size, blank, enc_out.device)
        dec_out = joiner.decoder_proj(dec(ctx, need_pad=False)).squeeze(1)  # (H, J)
        rows = torch.tensor([i for i, _ in flat], device=enc_out.device)
        logp = joiner(enc_proj[rows, t], dec_out, project_input=False).log_softmax(-1)  # (H, V)
        scores = torch.tensor([h.score for _, h in flat], device=enc_out.device).unsqueeze(1) + logp
        V = logp.shape[1]
        start = 0
        for i in live:
            n = len(beams[i])
            s = scores[start:start + n].reshape(-1)
            top = torch.topk(s, min(beam, s.numel()))
            merged: dict[tuple, Hypothesis] = {}
            for val, flat_idx in zip(top.values.tolist(), top.indices.tolist()):
                h = beams[i][flat_idx // V]
                tok = flat_idx % V
                if tok == blank:
                    nh = Hypothesis(list(h.tokens), list(h.frames), val)
                else:
                    nh = Hypothesis(h.tokens + [tok], h.frames + [t], val)
                key = tuple(nh.tokens)
                if key in merged:
                    old = merged[key]
                    old.score = float(torch.logaddexp(torch.tensor(old.score), torch.tensor(nh.score)))
                else:
                    merged[key] = nh
            beams[i] = list(merged.values())
            start += n
    if return_nbest:
        return [sorted(b, key=lambda h: -h.score) for b in beams]
    return [max(b, key=lambda h: h.score) for b in beams]
