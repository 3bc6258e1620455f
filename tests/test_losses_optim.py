import math

import pytest
import torch
import torchaudio.functional as AF

from auden_kit.losses.rnnt import band_indices, pruned_loss, rnnt_loss_full, simple_loss_and_ranges
from auden_kit.training.optim import Eden, OptimConfig, build_optimizer


def _case(seed=0, B=3, T=24, U=7, V=13):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, T, U + 1, V, generator=g)
    targets = torch.randint(1, V, (B, U), generator=g)
    frames = torch.tensor([T, T - 5, T - 9])
    labels = torch.tensor([U, U - 2, U - 3])
    return logits, targets, frames, labels


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_full_loss_and_grads_equal_torchaudio(reduction):
    logits, targets, frames, labels = _case()
    a = logits.clone().requires_grad_(True)
    b = logits.clone().requires_grad_(True)
    ours = rnnt_loss_full(a, targets, frames, labels, reduction=reduction)
    ref = AF.rnnt_loss(b, targets.int(), frames.int(), labels.int(), blank=0, reduction=reduction)
    ours.backward()
    ref.backward()
    assert torch.allclose(ours, ref, rtol=1e-4)
    assert torch.allclose(a.grad, b.grad, atol=1e-5, rtol=1e-4)


def test_pruned_equals_full_when_band_covers_all_labels():
    logits, targets, frames, labels = _case(1)
    B, T, U1, V = logits.shape
    am, lm = torch.randn(B, T, V), torch.randn(B, U1, V)
    _, starts = simple_loss_and_ranges(am, lm, targets, frames, labels, prune_range=U1)
    a = logits.clone().requires_grad_(True)
    b = logits.clone().requires_grad_(True)
    idx = band_indices(starts, U1, U1 - 1)
    band = torch.gather(a, 2, idx.unsqueeze(-1).expand(B, T, U1, V))
    ours = pruned_loss(band, targets, starts, frames, labels)
    ref = AF.rnnt_loss(b, targets.int(), frames.int(), labels.int(), blank=0, reduction="sum")
    ours.backward()
    ref.backward()
    assert torch.allclose(ours, ref, rtol=1e-4)
    assert torch.allclose(a.grad, b.grad, atol=1e-5, rtol=1e-4)


def test_narrow_band_is_an_upper_bound_with_finite_grads():
    logits, targets, frames, labels = _case(2)
    B, T, U1, V = logits.shape
    am = torch.randn(B, T, V, requires_grad=True)
    lm = torch.randn(B, U1, V, requires_grad=True)
    simple, starts = simple_loss_and_ranges(am, lm, targets, frames, labels, prune_range=3)
    assert (starts[:, 1:] >= starts[:, :-1]).all() and (starts[:, 0] == 0).all()
    assert ((starts[:, 1:] - starts[:, :-1]) <= 2).all()
    a = logits.clone().requires_grad_(True)
    band = torch.gather(a, 2, band_indices(starts, 3, U1 - 1).unsqueeze(-1).expand(B, T, 3, V))
    pruned = pruned_loss(band, targets, starts, frames, labels)
    full = rnnt_loss_full(logits, targets, frames, labels)
    assert pruned >= full - 1e-3 and torch.isfinite(pruned)
    (pruned + simple).backward()
    assert torch.isfinite(a.grad).all() and torch.isfinite(am.grad).all() and torch.isfinite(lm.grad).all()


def test_scaled_adam_reduces_a_loss():
    torch.manual_seed(0)
    X = torch.randn(256, 10)
    y = X @ torch.randn(10, 1)
    m = torch.nn.Sequential(torch.nn.Linear(10, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1))
    opt, sched = build_optimizer(m, OptimConfig(base_lr=0.05, warmup_batches=10, lr_batches=100))
    first = None
    for i in range(200):
        loss = ((m(X) - y) ** 2).mean()
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step_batch(i + 1)
    assert loss.item() < 0.05 * first
    sd = opt.state_dict()
    opt2, _ = build_optimizer(m, OptimConfig())
    opt2.load_state_dict(sd)


def test_eden_formula_at_known_steps():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.04)
    eden = Eden(opt, lr_batches=5000, lr_epochs=6, warmup_batches=500, warmup_start=0.5)
    eden.step_batch(0)
    assert math.isclose(eden.get_last_lr()[0], 0.04 * 0.5)
    eden.step_batch(250)
    assert math.isclose(eden.get_last_lr()[0], 0.04 * ((250 ** 2 + 5000 ** 2) / 5000 ** 2) ** -0.25 * 0.75)
    eden.step_epoch(3)
    eden.step_batch(10000)
    expect = 0.04 * ((10000 ** 2 + 5000 ** 2) / 5000 ** 2) ** -0.25 * ((9 + 36) / 36) ** -0.25
    assert math.isclose(eden.get_last_lr()[0], expect)


def test_prune_ranges_start_at_zero_even_when_the_simple_model_rushes():
    """A simple model that puts all labels on the first frames must not make the band skip
    labels: the pruned loss stays an upper bound of the full loss."""
    torch.manual_seed(0)
    B, T, U, V = 1, 40, 17, 30
    targets = torch.randint(1, V, (B, U))
    frames, labels = torch.tensor([T]), torch.tensor([U])
    am = torch.zeros(B, T, V)
    am[0, 0, :] += 5.0  # every label "wants" frame 0
    am[0, 1:, 0] += 5.0
    lm = torch.zeros(B, U + 1, V)
    lm[0, torch.arange(U), targets[0]] += 8.0
    _, starts = simple_loss_and_ranges(am, lm, targets, frames, labels, prune_range=5)
    assert starts[0, 0] == 0 and starts[0, -1] == U + 1 - 5
    assert ((starts[:, 1:] - starts[:, :-1]) <= 4).all() and ((starts[:, 1:] - starts[:, :-1]) >= 0).all()
    logits = torch.randn(B, T, U + 1, V)
    band = torch.gather(logits, 2, band_indices(starts, 5, U).unsqueeze(-1).expand(B, T, 5, V))
    assert pruned_loss(band, targets, starts, frames, labels) >= rnnt_loss_full(logits, targets, frames, labels) - 1e-3
