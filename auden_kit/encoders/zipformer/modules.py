"""Zipformer feed-forward, convolution, bypass and resampling modules.

Shape legend: T frames, B batch, C channels.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from auden_kit.nn.conv import depthwise_conv
from auden_kit.nn.scaling import (
    ActivationDropoutAndLinear, Balancer, FloatLike, ScheduledFloat, Whiten, limit_param_value,
    whitening_schedule,
)


class FeedforwardModule(nn.Module):
    """Linear -> SwooshL -> dropout -> Linear; (T, B, C) -> (T, B, C)."""

    def __init__(self, embed_dim: int, feedforward_dim: int, dropout: FloatLike):
        super().__init__()
        self.in_proj = nn.Linear(embed_dim, feedforward_dim)
        self.hidden_balancer = Balancer(feedforward_dim, channel_dim=-1, min_positive=0.3, max_positive=1.0,
                                        min_abs=0.75, max_abs=5.0)
        self.out_proj = ActivationDropoutAndLinear(feedforward_dim, embed_dim, activation="SwooshL",
                                                   dropout_p=dropout, dropout_shared_dim=0, bias=True,
                                                   initial_scale=0.1)
        self.out_whiten = Whiten(num_groups=1, whitening_limit=whitening_schedule(7.5), prob=(0.025, 0.25),
                                 grad_scale=0.01)

    def forward(self, x: Tensor) -> Tensor:
        return self.out_whiten(self.out_proj(self.hidden_balancer(self.in_proj(x))))


class ChunkCausalDepthwiseConv1d(nn.Module):
    """Depthwise conv that is causal across chunks: a causal half-width conv over the past,
    plus a full-width conv applied within each chunk whose output is scaled by a learned
    function of the position in the chunk. (B, C, T) -> (B, C, T)."""

    def __init__(self, channels: int, kernel_size: int, initial_scale: float = 1.0, bias: bool = True):
        super().__init__()
        assert kernel_size % 2 == 1
        self.kernel_size = kernel_size
        self.causal_conv = nn.Conv1d(channels, channels, (kernel_size + 1) // 2, groups=channels, bias=True)
        self.chunkwise_conv = nn.Conv1d(channels, channels, kernel_size, groups=channels,
                                        padding=kernel_size // 2, bias=bias)
        self.chunkwise_conv_scale = nn.Parameter(torch.zeros(2, channels, kernel_size))
        with torch.no_grad():
            self.causal_conv.weight[:] *= initial_scale
            self.chunkwise_conv.weight[:] *= initial_scale
            if bias:
                nn.init.uniform_(self.causal_conv.bias, -0.1 * initial_scale, 0.1 * initial_scale)

    def _chunk_scale(self, chunk_size: int) -> Tensor:
        left, right = self.chunkwise_conv_scale[0], self.chunkwise_conv_scale[1]
        if chunk_size < self.kernel_size:
            left, right = left[:, :chunk_size], right[:, -chunk_size:]
        else:
            pad = left.new_zeros(left.shape[0], chunk_size - self.kernel_size)
            left, right = torch.cat((left, pad), dim=-1), torch.cat((pad, right), dim=-1)
        return 1.0 + left + right

    def forward(self, x: Tensor, chunk_size: int = -1) -> Tensor:
        B, C, T = x.shape
        left_pad = self.kernel_size // 2
        if chunk_size < 0 or chunk_size > T:
            chunk_size = T
        right_pad = -T % chunk_size
        x = nn.functional.pad(x, (left_pad, right_pad))
        x_causal = depthwise_conv(x[..., : left_pad + T], self.causal_conv.weight, self.causal_conv.bias, (0,))
        xc = x[..., left_pad:]
        n = xc.shape[2] // chunk_size
        xc = xc.reshape(B, C, n, chunk_size).permute(0, 2, 1, 3).reshape(B * n, C, chunk_size)
        xc = depthwise_conv(xc, self.chunkwise_conv.weight, self.chunkwise_conv.bias, (left_pad,))
        xc = xc * self._chunk_scale(chunk_size)
        xc = xc.reshape(B, n, C, chunk_size).permute(0, 2, 1, 3).reshape(B, C, n * chunk_size)[..., :T]
        return xc + x_causal

    def streaming_forward(self, x: Tensor, cache: Tensor):
        """x: (B, C, chunk); cache: (B, C, kernel//2) past frames. Returns (out, new cache)."""
        left_pad = self.kernel_size // 2
        x = torch.cat([cache, x], dim=2)
        new_cache = x[..., -left_pad:]
        x_causal = self.causal_conv(x)
        xc = self.chunkwise_conv(x[..., left_pad:]) * self._chunk_scale(x.shape[2] - left_pad)
        return xc + x_causal, new_cache


class ConvolutionModule(nn.Module):
    """GLU-style gate -> depthwise conv -> SwooshR -> Linear; (T, B, C) -> (T, B, C)."""

    def __init__(self, channels: int, kernel_size: int, causal: bool):
        super().__init__()
        assert kernel_size % 2 == 1
        self.causal = causal
        self.in_proj = nn.Linear(channels, 2 * channels)
        self.balancer1 = Balancer(channels, channel_dim=-1,
                                  min_positive=ScheduledFloat((0.0, 0.05), (8000.0, 0.025)), max_positive=1.0,
                                  min_abs=1.5, max_abs=ScheduledFloat((0.0, 5.0), (8000.0, 10.0), default=1.0))
        self.depthwise_conv = (ChunkCausalDepthwiseConv1d(channels, kernel_size) if causal else
                               nn.Conv1d(channels, channels, kernel_size, groups=channels, padding=kernel_size // 2))
        self.balancer2 = Balancer(channels, channel_dim=1,
                                  min_positive=ScheduledFloat((0.0, 0.1), (8000.0, 0.05)), max_positive=1.0,
                                  min_abs=ScheduledFloat((0.0, 0.2), (20000.0, 0.5)), max_abs=10.0)
        self.whiten = Whiten(num_groups=1, whitening_limit=whitening_schedule(7.5), prob=(0.025, 0.25),
                             grad_scale=0.01)
        self.out_proj = ActivationDropoutAndLinear(channels, channels, activation="SwooshR", dropout_p=0.0,
                                                   initial_scale=0.05)

    def _gate(self, x: Tensor, pad_mask: Optional[Tensor]) -> Tensor:
        x, s = self.in_proj(x).chunk(2, dim=2)
        x = x * torch.sigmoid(self.balancer1(s))
        x = x.permute(1, 2, 0)  # (B, C, T)
        if pad_mask is not None:
            x = x.masked_fill(pad_mask.unsqueeze(1), 0.0)
        return x

    def _finish(self, x: Tensor) -> Tensor:
        x = self.balancer2(x).permute(2, 0, 1)
        return self.out_proj(self.whiten(x))

    def forward(self, x: Tensor, src_key_padding_mask: Optional[Tensor] = None, chunk_size: int = -1,
                cache: Optional[dict] = None, key: str = "") -> Tensor:
        """(T, B, C) -> (T, B, C). With ``cache`` (causal models, streaming) the convolution continues
        from the inputs kept in ``cache[key]`` (B, C, kernel // 2), updated in place."""
        x = self._gate(x, src_key_padding_mask)
        if cache is not None:
            x, cache[key] = self.depthwise_conv.streaming_forward(x, cache[key])
        elif self.causal:
            x = self.depthwise_conv(x, chunk_size=chunk_size)
        else:
            conv = self.depthwise_conv
            x = depthwise_conv(x, conv.weight, conv.bias, conv.padding)
        return self._finish(x)


class BypassModule(nn.Module):
    """``orig + (new - orig) * scale`` with a learned per-channel scale.

    During training the scale is kept in [scale_min, scale_max] (scale_min starts at 0.9,
    nearly straight-through, so every module must learn early) and whole sequences may
    skip the layer (``skip_rate``).
    """

    def __init__(self, embed_dim: int, skip_rate: FloatLike = 0.0, straight_through_rate: FloatLike = 0.0,
                 scale_min: FloatLike = None, scale_max: FloatLike = 1.0):
        super().__init__()
        self.bypass_scale = nn.Parameter(torch.full((embed_dim,), 0.5))
        self.skip_rate = skip_rate
        self.straight_through_rate = straight_through_rate
        self.scale_min = scale_min if scale_min is not None else ScheduledFloat((0.0, 0.9), (20000.0, 0.2), default=0)
        self.scale_max = scale_max

    def _scale(self, batch_size: int) -> Tensor:
        if torch.jit.is_tracing() or not self.training:
            return self.bypass_scale
        s = limit_param_value(self.bypass_scale, float(self.scale_min), float(self.scale_max))
        skip = float(self.skip_rate)
        if skip != 0.0:
            s = s * (torch.rand((batch_size, 1), device=s.device) > skip)
        st = float(self.straight_through_rate)
        if st != 0.0:
            s = torch.maximum(s, (torch.rand((batch_size, 1), device=s.device) < st).to(s.dtype))
        return s

    def forward(self, src_orig: Tensor, src: Tensor) -> Tensor:
        return src_orig + (src - src_orig) * self._scale(src.shape[1])


class SimpleDownsample(nn.Module):
    """(T, B, C) -> (ceil(T / ds), B, C): learned softmax-weighted sum of each ``ds`` frames
    (the last frame is repeated to fill the final group)."""

    def __init__(self, downsample: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(downsample))
        self.downsample = downsample

    def forward(self, src: Tensor) -> Tensor:
        T, B, C = src.shape
        ds = self.downsample
        dT = (T + ds - 1) // ds
        pad = dT * ds - T  # no branch on it: traced/exported models see every length
        src = torch.cat((src, src[T - 1:].expand(pad, B, C)), dim=0)
        w = self.bias.softmax(dim=0).reshape(1, ds, 1, 1)
        return (src.reshape(dT, ds, B, C) * w).sum(dim=1)


def simple_upsample(src: Tensor, upsample: int) -> Tensor:
    """(T, B, C) -> (T * upsample, B, C) by repetition."""
    T, B, C = src.shape
    return src.unsqueeze(1).expand(T, upsample, B, C).reshape(T * upsample, B, C)
