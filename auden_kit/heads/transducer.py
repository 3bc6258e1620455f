"""Stateless transducer head: an embedding "decoder" over the last ``context_size`` tokens
and a joiner. Shape legend: N batch, T frames, U labels, S band, V vocabulary, C channels."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class StatelessDecoder(nn.Module):
    """Embedding of the previous ``context_size`` tokens mixed by a grouped 1-D conv.

    forward(y (N, U)) -> (N, U, C); with ``need_pad`` the input is left-padded with
    blanks so output u depends on tokens u-context+1..u.
    """

    def __init__(self, vocab_size: int, decoder_dim: int, blank_id: int = 0, context_size: int = 2):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, decoder_dim)
        self.blank_id = blank_id
        self.context_size = context_size
        self.vocab_size = vocab_size
        if context_size > 1:
            self.conv = nn.Conv1d(decoder_dim, decoder_dim, kernel_size=context_size, padding=0,
                                  groups=decoder_dim // 4, bias=False)

    def forward(self, y: Tensor, need_pad: bool = True) -> Tensor:
        emb = self.embedding(y.clamp(min=0)) * (y >= 0).unsqueeze(-1)
        if self.context_size > 1:
            emb = emb.permute(0, 2, 1)
            if need_pad:
                emb = nn.functional.pad(emb, (self.context_size - 1, 0))
            emb = self.conv(emb).permute(0, 2, 1)
        return torch.relu(emb)


class Joiner(nn.Module):
    """logits = W_out tanh(W_enc enc + W_dec dec); projections can be applied once up front."""

    def __init__(self, encoder_dim: int, decoder_dim: int, joiner_dim: int, vocab_size: int):
        super().__init__()
        self.encoder_proj = nn.Linear(encoder_dim, joiner_dim)
        self.decoder_proj = nn.Linear(decoder_dim, joiner_dim)
        self.output_linear = nn.Linear(joiner_dim, vocab_size)

    def forward(self, enc: Tensor, dec: Tensor, project_input: bool = True) -> Tensor:
        if project_input:
            enc, dec = self.encoder_proj(enc), self.decoder_proj(dec)
        return self.output_linear(torch.tanh(enc + dec))


def joiner_on_band(joiner: "Joiner", enc: Tensor, dec: Tensor, idx: Tensor) -> Tensor:
    """Joiner logits on the pruned band only: enc (N, T, C), dec (N, U+1, D) decoder outputs,
    idx (N, T, S) label positions -> (N, T, S, V).

    The band's decoder rows are picked by advanced indexing of (N, U+1, J), whose backward
    accumulates into a tensor of that size; gathering from a (N, T, U+1, J) expanded view would
    make autograd allocate a gradient of the full lattice size (the memory pruning saves).
    """
    enc_p = joiner.encoder_proj(enc)  # (N, T, J)
    dec_p = joiner.decoder_proj(dec)  # (N, U+1, J)
    rows = torch.arange(dec_p.shape[0], device=dec_p.device).view(-1, 1, 1)
    return joiner(enc_p.unsqueeze(2), dec_p[rows, idx], project_input=False)
