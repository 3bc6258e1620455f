"""Pruned RNN-T loss in pure PyTorch (the k2 recipe, without k2).

1. **Simple loss**: a trivial joiner ``am[t] + lm[u]`` whose log-softmax over the
   vocabulary is cheap (one batched matmul). Its arc posteriors tell, for each
   frame, where on the label axis the probability mass is.
2. **Prune ranges**: per frame, the ``prune_range`` consecutive label positions
   holding most of that mass, made monotone and connected so a path exists.
3. **Pruned loss**: the real joiner evaluated only on that band, (B, T, S, V)
   instead of (B, T, U+1, V).

The lattice recursions run frame by frame over a band of label positions (the whole
lattice is a band of width U+1 starting at 0); within a frame the label-axis recursion is a
log-cumsum, so each frame is a handful of vectorized ops. The gradient is not taken by autograd
through that loop: one forward (alpha) and one backward (beta) recursion give the log-likelihood
and its exact gradient, the arc posteriors, at once. That is 2 passes of ~5 small ops per frame
where autograd replayed ~15 per frame, and the simple loss's posteriors, which choose the pruning
band, come with its loss instead of from a second pass. On a GPU, where each small op costs a
kernel launch, this is what the loss's time is made of.

Shape legend: B batch, T frames, U labels, S band width, V vocabulary.
"""

from __future__ import annotations

import torch
from torch import Tensor

NEG = -1.0e30  # "log 0" that keeps arithmetic finite (no inf - inf)


def _exclusive_cumsum(x: Tensor) -> Tensor:
    return torch.cumsum(x, dim=-1) - x


def _time_major(x: Tensor, pad: float | None = None) -> Tensor:
    """(B, T, S) -> contiguous (T, B, S) (one frame is one contiguous slice), optionally with a
    column of ``pad`` appended: gathers send positions outside a band there."""
    if pad is not None:
        x = torch.nn.functional.pad(x, (0, 1), value=pad)
    return x.transpose(0, 1).contiguous()


def _next_band(starts: Tensor, S: int, keep: Tensor | None = None) -> Tensor | None:
    """Frame t+1's position k + shift for position k of frame t (B, T-1, S), or S (the padding
    column) where that is outside the band or ``keep`` is False; None when no band moves."""
    shift = (starts[:, 1:] - starts[:, :-1]).unsqueeze(-1)  # (B, T-1, 1)
    if not bool((shift != 0).any()):
        return None
    idx = torch.arange(S, device=starts.device) + shift
    ok = idx < S if keep is None else (idx < S) & keep
    return torch.where(ok, idx, S)


def _forward(blank: Tensor, emit: Tensor, starts: Tensor, frames: Tensor, labels: Tensor):
    """The forward pass in float64: (blank, emit, c (exclusive cumsum of emit), alpha, ll, and the
    final node of each sequence: batch index, last frame, band position of label U)."""
    blank, emit = blank.to(torch.float64), emit.to(torch.float64)
    c = _exclusive_cumsum(emit)
    alpha = _lattice_alpha(blank, c, starts)
    b = torch.arange(starts.shape[0], device=starts.device)
    t_last = frames - 1
    k_last = labels - starts[b, t_last]
    return blank, emit, c, alpha, alpha[b, t_last, k_last] + blank[b, t_last, k_last], (b, t_last, k_last)


def _lattice_alpha(blank: Tensor, c: Tensor, starts: Tensor) -> Tensor:
    """Forward variables (B, T, S), float64: log-prob of reaching node (t, starts[:, t] + k);
    ``c``: the exclusive cumsum of the emit log-probs along the band.

    The loop keeps A = alpha - c (c: exclusive cumsum of emit along the band), for which a frame
    is A(t) = logcumsumexp(band(t-1 -> t)(A(t-1) + c(t-1) + blank(t-1)) - c(t)): 2 ops per frame
    when no band moves (the full lattice), 4 when one does."""
    B, T, S = blank.shape
    A = blank.new_zeros(T, B, S + 1)  # column S: padding (0 + the NEG of X's padding column)
    init = torch.full((B, S), NEG, dtype=blank.dtype, device=blank.device)
    init[:, 0] = 0.0
    torch.logcumsumexp(init - c[:, 0], 1, out=A[0, :, :S])
    idx = _next_band(starts, S)  # position k of frame t comes from position idx[:, t-1, k] of frame t-1
    if idx is None:
        W = _time_major(blank[:, :-1] + c[:, :-1] - c[:, 1:])
        for t in range(1, T):
            torch.logcumsumexp(A[t - 1, :, :S] + W[t - 1], 1, out=A[t, :, :S])
    else:
        X, idx, neg_c = _time_major(blank[:, :-1] + c[:, :-1], NEG), _time_major(idx), _time_major(-c[:, 1:])
        for t in range(1, T):
            torch.logcumsumexp(torch.gather(A[t - 1] + X[t - 1], 1, idx[t - 1]) + neg_c[t - 1], 1,
                               out=A[t, :, :S])
    return A[:, :, :S].transpose(0, 1) + c


class _BandLikelihood(torch.autograd.Function):
    """log P(y | x) over a band, and its gradient from the forward-backward recursions."""

    @staticmethod
    def forward(ctx, blank, emit, starts, frames, labels):
        ll, g_blank, g_emit = band_forward_backward(blank.detach(), emit.detach(), starts, frames, labels)
        ctx.save_for_backward(g_blank, g_emit)
        ctx.mark_non_differentiable(g_blank, g_emit)
        return ll, g_blank, g_emit

    @staticmethod
    def backward(ctx, grad_ll, _gb, _ge):
        g_blank, g_emit = ctx.saved_tensors
        g = grad_ll.view(-1, 1, 1)
        return g * g_blank, g * g_emit, None, None, None


def band_forward_backward(blank: Tensor, emit: Tensor, starts: Tensor, frames: Tensor,
                          labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(log-likelihood (B,), d ll / d blank (B, T, S), d ll / d emit (B, T, S)), in float64, no
    autograd. The gradients are the arc posteriors: exp(alpha + arc + beta - ll). Arguments as in
    :func:`band_log_likelihood`.

    beta runs on the label axis reversed (position j = S-1-k): there its within-frame recursion is
    a forward log-cumsum and frame t+1's band is again k + shift away. The loop keeps
    Bt = beta + c (reversed) and Z = (blank + beta(t+1) or the final blank) + c, the terms of the
    log-cumsum: Bt(t) = logcumsumexp(Z(t))."""
    B, T, S = blank.shape
    dev = blank.device
    blank, emit, c, alpha, ll, (b, t_last, k_last) = _forward(blank, emit, starts, frames, labels)
    c_r = c.flip(-1)
    t = torch.arange(T, device=dev)
    goes_on = (t[:-1].view(1, -1, 1) < t_last.view(-1, 1, 1)).expand(B, T - 1, S)  # an arc to frame t+1
    end = torch.full((B, T, S), NEG, dtype=torch.float64, device=dev)  # the final blank, reversed, + c
    end[b, t_last, S - 1 - k_last] = blank[b, t_last, k_last] + c_r[b, t_last, S - 1 - k_last]
    E = _time_major(end)
    Q = blank.flip(-1) + c_r  # Z(t) = gather(Bt(t+1) - c_r(t+1)) + Q(t) where an arc goes on
    Z = torch.empty(T, B, S, dtype=torch.float64, device=dev)
    Bt = blank.new_zeros(T, B, S + 1)
    Z[T - 1] = E[T - 1]
    torch.logcumsumexp(Z[T - 1], 1, out=Bt[T - 1, :, :S])
    idx = _next_band(starts, S, keep=goes_on)
    if idx is None:
        R = _time_major(torch.where(goes_on, Q[:, :-1] - c_r[:, 1:], NEG))
        for t_ in range(T - 2, -1, -1):
            torch.maximum(Bt[t_ + 1, :, :S] + R[t_], E[t_], out=Z[t_])
            torch.logcumsumexp(Z[t_], 1, out=Bt[t_, :, :S])
    else:
        P, idx, Q = _time_major(-c_r[:, 1:], NEG), _time_major(idx), _time_major(Q[:, :-1])
        for t_ in range(T - 2, -1, -1):
            torch.maximum(torch.gather(Bt[t_ + 1] + P[t_], 1, idx[t_]) + Q[t_], E[t_], out=Z[t_])
            torch.logcumsumexp(Z[t_], 1, out=Bt[t_, :, :S])
    beta = (Bt[:, :, :S].transpose(0, 1) - c_r).flip(-1)
    into = (Z.transpose(0, 1) - c_r).flip(-1)  # blank(t, u) + beta(t+1, u), or the final blank
    beta_right = torch.cat([beta[..., 1:], beta.new_full((B, T, 1), NEG)], dim=-1)  # beta(t, u+1) in the band
    llv = ll.view(B, 1, 1)
    g_blank = (alpha + into - llv).exp()
    g_emit = (alpha + emit + beta_right - llv).exp()
    return ll, g_blank, g_emit


def band_log_likelihood(blank: Tensor, emit: Tensor, starts: Tensor, frames: Tensor, labels: Tensor,
                        posteriors: bool = False):
    """log P(y | x) summed over alignments in a band of the RNN-T lattice.

    blank: (B, T, S) log-prob of blank at node (t, starts[b, t] + k);
    emit:  (B, T, S) log-prob of emitting label u+1 at node (t, u = starts + k);
    starts: (B, T) long, non-decreasing, starts[:, 0] == 0;
    frames, labels: (B,) valid T and U of each sequence. Returns (B,) float64, differentiable
    in blank and emit; with ``posteriors`` also the (B, T, S) blank and emit arc posteriors.
    """
    if posteriors or (torch.is_grad_enabled() and (blank.requires_grad or emit.requires_grad)):
        ll, g_blank, g_emit = _BandLikelihood.apply(blank, emit, starts, frames, labels)
        return (ll, g_blank, g_emit) if posteriors else ll
    return _forward(blank, emit, starts, frames, labels)[4]


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
    # limit each jump to S - 1: starts[i] = min(want[i], starts[i-1] + S - 1), i.e. the smallest
    # want[j] + (i - j)(S - 1) over j <= i, one cummin (stays >= lo: lo grows by at most S - 1)
    starts = torch.cummin(want - t * (S - 1), dim=1).values + t * (S - 1)
    return torch.where(t > t_last, max_start.expand(B, T), starts)


def simple_loss_and_ranges(am: Tensor, lm: Tensor, targets: Tensor, frames: Tensor, labels: Tensor,
                           prune_range: int, lm_only_scale: float = 0.25, am_only_scale: float = 0.0,
                           reduction: str = "sum") -> tuple[Tensor, Tensor]:
    """Return (simple loss, band starts (B, T)) for the pruned loss."""
    blank, emit = simple_lattice(am.float(), lm.float(), targets, lm_only_scale, am_only_scale)
    B, T, U1 = blank.shape
    starts0 = torch.zeros(B, T, dtype=torch.long, device=am.device)
    ll, g_blank, g_emit = band_log_likelihood(blank, emit, starts0, frames, labels, posteriors=True)
    loss = _reduce(-ll.to(am.dtype), reduction)
    with torch.no_grad():
        # occupancy of each node = posterior of the arcs leaving it (the last column's "emit" is padding)
        g_emit = g_emit.clone()
        g_emit[:, :, -1] = 0.0
        starts = prune_ranges((g_blank + g_emit).float(), frames, labels, prune_range)
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
