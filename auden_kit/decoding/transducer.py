"""Transducer searches, batched over utterances.

``model`` must provide ``decoder`` (StatelessDecoder) and ``joiner`` (Joiner).
enc_out: (N, T, C) encoder output; enc_lens: (N,). Tokens never include blank (0).
"""

from __future__ import annotations

import torch
from torch import Tensor

from auden_kit.data.features import PAD_VALUE
from auden_kit.decoding import Hypothesis


def _contexts(hyps_tokens: list[list[int]], context_size: int, blank: int, device) -> Tensor:
    # as in training: the sequence starts with blank, and positions before it are -1
    # (the decoder maps them to zero embeddings, like the left padding it gets in training)
    rows = []
    for toks in hyps_tokens:
        ctx = ([-1] * (context_size - 1) + [blank] + toks)[-context_size:]
        rows.append(ctx)
    return torch.tensor(rows, dtype=torch.long, device=device)


class GreedyState:
    """Greedy search that can be continued: feed encoder frames in pieces with :meth:`advance`.

    ``greedy_search`` feeds a whole utterance at once; :class:`StreamingGreedyDecoder` feeds
    each chunk as the streaming encoder produces it. Both give the same result for the same
    encoder frames.
    """

    def __init__(self, model, batch_size: int, device, max_sym_per_frame: int = 1):
        self.dec, self.joiner = model.decoder, model.joiner
        self.max_sym = max_sym_per_frame
        self.device = device
        self.hyps = [Hypothesis() for _ in range(batch_size)]
        self.frames_done = 0
        self.dec_out = self._decoder_out(range(batch_size))  # (N, 1, J)

    def _decoder_out(self, rows) -> Tensor:
        ctx = _contexts([self.hyps[i].tokens for i in rows], self.dec.context_size, self.dec.blank_id, self.device)
        return self.joiner.decoder_proj(self.dec(ctx, need_pad=False))

    @torch.no_grad()
    def advance(self, enc_out: Tensor, enc_lens: Tensor) -> None:
        """enc_out: (N, T, C) next frames of every stream; enc_lens: how many of them are real."""
        blank = self.dec.blank_id
        enc_proj = self.joiner.encoder_proj(enc_out)
        for t in range(enc_out.shape[1]):
            active = enc_lens > t
            if not bool(active.any()):
                break
            for _ in range(self.max_sym):
                logits = self.joiner(enc_proj[:, t:t + 1].unsqueeze(2), self.dec_out.unsqueeze(1), project_input=False)
                y = logits.squeeze(1).squeeze(1).argmax(-1)  # (N,)
                emit = torch.nonzero((y != blank) & active).flatten()
                if emit.numel() == 0:
                    break
                for i in emit.tolist():
                    self.hyps[i].tokens.append(int(y[i]))
                    self.hyps[i].frames.append(self.frames_done + t)
                self.dec_out = self.dec_out.clone()
                self.dec_out[emit] = self._decoder_out(emit.tolist())
        self.frames_done += enc_out.shape[1]


@torch.no_grad()
def greedy_search(model, enc_out: Tensor, enc_lens: Tensor, max_sym_per_frame: int = 1) -> list[Hypothesis]:
    """Batched greedy search: at each frame emit argmax tokens until blank (or the cap)."""
    state = GreedyState(model, enc_out.shape[0], enc_out.device, max_sym_per_frame)
    state.advance(enc_out, enc_lens)
    return state.hyps


class StreamingGreedyDecoder:
    """Decode a causal (streaming) transducer while audio arrives, for ``batch_size`` streams.

    ``accept(fbank_piece)`` takes any number of new fbank frames (N, T, F) and returns the
    tokens emitted so far; ``finish()`` pushes out the last partial chunk and returns the final
    hypotheses. Pieces need not align with the model's chunk size. The result equals
    ``greedy_search`` on the chunk-masked full forward of the input followed by
    :meth:`tail_frames` frames of padding (tested).
    """


    def __init__(self, model, batch_size: int = 1, max_sym_per_frame: int = 1):
        enc = model.encoder
        self.model = model
        self.states = enc.init_states(batch_size)
        self.device = next(model.parameters()).device
        self.search = GreedyState(model, batch_size, self.device, max_sym_per_frame)
        self.fed = 0

    @torch.no_grad()
    def accept(self, fbank: Tensor) -> list[Hypothesis]:
        out, self.states = self.model.encoder.streaming_forward(fbank.to(self.device), self.states)
        self.fed += fbank.shape[1]
        if out.shape[1]:
            self.search.advance(out, torch.full((out.shape[0],), out.shape[1], device=self.device))
        return self.search.hyps

    def tail_frames(self) -> int:
        """Padding frames ``finish`` appends: enough to complete the chunk holding the last real
        frame, plus the front end's look-ahead."""
        from auden_kit.encoders.zipformer.subsampling import CONV_CONTEXT, CONVNEXT_PAD, frames_after_front_end

        chunk = self.states["chunk"]  # in 50 Hz frames
        n50 = max(0, frames_after_front_end(self.fed))  # 50 Hz frames the real input yields
        target = -(-max(n50, 1) // chunk) * chunk  # next chunk boundary
        # fbank frames for `target` 50 Hz frames plus the ConvNeXt look-ahead (2 fbank frames each)
        need = 2 * target + CONV_CONTEXT + 2 * CONVNEXT_PAD
        return max(0, need - self.fed)

    @torch.no_grad()
    def finish(self) -> list[Hypothesis]:
        n = self.tail_frames()
        if n:
            N, F = self.states["fbank"].shape[0], self.states["fbank"].shape[2]
            self.accept(torch.full((N, n, F), PAD_VALUE, device=self.device))
        return self.search.hyps


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
