"""SigLIP's pairwise sigmoid loss (Zhai et al. 2023) for aligning two towers, e.g. pooled speech
and text: every (speech i, text j) pair of a batch is a binary classification, positive when
i == j. Unlike a softmax contrastive loss it needs no all-gather normalisation and works with
small batches. Pairs that are not the same row but carry the same text (one sentence said by two
speakers, speed copies of one utterance) are *left out*, not counted as negatives.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class SigLipLoss(nn.Module):
    """loss(a (N, D), b (N, D), same (N, N) bool or None) -> summed over pairs / N-scale terms.

    Learned temperature ``t`` (log-parameterised, init 10) and bias ``b`` (init -10), as in the
    paper. Returns the loss summed over rows (each row: its positive and its negatives)."""

    def __init__(self, init_scale: float = 10.0, init_bias: float = -10.0):
        super().__init__()
        self.log_scale = nn.Parameter(torch.tensor(math.log(init_scale)))
        self.bias = nn.Parameter(torch.tensor(init_bias))

    def forward(self, a: Tensor, b: Tensor, same: Tensor | None = None) -> Tensor:
        a = nn.functional.normalize(a.float(), dim=-1)
        b = nn.functional.normalize(b.float(), dim=-1)
        logits = a @ b.t() * self.log_scale.exp() + self.bias
        n = a.shape[0]
        eye = torch.eye(n, dtype=torch.bool, device=a.device)
        labels = eye.float() * 2 - 1
        pair_loss = -nn.functional.logsigmoid(labels * logits)
        if same is not None:  # same text on another row: neither positive nor negative
            pair_loss = pair_loss.masked_fill(same & ~eye, 0.0)
        return pair_loss.sum()
