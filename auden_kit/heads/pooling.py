"""Utterance-level pooling of encoder frames. Shape legend: N batch, T frames, C channels."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def frame_mask(lens: Tensor, T: int) -> Tensor:
    """(N, T) float mask, 1 on valid frames."""
    return (torch.arange(T, device=lens.device).unsqueeze(0) < lens.unsqueeze(1)).float()


class MeanPooling(nn.Module):
    """Masked mean over time: (N, T, C), lens -> (N, C)."""

    def output_dim(self, channels: int) -> int:
        return channels

    def forward(self, x: Tensor, lens: Tensor) -> Tensor:
        m = frame_mask(lens, x.shape[1]).unsqueeze(-1).to(x.dtype)
        return (x * m).sum(1) / m.sum(1).clamp(min=1.0)


class MeanStdPooling(nn.Module):
    """Masked statistics pooling (mean and standard deviation): (N, T, C) -> (N, 2C)."""

    def output_dim(self, channels: int) -> int:
        return 2 * channels

    def forward(self, x: Tensor, lens: Tensor) -> Tensor:
        m = frame_mask(lens, x.shape[1]).unsqueeze(-1).to(x.dtype)
        n = m.sum(1).clamp(min=1.0)
        mean = (x * m).sum(1) / n
        var = (((x - mean.unsqueeze(1)) ** 2) * m).sum(1) / n
        return torch.cat([mean, var.clamp(min=1e-6).sqrt()], dim=-1)




class AttentiveStatsPooling(nn.Module):
    """Attentive statistics pooling (Okabe et al., 2018): a small attention network weights the
    frames (per channel), then the weighted mean and standard deviation are concatenated:
    (N, T, C) -> (N, 2C). Padding frames get zero weight."""

    def __init__(self, channels: int, hidden: int = 128):
        super().__init__()
        self.attention = nn.Sequential(nn.Linear(channels, hidden), nn.Tanh(), nn.Linear(hidden, channels))

    def output_dim(self, channels: int) -> int:
        return 2 * channels

    def forward(self, x: Tensor, lens: Tensor) -> Tensor:
        mask = frame_mask(lens, x.shape[1]).unsqueeze(-1).bool()
        w = self.attention(x).masked_fill(~mask, -1e4).softmax(dim=1)  # (N, T, C)
        mean = (w * x).sum(1)
        var = (w * (x - mean.unsqueeze(1)) ** 2).sum(1)
        return torch.cat([mean, var.clamp(min=1e-6).sqrt()], dim=-1)


POOLINGS = {"mean": MeanPooling, "mean_std": MeanStdPooling, "attentive_stats": AttentiveStatsPooling}


def build_pooling(name: str, channels: int = 0) -> nn.Module:
    """Pooling ``name`` for encoder outputs of ``channels`` (needed by the attentive one)."""
    from auden_kit.errors import UserError

    if name not in POOLINGS:
        raise UserError(f"config key 'model.pooling' must be one of {', '.join(POOLINGS)}, got '{name}'")
    return AttentiveStatsPooling(channels) if name == "attentive_stats" else POOLINGS[name]()
