"""Additive angular margin softmax (AAM-softmax, ArcFace) with optional sub-centres, the speaker
head of WeSpeaker-style verification models.

    logits = s * cos(theta_y + m) for the target class, s * cos(theta_j) for the others

where theta_j is the angle between the L2-normalised embedding and class j's normalised weight
(the closest of its K sub-centres when K > 1). The margin ``m`` is set by the caller from a
schedule (e.g. 0 -> 0.2 over the first epochs, as WeSpeaker ramps it).

Shape legend: N batch, D embedding dim, C classes, K sub-centres.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class AAMSoftmax(nn.Module):
    def __init__(self, embed_dim: int, num_classes: int, scale: float = 32.0, margin: float = 0.2,
                 sub_centers: int = 1, easy_margin: bool = False):
        super().__init__()
        self.scale, self.margin, self.k = scale, margin, sub_centers
        self.easy_margin = easy_margin
        self.weight = nn.Parameter(torch.empty(num_classes * sub_centers, embed_dim))
        nn.init.xavier_uniform_(self.weight)

    def cosine(self, emb: Tensor) -> Tensor:
        """(N, D) -> (N, C) cosine to each class (max over its sub-centres)."""
        cos = nn.functional.linear(nn.functional.normalize(emb.float()), nn.functional.normalize(self.weight.float()))
        if self.k > 1:
            cos = cos.view(cos.shape[0], -1, self.k).max(dim=-1).values
        return cos

    def forward(self, emb: Tensor, labels: Tensor) -> Tensor:
        """Margin logits (N, C) for cross-entropy; rows with label -100 get no margin (masked by the
        caller's ignore_index)."""
        cos = self.cosine(emb)
        m = float(self.margin)
        if m == 0.0:
            return self.scale * cos
        sin = (1.0 - cos.pow(2)).clamp(min=1e-9).sqrt()
        phi = cos * math.cos(m) - sin * math.sin(m)  # cos(theta + m)
        if self.easy_margin:
            phi = torch.where(cos > 0, phi, cos)
        else:  # keep the logit monotonic in theta beyond pi - m (ArcFace's fallback)
            phi = torch.where(cos > math.cos(math.pi - m), phi, cos - math.sin(math.pi - m) * m)
        onehot = torch.zeros_like(cos)
        known = labels >= 0
        onehot[known.nonzero().flatten(), labels[known]] = 1.0
        return self.scale * (onehot * phi + (1.0 - onehot) * cos)


def margin_schedule(step: float, final: float, start_step: float, end_step: float) -> float:
    """0 before ``start_step``, rising linearly to ``final`` at ``end_step`` (WeSpeaker's ramp)."""
    if step <= start_step:
        return 0.0
    if step >= end_step:
        return final
    return final * (step - start_step) / max(1.0, end_step - start_step)
