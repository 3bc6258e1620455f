"""Zipformer's training toolkit in pure PyTorch.

* :class:`ScheduledFloat` - a value that is a piecewise-linear function of the
  training batch count (dropout, skip rates, constraint limits). The trainer
  calls :func:`set_batch_count` every step; in eval mode the default is used.
* :class:`Balancer` / :class:`Whiten` - identity in the forward pass; in the
  backward pass they add a small gradient that keeps per-channel statistics
  (sign balance, RMS) in range, or the feature covariance close to white.
* :class:`BiasNorm` - ``x / rms(x - bias) * exp(log_scale)``.
* :class:`SwooshL` / :class:`SwooshR` - the paper's activations, with an
  autograd function that stores a one-byte derivative instead of the input.
* :func:`ScaledLinear` and friends - layers initialized at a given output scale.

All of these become plain identities / formulas under tracing or in eval mode,
so the encoder exports without them (see ``torch.jit.trace`` tests).
"""

from __future__ import annotations

import math
import random
from typing import Optional, Tuple, Union

import torch
from torch import Tensor, nn


class ScheduledFloat(nn.Module):
    """Piecewise-linear function of the batch count; ``float(obj)`` gives the current value.

    ``ScheduledFloat((0.0, 0.3), (20000.0, 0.1), default=0.1)``: 0.3 at batch 0 going to
    0.1 at batch 20000 and staying there. Outside training (or before the first
    :func:`set_batch_count`) it is ``default``.
    """

    def __init__(self, *points: Tuple[float, float], default: float = 0.0):
        super().__init__()
        self.points = sorted((float(x), float(y)) for x, y in points)
        self.default = float(default)
        self.batch_count: Optional[float] = None

    def value_at(self, n: float) -> float:
        pts = self.points
        if n <= pts[0][0]:
            return pts[0][1]
        for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
            if n <= x1:
                return y0 + (y1 - y0) * (n - x0) / (x1 - x0)
        return pts[-1][1]

    def __float__(self) -> float:
        if self.batch_count is None or not self.training or torch.jit.is_tracing():
            return self.default
        return self.value_at(self.batch_count)

    def extra_repr(self) -> str:
        return f"points={self.points}, default={self.default}"


FloatLike = Union[float, ScheduledFloat]


def set_batch_count(model: nn.Module, batch_count: float) -> None:
    """Advance every :class:`ScheduledFloat` inside ``model`` to ``batch_count``."""
    for m in model.modules():
        if isinstance(m, ScheduledFloat):
            m.batch_count = float(batch_count)


def whitening_schedule(x: float, ratio: float = 2.0) -> ScheduledFloat:
    return ScheduledFloat((0.0, x), (20000.0, ratio * x), default=x)


# ---------------------------------------------------------------------------- Balancer


class _BalancerFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, min_mean, max_mean, min_rms, max_rms, grad_scale, channel_dim):
        ctx.save_for_backward(x)
        ctx.cfg = (min_mean, max_mean, min_rms, max_rms, grad_scale, channel_dim)
        return x

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        min_mean, max_mean, min_rms, max_rms, grad_scale, channel_dim = ctx.cfg
        with torch.enable_grad(), torch.autocast(device_type=x.device.type, enabled=False):
            x = x.detach().float().requires_grad_(True)
            dims = [i for i in range(x.ndim) if i != channel_dim]
            sq = (x ** 2).mean(dim=dims, keepdim=True)
            mean = x.mean(dim=dims, keepdim=True)
            std = (sq - mean * mean).clamp(min=1e-20).sqrt()
            rms = sq.clamp(min=1e-20).sqrt()
            m = mean / std
            loss = (m - m.clamp(min=min_mean, max=max_mean)).abs() + \
                (rms.clamp(min=min_rms, max=max_rms) / rms).log().abs()
            (g,) = torch.autograd.grad(loss.sum(), x)
        g_rms = (g ** 2).mean(dim=dims, keepdim=True).sqrt().clamp(min=1e-20)
        g = g * (grad_scale / g_rms)
        gf = grad.float()
        return (gf + gf.abs() * g).to(grad.dtype), None, None, None, None, None, None


def _positive_fraction_to_mean(p: float) -> float:
    # Under a Gaussian, P(x > 0) = p  <=>  mean/std = erfinv(2p - 1) * sqrt(2) ~ 0.814 * atanh(2p - 1)
    z = 2 * p - 1
    eps = 1e-10
    return 0.8139535143 * (math.log(1 + z + eps) - math.log(1 - z + eps)) / 2.0


class Balancer(nn.Module):
    """Keep each channel's sign balance and magnitude in range (gradient-only).

    Args: ``min_positive``/``max_positive``: bounds on P(x > 0) per channel;
    ``min_abs``/``max_abs``: bounds on mean |x| per channel; ``prob``: how often to
    apply (saves time and memory).
    """

    def __init__(self, num_channels: int, channel_dim: int, min_positive: FloatLike = 0.05,
                 max_positive: FloatLike = 0.95, min_abs: FloatLike = 0.2, max_abs: FloatLike = 100.0,
                 grad_scale: FloatLike = 0.04, prob: Optional[FloatLike] = None):
        super().__init__()
        self.num_channels = num_channels
        self.channel_dim = channel_dim
        self.min_positive, self.max_positive = min_positive, max_positive
        self.min_abs, self.max_abs = min_abs, max_abs
        self.grad_scale = grad_scale
        self.prob = prob if prob is not None else ScheduledFloat((0.0, 0.5), (8000.0, 0.125), default=0.4)

    def forward(self, x: Tensor) -> Tensor:
        if torch.jit.is_tracing() or not x.requires_grad or random.random() >= float(self.prob):
            return x
        abs_to_rms = 1.25331413732  # E|x| -> rms for a Gaussian
        dim = self.channel_dim % x.ndim
        return _BalancerFn.apply(
            x, _positive_fraction_to_mean(float(self.min_positive)),
            _positive_fraction_to_mean(float(self.max_positive)),
            abs_to_rms * float(self.min_abs), abs_to_rms * float(self.max_abs), float(self.grad_scale), dim,
        )


# ---------------------------------------------------------------------------- Whiten


def whitening_metric(x: Tensor, num_groups: int) -> Tensor:
    """1.0 when the centered covariance of each channel group is a multiple of I (same for all
    groups); larger otherwise."""
    x = x.reshape(-1, x.shape[-1])
    frames, channels = x.shape
    per = channels // num_groups
    x = x.reshape(frames, num_groups, per).transpose(0, 1)
    x = x - x.mean(dim=1, keepdim=True)
    cov = torch.matmul(x.transpose(1, 2), x)
    diag_mean = torch.diagonal(cov, dim1=1, dim2=2).mean()
    sq_mean = (cov ** 2).sum() / (num_groups * per)
    return sq_mean / (diag_mean ** 2 + 1e-20)


class _WhitenFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, module):
        ctx.save_for_backward(x)
        ctx.module = module
        return x

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        w = ctx.module
        with torch.enable_grad(), torch.autocast(device_type=x.device.type, enabled=False):
            xd = x.detach().float().requires_grad_(True)
            metric = whitening_metric(xd, w.num_groups)
            if metric < float(w.whitening_limit):
                w.prob = w.min_prob
                return grad, None
            w.prob = w.max_prob
            (pg,) = torch.autograd.grad(metric, xd)
        scale = float(w.grad_scale) * grad.float().norm() / (pg.norm() + 1e-20)
        return grad + (pg * scale).to(grad.dtype), None


class Whiten(nn.Module):
    """Push the feature covariance towards white when its metric exceeds ``whitening_limit``."""

    def __init__(self, num_groups: int, whitening_limit: FloatLike, prob: Union[float, Tuple[float, float]],
                 grad_scale: FloatLike):
        super().__init__()
        self.num_groups = num_groups
        self.whitening_limit = whitening_limit
        self.grad_scale = grad_scale
        self.min_prob, self.max_prob = (prob, prob) if isinstance(prob, float) else prob
        self.prob = self.max_prob

    def training_state(self) -> float:  # saved in checkpoints for exact resume
        return self.prob

    def load_training_state(self, prob: float) -> None:
        self.prob = prob

    def forward(self, x: Tensor) -> Tensor:
        if torch.jit.is_tracing() or not x.requires_grad or random.random() > self.prob:
            return x
        return _WhitenFn.apply(x, self)


# ---------------------------------------------------------------------------- BiasNorm


class _LimitParam(torch.autograd.Function):
    """Identity that zeroes gradients pushing a parameter further outside [min, max]."""

    @staticmethod
    def forward(ctx, x, lo, hi):
        ctx.save_for_backward(x)
        ctx.lo, ctx.hi = lo, hi
        return x

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        # gradient descent moves x by -grad: block grad<0 above hi and grad>0 below lo
        block = ((x > ctx.hi) & (grad < 0)) | ((x < ctx.lo) & (grad > 0))
        return grad.masked_fill(block, 0.0), None, None


def limit_param_value(x: Tensor, lo: float, hi: float, training: bool = True) -> Tensor:
    if training and x.requires_grad and not torch.jit.is_tracing():
        return _LimitParam.apply(x, lo, hi)
    return x


class BiasNorm(nn.Module):
    """``x * exp(log_scale) / rms(x - bias)`` over the channel dim (Zipformer's LayerNorm)."""

    def __init__(self, num_channels: int, channel_dim: int = -1, log_scale: float = 1.0,
                 log_scale_min: float = -1.5, log_scale_max: float = 1.5):
        super().__init__()
        self.num_channels = num_channels
        self.channel_dim = channel_dim
        self.log_scale = nn.Parameter(torch.tensor(log_scale))
        self.bias = nn.Parameter(torch.empty(num_channels).normal_(mean=0, std=1e-4))
        self.log_scale_min, self.log_scale_max = log_scale_min, log_scale_max

    def forward(self, x: Tensor) -> Tensor:
        dim = self.channel_dim % x.ndim
        bias = self.bias.reshape([-1] + [1] * (x.ndim - dim - 1))
        log_scale = limit_param_value(self.log_scale, self.log_scale_min, self.log_scale_max, self.training)
        scales = torch.mean((x - bias) ** 2, dim=dim, keepdim=True) ** -0.5 * log_scale.exp()
        return x * scales


# ---------------------------------------------------------------------------- Swoosh

SWOOSH_L_OFFSET, SWOOSH_L_CONST = 4.0, 0.035
SWOOSH_R_OFFSET, SWOOSH_R_CONST = 1.0, 0.313261687


def swoosh(x: Tensor, offset: float, const: float) -> Tensor:
    # in place on softplus's fresh output (its backward reads the input): 3 passes fewer
    return nn.functional.softplus(x - offset).add_(x, alpha=-0.08).sub_(const)


class _SwooshFn(torch.autograd.Function):
    """Swoosh that saves its derivative as one byte per element (4x less than fp32 input).

    The derivative is ``sigmoid(x - offset) - 0.08``; we store ``floor(255 * sigmoid)`` and
    decode the bin centre (error <= 0.5/255). Written as 7 passes over the tensor with
    in-place updates: on CPU these elementwise passes, not the arithmetic, are the cost
    (random rounding as in icefall would add two more).
    """

    @staticmethod
    def forward(ctx, x: Tensor, offset: float, const: float):
        xf = x.float()
        z = xf - offset
        y = nn.functional.softplus(z)
        q = z.sigmoid_().mul_(255.0).to(torch.uint8)
        ctx.save_for_backward(q)
        return y.add_(xf, alpha=-0.08).sub_(const).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        (q,) = ctx.saved_tensors
        deriv = q.to(grad.dtype).mul_(1.0 / 255.0).add_(0.5 / 255.0 - 0.08)
        return deriv.mul_(grad), None, None


class SwooshL(nn.Module):
    """SwooshL(x) = log(1 + e^(x-4)) - 0.08 x - 0.035."""

    def forward(self, x: Tensor) -> Tensor:
        if x.requires_grad and not torch.jit.is_tracing():
            return _SwooshFn.apply(x, SWOOSH_L_OFFSET, SWOOSH_L_CONST)
        return swoosh(x, SWOOSH_L_OFFSET, SWOOSH_L_CONST)


class SwooshR(nn.Module):
    """SwooshR(x) = log(1 + e^(x-1)) - 0.08 x - 0.313261687."""

    def forward(self, x: Tensor) -> Tensor:
        if x.requires_grad and not torch.jit.is_tracing():
            return _SwooshFn.apply(x, SWOOSH_R_OFFSET, SWOOSH_R_CONST)
        return swoosh(x, SWOOSH_R_OFFSET, SWOOSH_R_CONST)


# ---------------------------------------------------------------------------- scaled layers


def _scale_init(layer: nn.Module, initial_scale: float) -> nn.Module:
    with torch.no_grad():
        layer.weight[:] *= initial_scale
        if layer.bias is not None:
            nn.init.uniform_(layer.bias, -0.1 * initial_scale, 0.1 * initial_scale)
    return layer


def ScaledLinear(*args, initial_scale: float = 1.0, **kwargs) -> nn.Linear:
    """nn.Linear whose initial output is ``initial_scale`` times the default."""
    return _scale_init(nn.Linear(*args, **kwargs), initial_scale)


def ScaledConv2d(*args, initial_scale: float = 1.0, **kwargs) -> nn.Conv2d:
    return _scale_init(nn.Conv2d(*args, **kwargs), initial_scale)


class SharedDropout(nn.Module):
    """Dropout whose mask is shared along ``shared_dim`` (e.g. the same channels dropped at
    every frame); ``p`` may be scheduled."""

    def __init__(self, p: FloatLike, shared_dim: Optional[int] = None):
        super().__init__()
        self.p = p
        self.shared_dim = shared_dim

    def forward(self, x: Tensor) -> Tensor:
        p = float(self.p)
        if not self.training or p == 0.0 or torch.jit.is_tracing():
            return x
        if self.shared_dim is None:
            return nn.functional.dropout(x, p, training=True)
        shape = list(x.shape)
        shape[self.shared_dim] = 1
        mask = (torch.rand(shape, device=x.device) > p).to(x.dtype) * (1.0 / (1 - p))
        return x * mask


class ActivationDropoutAndLinear(nn.Module):
    """Swoosh activation, dropout shared over ``dropout_shared_dim``, then a linear layer.

    Parameters are ``weight`` and ``bias`` directly (as in a Linear)."""

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True, activation: str = "SwooshL",
                 dropout_p: FloatLike = 0.0, dropout_shared_dim: Optional[int] = -1, initial_scale: float = 1.0):
        super().__init__()
        lin = ScaledLinear(in_channels, out_channels, bias=bias, initial_scale=initial_scale)
        self.weight = lin.weight
        self.bias = lin.bias
        self.activation = SwooshL() if activation == "SwooshL" else SwooshR()
        self.dropout = SharedDropout(dropout_p, dropout_shared_dim)

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.linear(self.dropout(self.activation(x)), self.weight, self.bias)


class _ScaleGradFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, alpha):
        ctx.alpha = alpha
        return x

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.alpha, None


class ScaleGrad(nn.Module):
    """Identity whose gradient is multiplied by ``alpha``."""

    def __init__(self, alpha: float):
        super().__init__()
        self.alpha = alpha

    def forward(self, x: Tensor) -> Tensor:
        if torch.jit.is_tracing() or not self.training:
            return x
        return _ScaleGradFn.apply(x, self.alpha)


def convert_num_channels(x: Tensor, num_channels: int) -> Tensor:
    """Truncate or zero-pad the last dim to ``num_channels``."""
    if num_channels <= x.shape[-1]:
        return x[..., :num_channels]
    pad = torch.zeros(*x.shape[:-1], num_channels - x.shape[-1], dtype=x.dtype, device=x.device)
    return torch.cat((x, pad), dim=-1)


def penalize_abs_values_gt(x: Tensor, limit: float, penalty: float) -> Tensor:
    """Identity in value; adds ``penalty * relu(|x| - limit)`` to the loss through gradients."""
    if not x.requires_grad:
        return x
    aux = penalty * (x.abs() - limit).relu()
    return _WithAuxLoss.apply(x, aux)


class _WithAuxLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, aux):
        ctx.shape = aux.shape
        return x

    @staticmethod
    def backward(ctx, grad):
        return grad, torch.ones(ctx.shape, dtype=grad.dtype, device=grad.device)
