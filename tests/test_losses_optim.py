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


def test_band_gradient_is_the_finite_difference_one():
    """The forward-backward gradient (no autograd through the recursion) against finite
    differences, on a band that moves, with sequences shorter than the batch in both axes; and
    the arc posteriors returned with the loss are that gradient."""
    from auden_kit.losses.rnnt import band_log_likelihood

    g = torch.Generator().manual_seed(3)
    B, T, S = 3, 9, 3
    blank = torch.randn(B, T, S, generator=g, dtype=torch.float64).log_softmax(-1).requires_grad_(True)
    emit = torch.randn(B, T, S, generator=g, dtype=torch.float64).log_softmax(-1).requires_grad_(True)
    starts = torch.tensor([[0, 0, 1, 1, 2, 2, 3, 4, 4], [0, 1, 1, 1, 2, 2, 2, 2, 2], [0, 0, 0, 1, 1, 1, 1, 1, 1]])
    frames, labels = torch.tensor([9, 7, 5]), torch.tensor([5, 3, 2])
    w = torch.tensor([1.0, -0.5, 2.0], dtype=torch.float64)  # a different weight per sequence
    assert torch.autograd.gradcheck(lambda b, e: band_log_likelihood(b, e, starts, frames, labels) * w,
                                    (blank, emit))
    ll, post_blank, post_emit = band_log_likelihood(blank, emit, starts, frames, labels, posteriors=True)
    gb, ge = torch.autograd.grad(ll.sum(), [blank, emit])
    assert torch.allclose(post_blank, gb) and torch.allclose(post_emit, ge)
    # every path ends in one final blank and passes each frame once: the blank posteriors of a
    # sequence sum to its frame count, the emit posteriors to its label count
    assert torch.allclose(post_blank.sum((1, 2)), frames.double()) and torch.allclose(post_emit.sum((1, 2)),
                                                                                       labels.double())
    with torch.no_grad():  # the forward pass alone gives the same value
        assert torch.allclose(band_log_likelihood(blank, emit, starts, frames, labels), ll)


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
    # a restored optimizer takes the same next step as the original (moments, scales, clipping history)
    import copy

    sd = copy.deepcopy(opt.state_dict())
    m2 = copy.deepcopy(m)
    opt2, _ = build_optimizer(m2, OptimConfig(base_lr=0.05, warmup_batches=10, lr_batches=100))
    opt2.load_state_dict(sd)
    for model, o in ((m, opt), (m2, opt2)):
        o.zero_grad()
        ((model(X) - y) ** 2).mean().backward()
        o.step()
    assert all(torch.equal(a, b) for a, b in zip(m.parameters(), m2.parameters()))
    assert opt2.state_dict()["clipping"] == opt.state_dict()["clipping"]


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


def test_checkpoint_averaging_maths():
    """average_between recovers the mean of the weights over the steps between two running averages,
    and average_state_dicts is the plain mean (integers taken from the last)."""
    from auden_kit.training.checkpoint import average_between, average_state_dicts, update_running_average

    torch.manual_seed(0)
    m = torch.nn.Linear(3, 2)
    avg = {k: v.clone() for k, v in m.state_dict().items()}
    snaps = {}
    history = []
    for step in range(1, 13):
        with torch.no_grad():
            m.weight.add_(torch.randn_like(m.weight))
        history.append(m.weight.detach().clone())
        update_running_average(avg, m, step, 1)
        snaps[step] = {"step": step, "model_avg": {k: v.clone() for k, v in avg.items()}}
    assert torch.allclose(snaps[12]["model_avg"]["weight"], torch.stack(history).mean(0), atol=1e-6)
    between = average_between(snaps[4], snaps[12])
    assert torch.allclose(between["weight"], torch.stack(history[4:]).mean(0), atol=1e-5)
    a = {"w": torch.tensor([1.0, 3.0]), "n": torch.tensor(1)}
    b = {"w": torch.tensor([3.0, 5.0]), "n": torch.tensor(7)}
    out = average_state_dicts([a, b])
    assert torch.equal(out["w"], torch.tensor([2.0, 4.0])) and int(out["n"]) == 7


def test_wer_arithmetic_against_kaldialign_and_by_hand():
    import kaldialign

    from auden_kit.metrics.wer import compute_wer

    st = compute_wer([("a", "the cat sat on the mat", "the cat sit on mat"), ("b", "hello", "hello there")])
    assert (st.subs, st.dels, st.ins, st.ref_words) == (1, 1, 1, 7)
    assert abs(st.wer - 100 * 3 / 7) < 1e-9 and st.sentence_errors == 2
    import random

    rng = random.Random(0)
    words = "a b c d e f".split()
    for _ in range(50):
        ref = [rng.choice(words) for _ in range(rng.randint(1, 12))]
        hyp = [rng.choice(words) for _ in range(rng.randint(0, 12))]
        ours = compute_wer([("x", " ".join(ref), " ".join(hyp))])
        ref_st = kaldialign.edit_distance(ref, hyp)
        assert ours.errors == ref_st["total"] and ours.ins == ref_st["ins"] and ours.dels == ref_st["del"]


def test_lr_scale_groups_parameters_by_name():
    from auden_kit.errors import UserError

    m = torch.nn.ModuleDict({"encoder": torch.nn.Linear(4, 4), "head": torch.nn.Linear(4, 2)})
    cfg = OptimConfig(base_lr=0.04, warmup_batches=0, lr_scale={"encoder.*": 0.25})
    cfg.validate()
    opt, sched = build_optimizer(m, cfg)
    lrs = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    assert lrs[id(m["encoder"].weight)] == pytest.approx(0.01) and lrs[id(m["head"].bias)] == pytest.approx(0.04)
    sched.step_batch(1000)  # the schedule scales every group by the same factor
    enc, head = (g["lr"] for g in opt.param_groups)
    assert enc / head == pytest.approx(0.25)
    with pytest.raises(UserError, match="optim.lr_scale"):
        build_optimizer(m, OptimConfig(lr_scale={"decoder.*": 0.5}))
    with pytest.raises(UserError, match="optim.lr_scale.encoder"):
        OptimConfig(lr_scale={"encoder.*": 0}).validate()
