"""Pruned RNN-T loss in pure PyTorch (the k2 recipe, without k2).

1. **Simple loss**: a trivial joiner ``am[t] + lm[u]`` whose log-softmax over the
   vocabulary is cheap (one batched matmul). Its arc posteriors tell, for each
   frame, where on the label axis the probability mass is.
2. **Prune ranges**: per frame, the ``prune_range`` consecutive label positions
   holding most of that mass, made monotone and connected so a path exists.
3. **Pruned loss**: the real joiner evaluated only on that band, (B, T, S, V)
   instead of (B, T, U+1, V).

The forward recursion runs frame by frame over a band of label positions
(the whole lattice is a band of width U+1 starting at 0); within a frame the
label-axis recursion is a log-cumsum, so each frame is a handful of vectorized
ops. Gradients come from autograd.

Shape legend: B batch, T frames, U labels, S band width, V vocabulary.
"""

from __future__ import annotations

import torch
from torch import Tensor

NEG = -1.0e30  # "log 0" that keeps arithmetic finite (no inf - inf)


def _exclusive_cumsum(x: Tensor) -> Tensor:
    return torch.cumsum(x, dim=-1) - x


def band_log_likelihood(blank: Tensor, emit: Tensor, starts: Tensor, frames: Tensor, labels: Tensor) -> Tensor:
    """log P(y | x) summed over alignments in a band of the RNN-T lattice.

    blank: (B, T, S) log-prob of blank at node (t, starts[b, t] + k);
    emit:  (B, T, S) log-prob of emitting label u+1 at node (t, u = starts + k);
    starts: (B, T) long, non-decreasing, starts[:, 0] == 0;
    frames, labels: (B,) valid T and U of each sequence. Returns (B,).
    """
    B, T, S = blank.shape
    dtype = torch.float64
    blank, emit = blank.to(dtype), emit.to(dtype)
    k = torch.arange(S, device=blank.device)
    init = torch.full((B, S), NEG, dtype=dtype, device=blank.device)
    init[:, 0] = 0.0
    alphas = []
    prev = None
    for t in range(T):
        if t == 0:
            a = init
        else:
            shift = (starts[:, t] - starts[:, t - 1]).unsqueeze(1)  # (B, 1)
            idx = k.unsqueeze(0) + shift
            ok = idx < S
            a = torch.gather(prev, 1, idx.clamp(max=S - 1))
            a = torch.where(ok, a, torch.full_like(a, NEG))
        c = _exclusive_cumsum(emit[:, t])
        alpha = c + torch.logcumsumexp(a - c, dim=1)
        alphas.append(alpha)
        prev = alpha + blank[:, t]
    alpha = torch.stack(alphas, dim=1)  # (B, T, S)
    b = torch.arange(B, device=blank.device)
    t_last = frames - 1
    k_last = labels - starts[b, t_last]
    return alpha[b, t_last, k_last] + blank[b, t_last, k_last]


def _gather_labels(logp: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """logp (B, T, U+1, V) -> blank (B, T, U+1), emit (B, T, U+1) (last column: padding)."""
    B, T, U1, V = logp.shape
    blank = logp[..., 0]
    y = torch.cat([targets, targets.new_zeros(B, 1)], dim=1)  # (B, U+1), padded
    emit = torch.gather(logp, 3, y.view(B, 1, U1, 1).expand(B, T, U1, 1)).squeeze(-1)
    return blank, emit


def _reduce(nll: Tensor, reduction: str) -> Tensor:
    if reduction == "sum":
        return nll.sum()
    if reduction == "mean":
        return nll.mean()
    if reduction == "none":
        return nll
    raise ValueError(f"reduction must be sum, mean or none, got {reduction}")


def rnnt_loss_full(logits: Tensor, targets: Tensor, frames: Tensor, labels: Tensor, reduction: str = "sum") -> Tensor:
    """Unpruned RNN-T loss on (B, T, U+1, V) joiner logits (blank id 0); for tests and small inputs."""
    blank, emit = _gather_labels(logits.log_softmax(-1), targets)
    B, T, U1 = blank.shape
    starts = torch.zeros(B, T, dtype=torch.long, device=logits.device)
    return _reduce(-band_log_likelihood(blank, emit, starts, frames, labels).to(logits.dtype), reduction)


def simple_lattice(am: Tensor, lm: Tensor, targets: Tensor, lm_only_scale: float = 0.0,
                   am_only_scale: float = 0.0) -> tuple[Tensor, Tensor]:
    """Blank/emit log-probs of the trivial joiner ``am[t] + lm[u]``.

    am: (B, T, V); lm: (B, U+1, V); returns (B, T, U+1) blank and emit. With
    ``lm_only_scale``/``am_only_scale`` the log-probs are interpolated with those of
    the lm alone and the am alone (k2's "smoothed" loss).
    """
    am_max = am.max(dim=-1, keepdim=True).values
    lm_max = lm.max(dim=-1, keepdim=True).values
    norm = torch.matmul((am - am_max).exp(), (lm - lm_max).exp().transpose(1, 2))  # (B, T, U+1)
    norm = norm.clamp(min=1e-30).log() + am_max + lm_max.transpose(1, 2)
    B, U1, V = lm.shape
    y = torch.cat([targets, targets.new_zeros(B, 1)], dim=1)  # (B, U+1)
    am_y = torch.gather(am, 2, y.unsqueeze(1).expand(B, am.shape[1], U1))  # (B, T, U+1)
    lm_y = torch.gather(lm, 2, y.unsqueeze(2)).squeeze(2)  # (B, U+1)
    emit = am_y + lm_y.unsqueeze(1) - norm
    blank = am[..., 0:1] + lm[..., 0].unsqueeze(1) - norm
    if lm_only_scale or am_only_scale:
        lm_lp = lm.log_softmax(-1)
        am_lp = am.log_softmax(-1)
        lm_emit = torch.gather(lm_lp, 2, y.unsqueeze(2)).squeeze(2).unsqueeze(1)
        lm_blank = lm_lp[..., 0].unsqueeze(1)
        am_emit = torch.gather(am_lp, 2, y.unsqueeze(1).expand(B, am.shape[1], U1))
        am_blank = am_lp[..., 0:1]
        w = 1.0 - lm_only_scale - am_only_scale
        emit = w * emit + lm_only_scale * lm_emit + am_only_scale * am_emit
        blank = w * blank + lm_only_scale * lm_blank + am_only_scale * am_blank
    return blank, emit


def prune_ranges(occupancy: Tensor, frames: Tensor, labels: Tensor, s_range: int) -> Tensor:
    """Band starts (B, T) from node occupancy (B, T, U+1).

    Per frame, the window of ``s_range`` label positions with the largest mass, then
    constrained so that a path exists: frame 0 starts at label 0, the last frame's
    band holds label U, starts never decrease and never jump by more than
    ``s_range - 1`` (so consecutive bands connect). If the occupancy asks for a
    faster advance, the band follows as fast as it can.
    """
    B, T, U1 = occupancy.shape
    S = min(s_range, U1)
    if S == U1:
        return torch.zeros(B, T, dtype=torch.long, device=occupancy.device)
    csum = torch.nn.functional.pad(occupancy.cumsum(-1), (1, 0))
    window = csum[..., S:] - csum[..., :-S]  # (B, T, U+2-S): mass of [s, s+S)
    want = window.argmax(-1)
    t = torch.arange(T, device=want.device).unsqueeze(0)  # (1, T)
    t_last = (frames - 1).unsqueeze(1)  # (B, 1)
    max_start = (labels + 1 - S).clamp(min=0).unsqueeze(1)  # (B, 1)
    # reachable from (0, 0) and still able to reach (T-1, U) with steps <= S - 1
    hi = torch.minimum(t * (S - 1), max_start)
    lo = (max_start - (t_last - t).clamp(min=0) * (S - 1)).clamp(min=0)
    want = torch.maximum(torch.minimum(want, hi), lo)
    want = torch.cummax(want, dim=1).values  # stays within [lo, hi]: both are non-decreasing
    starts = want.clone()
    for i in range(1, T):  # limit each jump; stays >= lo because lo grows by at most S - 1
        starts[:, i] = torch.minimum(want[:, i], starts[:, i - 1] + (S - 1))
    return torch.where(t > t_last, max_start.expand(B, T), starts)


def simple_loss_and_ranges(am: Tensor, lm: Tensor, targets: Tensor, frames: Tensor, labels: Tensor,
                           prune_range: int, lm_only_scale: float = 0.25, am_only_scale: float = 0.0,
                           reduction: str = "sum") -> tuple[Tensor, Tensor]:
    """Return (simple loss, band starts (B, T)) for the pruned loss."""
    blank, emit = simple_lattice(am.float(), lm.float(), targets, lm_only_scale, am_only_scale)
    B, T, U1 = blank.shape
    starts0 = torch.zeros(B, T, dtype=torch.long, device=am.device)
    ll = band_log_likelihood(blank, emit, starts0, frames, labels)
    loss = _reduce(-ll.to(am.dtype), reduction)
    with torch.no_grad():
        # occupancy of each node = posterior of the arcs leaving it
        bd = blank.detach().requires_grad_(True)
        ed = emit.detach().requires_grad_(True)
        with torch.enable_grad():
            ll2 = band_log_likelihood(bd, ed, starts0, frames, labels).sum()
            gb, ge = torch.autograd.grad(ll2, [bd, ed])
        ge = ge.clone()
        ge[:, :, -1] = 0.0
        starts = prune_ranges((gb + ge).float(), frames, labels, prune_range)
    return loss, starts


def band_indices(starts: Tensor, s_range: int, labels_max: int) -> Tensor:
    """(B, T, S) label positions of the band, clamped into [0, U]."""
    k = torch.arange(s_range, device=starts.device)
    return (starts.unsqueeze(-1) + k).clamp(max=labels_max)


def pruned_loss(logits: Tensor, targets: Tensor, starts: Tensor, frames: Tensor, labels: Tensor,
                reduction: str = "sum") -> Tensor:
    """RNN-T loss on joiner logits of the band only: logits (B, T, S, V) at positions
    ``starts + k``; targets (B, U)."""
    B, T, S, V = logits.shape
    logp = logits.float().log_softmax(-1)
    blank = logp[..., 0]
    U = targets.shape[1]
    y = torch.cat([targets, targets.new_zeros(B, 1)], dim=1)  # (B, U+1)
    pos = starts.unsqueeze(-1) + torch.arange(S, device=logits.device)  # (B, T, S), may exceed U
    pos_c = pos.clamp(max=U)
    yk = torch.gather(y.unsqueeze(1).expand(B, T, U + 1), 2, pos_c)  # label u+1 at each node
    emit = torch.gather(logp, 3, yk.unsqueeze(-1)).squeeze(-1)
    valid_emit = pos < labels.view(B, 1, 1)  # no emission from u >= U_b
    emit = torch.where(valid_emit, emit, torch.full_like(emit, -1e4))
    valid_node = pos <= labels.view(B, 1, 1)
    blank = torch.where(valid_node, blank, torch.full_like(blank, -1e4))
    ll = band_log_likelihood(blank, emit, starts, frames, labels)
    return _reduce(-ll.to(logits.dtype), reduction)
