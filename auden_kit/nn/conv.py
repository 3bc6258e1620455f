"""Depthwise convolutions with a faster backward pass on CPU.

oneDNN's backward for depthwise (``groups == channels``) convolutions is several times
slower than its forward pass on CPU: for the ConvNeXt block of the Zipformer front end
(N=4, C=128, 496x19, 7x7) it took 270 ms against 14 ms forward. Both gradients are
themselves cheap convolutions:

* input gradient: the same depthwise convolution of the output gradient with the kernel
  flipped in every spatial dimension (stride 1, "full minus padding" padding);
* weight gradient: a correlation of the padded input with the output gradient, one per
  (channel, sequence) pair - a grouped convolution whose "kernel" is the output gradient,
  summed over the batch.

Together 55 ms for the case above (``bench/zipformer_speed.py``). Used for stride 1 and
zero padding, which is all the Zipformer needs; numerically the same convolution.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor
from torch.nn import functional as F


def _conv(x: Tensor, w: Tensor, b: Optional[Tensor], padding: Sequence[int], groups: int) -> Tensor:
    return F.conv1d(x, w, b, padding=padding[0], groups=groups) if x.ndim == 3 else \
        F.conv2d(x, w, b, padding=tuple(padding), groups=groups)


class _DepthwiseConvFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Optional[Tensor], padding: Sequence[int]):
        ctx.save_for_backward(x, weight)
        ctx.padding = tuple(padding)
        ctx.has_bias = bias is not None
        return _conv(x, weight, bias, padding, x.shape[1])

    @staticmethod
    def backward(ctx, g: Tensor):
        x, w = ctx.saved_tensors
        pad = ctx.padding
        channels = x.shape[1]
        spatial = w.shape[2:]
        g = g.contiguous()
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            full = [k - 1 - p for k, p in zip(spatial, pad)]
            grad_x = _conv(g, w.flip(list(range(2, w.ndim))), None, full, channels)
        if ctx.needs_input_grad[1]:
            n = x.shape[0]
            pads = []
            for p in reversed(pad):
                pads += [p, p]
            xp = F.pad(x, pads) if any(pad) else x
            # (N, C, *S) -> (1, C*N, *S): one group per (channel, sequence) pair.
            inp = xp.transpose(0, 1).reshape(1, channels * n, *xp.shape[2:])
            ker = g.transpose(0, 1).reshape(channels * n, 1, *g.shape[2:])
            corr = _conv(inp, ker, None, [0] * len(spatial), channels * n)
            grad_w = corr.reshape(channels, n, *spatial).sum(dim=1, keepdim=True).to(w.dtype)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = g.sum(dim=[0] + list(range(2, g.ndim)))
        return grad_x, grad_w, grad_b, None


def depthwise_conv(x: Tensor, weight: Tensor, bias: Optional[Tensor], padding: Sequence[int]) -> Tensor:
    """Stride-1 depthwise convolution, (N, C, L) with (C, 1, K) or (N, C, H, W) with (C, 1, KH, KW).

    Same result as ``F.conv1d/conv2d(..., groups=C)``; with a faster backward pass when
    gradients are needed (see the module docstring).
    """
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad) and not torch.jit.is_tracing():
        if torch.is_autocast_enabled(x.device.type):  # a custom Function is not autocast: cast as conv would
            dt = torch.get_autocast_dtype(x.device.type)
            x, weight = x.to(dt), weight.to(dt)
            bias = bias.to(dt) if bias is not None else None
        return _DepthwiseConvFn.apply(x, weight, bias, padding)
    return _conv(x, weight, bias, padding, x.shape[1])
