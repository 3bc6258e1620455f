"""Attention (transformer) decoder head over encoder output: trained with label-smoothed
cross-entropy, used to rescore n-best lists. Shape legend: N batch, T frames, U tokens, C channels."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class AttentionDecoder(nn.Module):
    def __init__(self, vocab_size: int, encoder_dim: int, d_model: int = 256, num_layers: int = 2,
                 num_heads: int = 4, ff_dim: int = 1024, dropout: float = 0.1, sos_id: int = 1, eos_id: int = 1,
                 max_len: int = 1024):
        super().__init__()
        self.sos_id, self.eos_id, self.vocab_size = sos_id, eos_id, vocab_size
        self.embed = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Parameter(torch.randn(max_len, d_model) * 0.02)
        self.enc_proj = nn.Linear(encoder_dim, d_model)
        layer = nn.TransformerDecoderLayer(d_model, num_heads, ff_dim, dropout, batch_first=True, norm_first=True)
        self.layers = nn.TransformerDecoder(layer, num_layers)
        self.norm = nn.LayerNorm(d_model)
        self.out = nn.Linear(d_model, vocab_size)
        self.scale = math.sqrt(d_model)

    def _inputs(self, tokens: list[list[int]], device) -> tuple[Tensor, Tensor, Tensor]:
        """(sos + y) inputs, (y + eos) targets padded with -100, and a padding mask."""
        U = max(len(t) for t in tokens) + 1
        N = len(tokens)
        ys_in = torch.full((N, U), self.eos_id, dtype=torch.long, device=device)
        ys_out = torch.full((N, U), -100, dtype=torch.long, device=device)
        for i, t in enumerate(tokens):
            ys_in[i, : len(t) + 1] = torch.tensor([self.sos_id] + t, device=device)
            ys_out[i, : len(t) + 1] = torch.tensor(t + [self.eos_id], device=device)
        pad = ys_out == -100
        return ys_in, ys_out, pad

    def logits(self, enc: Tensor, enc_lens: Tensor, ys_in: Tensor, pad: Tensor) -> Tensor:
        U = ys_in.shape[1]
        x = self.embed(ys_in) * self.scale + self.pos[:U]
        mem = self.enc_proj(enc)
        mem_pad = torch.arange(enc.shape[1], device=enc.device).unsqueeze(0) >= enc_lens.unsqueeze(1)
        causal = torch.triu(torch.ones(U, U, dtype=torch.bool, device=enc.device), diagonal=1)
        h = self.layers(x, mem, tgt_mask=causal, tgt_key_padding_mask=pad, memory_key_padding_mask=mem_pad)
        return self.out(self.norm(h))

    def loss(self, enc: Tensor, enc_lens: Tensor, tokens: list[list[int]], label_smoothing: float = 0.1) -> Tensor:
        """Label-smoothed cross-entropy, summed over tokens (eos included)."""
        ys_in, ys_out, pad = self._inputs(tokens, enc.device)
        logits = self.logits(enc, enc_lens, ys_in, pad)
        return nn.functional.cross_entropy(logits.reshape(-1, self.vocab_size).float(), ys_out.reshape(-1),
                                           ignore_index=-100, label_smoothing=label_smoothing, reduction="sum")

    @torch.no_grad()
    def score(self, enc: Tensor, enc_lens: Tensor, tokens: list[list[int]]) -> Tensor:
        """log P(tokens + eos | enc) for each hypothesis; enc rows are repeated per hypothesis by the caller."""
        ys_in, ys_out, pad = self._inputs(tokens, enc.device)
        lp = self.logits(enc, enc_lens, ys_in, pad).log_softmax(-1)
        tok_lp = torch.gather(lp, 2, ys_out.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        return tok_lp.masked_fill(pad, 0.0).sum(-1)
