"""Voice-encoder building blocks: AAM-softmax (ArcFace) and utterance poolings."""

import math

import torch

from auden_kit.heads.pooling import build_pooling
from auden_kit.losses.margin import AAMSoftmax, margin_schedule


def test_aam_softmax_adds_the_angular_margin_to_the_target_only():
    torch.manual_seed(0)
    head = AAMSoftmax(8, 5, scale=30.0, margin=0.2)
    emb = torch.randn(4, 8)
    y = torch.tensor([0, 3, -100, 1])
    cos = head.cosine(emb)
    logits = head(emb, y)
    theta = torch.acos(cos.clamp(-1, 1))
    for i, lab in enumerate(y.tolist()):
        for j in range(5):
            if j == lab:
                t = theta[i, j]
                expect = math.cos(t + 0.2) if t + 0.2 < math.pi else cos[i, j] - math.sin(math.pi - 0.2) * 0.2
                assert math.isclose(float(logits[i, j]), 30.0 * float(expect), rel_tol=1e-4, abs_tol=1e-4)
            else:
                assert torch.isclose(logits[i, j], 30.0 * cos[i, j])
    head.margin = 0.0
    assert torch.allclose(head(emb, y), 30.0 * cos)


def test_aam_sub_centres_and_learning():
    torch.manual_seed(0)
    head = AAMSoftmax(8, 3, scale=16.0, margin=0.1, sub_centers=2)
    assert head.weight.shape == (6, 8) and head.cosine(torch.randn(2, 8)).shape == (2, 3)
    centres = torch.randn(3, 8) * 3
    y = torch.randint(0, 3, (96,))
    x = centres[y] + torch.randn(96, 8)
    opt = torch.optim.Adam(head.parameters(), lr=0.05)
    losses = []
    for _ in range(60):
        loss = torch.nn.functional.cross_entropy(head(x, y), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < 0.3 * losses[0]
    assert (head.cosine(x).argmax(-1) == y).float().mean() > 0.95


def test_margin_schedule():
    assert margin_schedule(0, 0.2, 100, 300) == 0.0
    assert math.isclose(margin_schedule(200, 0.2, 100, 300), 0.1)
    assert margin_schedule(1000, 0.2, 100, 300) == 0.2


def test_poolings_ignore_padding():
    torch.manual_seed(0)
    x = torch.randn(2, 30, 16)
    lens = torch.tensor([30, 18])
    for name in ("mean", "mean_std", "attentive_stats"):
        pool = build_pooling(name, 16)
        out = pool(x, lens)
        assert out.shape == (2, pool.output_dim(16))
        alone = pool(x[1:, :18], torch.tensor([18]))
        assert torch.allclose(out[1], alone[0], atol=1e-5), name
        garbage = x.clone()
        garbage[1, 18:] = 1e3
        assert torch.allclose(pool(garbage, lens)[1], out[1], atol=1e-4), name
