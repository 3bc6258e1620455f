"""Front end: Conv2d subsampling with a ConvNeXt block, 100 Hz fbank -> ~50 Hz embeddings.

Shape legend: N batch, T frames, F feature bins, C channels.
"""

from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor, nn

from auden_kit.nn.conv import depthwise_conv
from auden_kit.nn.scaling import (
    Balancer, BiasNorm, FloatLike, ScaledConv2d, ScaleGrad, ScheduledFloat, SharedDropout, SwooshL, SwooshR,
    Whiten,
)


# Frame arithmetic of the front end, named once (streaming and decoding use these):
# the three 3x3 convolutions consume CONV_CONTEXT fbank frames beyond their 2x time stride, so
# T fbank frames give (T - CONV_CONTEXT) // 2 frames at 50 Hz; output frame c reads fbank frames
# [2c, 2c + CONV_CONTEXT + 1]. The ConvNeXt's 7-tap time kernel then needs CONVNEXT_PAD frames of
# look-ahead (and as many behind) at 50 Hz.
CONV_CONTEXT = 7
CONVNEXT_PAD = 3


def frames_after_front_end(num_fbank_frames):
    """50 Hz frames the front end makes of ``num_fbank_frames`` (int or tensor)."""
    return (num_fbank_frames - CONV_CONTEXT) // 2


class ConvNeXt(nn.Module):
    """Depthwise 7x7 conv -> 1x1 expand (x3) -> SwooshL -> 1x1 project, residual; (N, C, T, F) in and out.

    Whole-block layer drop per sequence during training (scheduled rate).
    """

    def __init__(self, channels: int, hidden_ratio: int = 3, kernel_size: Tuple[int, int] = (7, 7),
                 layerdrop_rate: FloatLike = None):
        super().__init__()
        self.padding = ((kernel_size[0] - 1) // 2, (kernel_size[1] - 1) // 2)
        hidden = channels * hidden_ratio
        self.layerdrop_rate = layerdrop_rate if layerdrop_rate is not None else \
            ScheduledFloat((0.0, 0.2), (20000.0, 0.015))
        self.depthwise_conv = nn.Conv2d(channels, channels, kernel_size, groups=channels, padding=self.padding)
        self.pointwise_conv1 = nn.Conv2d(channels, hidden, kernel_size=1)
        self.hidden_balancer = Balancer(hidden, channel_dim=1, min_positive=0.3, max_positive=1.0,
                                        min_abs=0.75, max_abs=5.0)
        self.activation = SwooshL()
        self.pointwise_conv2 = ScaledConv2d(hidden, channels, kernel_size=1, initial_scale=0.01)
        self.out_balancer = Balancer(channels, channel_dim=1, min_positive=0.4, max_positive=0.6,
                                     min_abs=1.0, max_abs=6.0)
        self.out_whiten = Whiten(num_groups=1, whitening_limit=5.0, prob=(0.025, 0.25), grad_scale=0.01)

    def forward(self, x: Tensor) -> Tensor:
        bypass = x
        x = depthwise_conv(x, self.depthwise_conv.weight, self.depthwise_conv.bias, self.padding)
        x = self.pointwise_conv1(x)
        x = self.hidden_balancer(x)
        x = self.activation(x)
        x = self.pointwise_conv2(x)
        rate = float(self.layerdrop_rate) if self.training and not torch.jit.is_tracing() else 0.0
        if rate > 0.0:
            x = x * (torch.rand((x.shape[0], 1, 1, 1), device=x.device) > rate).to(x.dtype)
        x = self.out_balancer(bypass + x)
        if x.requires_grad:
            x = self.out_whiten(x.transpose(1, 3)).transpose(1, 3)
        return x


class Conv2dSubsampling(nn.Module):
    """(N, T, F) fbank -> (N, (T - CONV_CONTEXT) // 2, C) embeddings.

    Three 3x3 convolutions (time stride 1, 2, 1; frequency stride 1, 2, 2) with
    SwooshR, a ConvNeXt block, a linear projection to ``out_channels``, BiasNorm.
    """

    def __init__(self, in_channels: int, out_channels: int, layer1_channels: int = 8,
                 layer2_channels: int = 32, layer3_channels: int = 128, dropout: FloatLike = 0.1):
        super().__init__()
        if in_channels < 7:
            raise ValueError(f"Conv2dSubsampling needs at least 7 feature bins, got {in_channels}")
        self.conv = nn.Sequential(
            nn.Conv2d(1, layer1_channels, kernel_size=3, padding=(0, 1)),
            ScaleGrad(0.2),
            Balancer(layer1_channels, channel_dim=1, max_abs=1.0),
            SwooshR(),
            nn.Conv2d(layer1_channels, layer2_channels, kernel_size=3, stride=2, padding=0),
            Balancer(layer2_channels, channel_dim=1, max_abs=4.0),
            SwooshR(),
            nn.Conv2d(layer2_channels, layer3_channels, kernel_size=3, stride=(1, 2)),
            Balancer(layer3_channels, channel_dim=1, max_abs=4.0),
            SwooshR(),
        )
        self.convnext = ConvNeXt(layer3_channels, kernel_size=(2 * CONVNEXT_PAD + 1,) * 2)
        self.out_width = (((in_channels - 1) // 2) - 1) // 2
        self.out = nn.Linear(self.out_width * layer3_channels, out_channels)
        self.out_whiten = Whiten(num_groups=1, whitening_limit=ScheduledFloat((0.0, 4.0), (20000.0, 8.0), default=4.0),
                                 prob=(0.025, 0.25), grad_scale=0.02)
        self.out_norm = BiasNorm(out_channels)
        self.dropout = SharedDropout(dropout, shared_dim=1)

    def forward(self, x: Tensor, x_lens: Tensor) -> Tuple[Tensor, Tensor]:
        x = self.conv(x.unsqueeze(1))  # (N, C, T', F')
        x = self.convnext(x)
        n, c, t, f = x.shape
        x = self.out(x.transpose(1, 2).reshape(n, t, c * f))
        x = self.out_norm(self.out_whiten(x))
        x = self.dropout(x)
        return x, frames_after_front_end(x_lens)
