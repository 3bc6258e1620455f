"""Zipformer attention: compact relative positions, shared attention weights, and the
two modules that consume them (self-attention on values, non-linear attention).

Shape legend: T frames, B batch, C channels, H heads, P positional dim.
"""

from __future__ import annotations

import math
import random
from typing import Optional

import torch
from torch import Tensor, nn

from auden_kit.nn.scaling import (
    Balancer, FloatLike, ScaledLinear, ScheduledFloat, SharedDropout, Whiten, penalize_abs_values_gt,
    whitening_schedule,
)


class CompactRelPositionalEncoding(nn.Module):
    """Embeddings of relative offsets -(T-1)..(T-1), shape (1, 2T-1, P).

    Offsets are log-compressed beyond ~sqrt(P), mapped to (-pi, pi) by atan, then
    expanded in sines/cosines, so nearby offsets are distinct and far ones blur
    together (what matters for relative position). The last dim is a constant 1 (bias).
    """

    def __init__(self, embed_dim: int, dropout_rate: FloatLike, max_len: int = 1000, length_factor: float = 1.0):
        super().__init__()
        assert embed_dim % 2 == 0
        self.embed_dim = embed_dim
        self.length_factor = length_factor
        self.dropout = SharedDropout(dropout_rate)
        self.pe: Optional[Tensor] = None
        self._extend(max_len, torch.device("cpu"), torch.float32)

    def _extend(self, T: int, device, dtype) -> None:
        if self.pe is not None and self.pe.size(0) >= 2 * T - 1:
            if self.pe.device != device or self.pe.dtype != dtype:
                self.pe = self.pe.to(device=device, dtype=dtype)
            return
        x = torch.arange(-(T - 1), T, device=device, dtype=torch.float32).unsqueeze(1)
        freqs = 1 + torch.arange(self.embed_dim // 2, device=device)
        c = self.embed_dim ** 0.5
        compressed = c * x.sign() * ((x.abs() + c).log() - math.log(c))
        angle = (compressed / (self.length_factor * self.embed_dim / (2.0 * math.pi))).atan()
        pe = torch.zeros(x.shape[0], self.embed_dim, device=device)
        pe[:, 0::2] = (angle * freqs).cos()
        pe[:, 1::2] = (angle * freqs).sin()
        pe[:, -1] = 1.0
        self.pe = pe.to(dtype)

    def forward(self, x: Tensor, left_context_len: int = 0) -> Tensor:
        """x: (T, B, C) -> (1, left_context_len + 2T - 1, P)."""
        T = x.size(0) + left_context_len
        self._extend(T, x.device, x.dtype)
        mid = self.pe.size(0) // 2
        return self.dropout(self.pe[mid - T + 1: mid + x.size(0)].unsqueeze(0))


class RelPositionMultiheadAttentionWeights(nn.Module):
    """Attention weights (H, B, T, T) from queries, keys and relative-position queries.

    Computed once per layer and shared by NonlinAttention and two SelfAttention modules.
    """

    def __init__(self, embed_dim: int, pos_dim: int, num_heads: int, query_head_dim: int, pos_head_dim: int,
                 dropout: float = 0.0,
                 pos_emb_skip_rate: FloatLike = ScheduledFloat((0.0, 0.5), (4000.0, 0.0))):
        super().__init__()
        self.num_heads, self.query_head_dim, self.pos_head_dim = num_heads, query_head_dim, pos_head_dim
        self.dropout = dropout
        self.pos_emb_skip_rate = pos_emb_skip_rate
        in_proj_dim = (2 * query_head_dim + pos_head_dim) * num_heads
        self.in_proj = ScaledLinear(embed_dim, in_proj_dim, bias=True, initial_scale=query_head_dim ** -0.25)
        self.whiten_keys = Whiten(num_groups=num_heads, whitening_limit=whitening_schedule(3.0),
                                  prob=(0.025, 0.25), grad_scale=0.025)
        self.balance_keys = Balancer(query_head_dim * num_heads, channel_dim=-1, min_positive=0.4,
                                     max_positive=0.6, min_abs=0.0, max_abs=100.0, prob=0.025)
        self.linear_pos = ScaledLinear(pos_dim, num_heads * pos_head_dim, bias=False, initial_scale=0.05)

    def forward(self, x: Tensor, pos_emb: Tensor, key_padding_mask: Optional[Tensor] = None,
                attn_mask: Optional[Tensor] = None, cache: Optional[dict] = None) -> Tensor:
        """x: (T, B, C). Without ``cache``: pos_emb (1, 2T-1, P), key_padding_mask (B, T) True=pad,
        attn_mask (T, T) True=masked; returns (H, B, T, T). With ``cache`` (streaming: the keys of the
        last L frames in ``cache["key"]``, (L, B, H*dq), updated in place): keys are the L cached plus
        the T new frames, pos_emb is (1, L+2T-1, P), key_padding_mask (B, L+T); returns (H, B, T, L+T)."""
        x = self.in_proj(x)
        T, B, _ = x.shape
        H, dq, dp = self.num_heads, self.query_head_dim, self.pos_head_dim
        q = x[..., : H * dq].reshape(T, B, H, dq).permute(2, 1, 0, 3)  # (H, B, T, dq)
        k = self.whiten_keys(self.balance_keys(x[..., H * dq: 2 * H * dq]))
        if cache is not None:
            k = torch.cat([cache["key"], k], dim=0)
            cache["key"] = k[k.shape[0] - cache["key"].shape[0]:]
        K = k.shape[0]
        k = k.reshape(K, B, H, dq).permute(2, 1, 3, 0)  # (H, B, dq, K)
        p = x[..., 2 * H * dq:].reshape(T, B, H, dp).permute(2, 1, 0, 3)  # (H, B, T, dp)
        scores = torch.matmul(q, k)
        use_pos = torch.jit.is_tracing() or not self.training or random.random() >= float(self.pos_emb_skip_rate)
        if use_pos:
            pe = self.linear_pos(pos_emb).reshape(-1, K + T - 1, H, dp).permute(2, 0, 3, 1)  # (H, 1, dp, K+T-1)
            pos_scores = torch.matmul(p, pe)  # (H, B, T, K+T-1): column c <-> offset c-(K-1)
            scores = scores + self._rel_shift(pos_scores, T, K)
        if self.training and not torch.jit.is_tracing() and random.random() < 0.1:
            scores = penalize_abs_values_gt(scores, limit=25.0, penalty=1e-4)
        if attn_mask is not None:
            scores = scores.masked_fill(attn_mask, -1000.0)
        if key_padding_mask is not None:
            scores = scores.masked_fill(key_padding_mask.unsqueeze(1), -1000.0)
        weights = scores.softmax(dim=-1)
        return nn.functional.dropout(weights, p=self.dropout, training=self.training)

    @staticmethod
    def _rel_shift(pos_scores: Tensor, T: int, K: int) -> Tensor:
        """(H, B, T, K+T-1) scores by offset -> (H, B, T, K) scores by key position, for queries at
        the last T of K key positions: query i and key j have offset j - (K - T) - i, which is
        column (T - 1) - i + j."""
        H, B, _, n = pos_scores.shape
        if torch.jit.is_tracing():
            rows = torch.arange(T - 1, -1, -1, device=pos_scores.device).unsqueeze(1)
            idx = (rows + torch.arange(K, device=pos_scores.device)).expand(H, B, T, K)
            return torch.gather(pos_scores, 3, idx)
        s = pos_scores.stride()
        return pos_scores.as_strided((H, B, T, K), (s[0], s[1], s[2] - s[3], s[3]),
                                     storage_offset=pos_scores.storage_offset() + s[3] * (T - 1))


def _with_cache(x: Tensor, cache: Optional[dict], key: str) -> Tensor:
    """Prepend the cached frames ``cache[key]`` (L, B, C) to ``x`` (T, B, C); keep the last L in the cache."""
    if cache is None:
        return x
    x = torch.cat([cache[key], x], dim=0)
    cache[key] = x[x.shape[0] - cache[key].shape[0]:]
    return x


class SelfAttention(nn.Module):
    """Weighted sum of projected values with precomputed weights; (T, B, C) -> (T, B, C)."""

    def __init__(self, embed_dim: int, num_heads: int, value_head_dim: int):
        super().__init__()
        self.in_proj = nn.Linear(embed_dim, num_heads * value_head_dim, bias=True)
        self.out_proj = ScaledLinear(num_heads * value_head_dim, embed_dim, bias=True, initial_scale=0.05)
        self.whiten = Whiten(num_groups=1, whitening_limit=whitening_schedule(7.5, ratio=3.0),
                             prob=(0.025, 0.25), grad_scale=0.01)

    def forward(self, x: Tensor, attn_weights: Tensor, cache: Optional[dict] = None, key: str = "") -> Tensor:
        """x (T, B, C), attn_weights (H, B, T, K) -> (T, B, C); with ``cache``, ``cache[key]`` holds the
        values of the K - T frames before x (streaming)."""
        T, B, _ = x.shape
        H = attn_weights.shape[0]
        v = _with_cache(self.in_proj(x), cache, key)
        v = v.reshape(v.shape[0], B, H, -1).permute(2, 1, 0, 3)  # (H, B, K, dv)
        out = torch.matmul(attn_weights, v).permute(2, 1, 0, 3).reshape(T, B, -1)
        return self.whiten(self.out_proj(out))


class NonlinAttention(nn.Module):
    """Like a convolution module whose convolution is the (first head's) attention:
    ``out = W_o [(A @ (x * tanh(s))) * y]`` with s, x, y projections of the input."""

    def __init__(self, channels: int, hidden_channels: int):
        super().__init__()
        self.hidden_channels = hidden_channels
        self.in_proj = nn.Linear(channels, hidden_channels * 3, bias=True)
        self.balancer = Balancer(hidden_channels, channel_dim=-1,
                                 min_positive=ScheduledFloat((0.0, 0.25), (20000.0, 0.05)),
                                 max_positive=ScheduledFloat((0.0, 0.75), (20000.0, 0.95)),
                                 min_abs=0.5, max_abs=5.0)
        self.out_proj = ScaledLinear(hidden_channels, channels, bias=True, initial_scale=0.05)
        self.whiten1 = Whiten(num_groups=1, whitening_limit=whitening_schedule(5.0), prob=(0.025, 0.25),
                              grad_scale=0.01)
        self.whiten2 = Whiten(num_groups=1, whitening_limit=whitening_schedule(5.0, ratio=3.0),
                              prob=(0.025, 0.25), grad_scale=0.01)

    def forward(self, x: Tensor, attn_weights: Tensor, cache: Optional[dict] = None, key: str = "") -> Tensor:
        """x: (T, B, C); attn_weights: (1, B, T, K) (one head); with ``cache``, ``cache[key]`` holds the
        gated inputs of the K - T frames before x (streaming)."""
        s, x, y = self.in_proj(x).chunk(3, dim=2)
        s = torch.tanh(self.balancer(s))
        x = self.whiten1(x) * s
        T, B, _ = x.shape
        H = attn_weights.shape[0]
        x = _with_cache(x, cache, key)
        x = x.reshape(x.shape[0], B, H, -1).permute(2, 1, 0, 3)
        x = torch.matmul(attn_weights, x).permute(2, 1, 0, 3).reshape(T, B, -1)
        return self.whiten2(self.out_proj(x * y))
