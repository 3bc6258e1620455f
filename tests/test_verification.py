"""Verification metrics against scikit-learn's ROC (sklearn is a test extra only) and by hand."""

import time

import numpy as np
import pytest

from auden_kit.errors import UserError
from auden_kit.metrics.verification import as_norm, cosine_scores, eer, min_dcf, read_trials


def _sklearn_eer_mindcf(scores, labels, p_target):
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(labels, scores)
    fnr = 1 - tpr
    i = np.nanargmin(np.abs(fnr - fpr))
    cost = (fnr * p_target + fpr * (1 - p_target)) / min(p_target, 1 - p_target)
    return (fnr[i] + fpr[i]) / 2, cost.min()


@pytest.mark.parametrize("seed,n,sep", [(0, 2000, 1.0), (1, 20000, 2.5), (2, 500, 0.3)])
def test_eer_and_min_dcf_match_sklearn(seed, n, sep):
    rng = np.random.RandomState(seed)
    labels = rng.rand(n) < 0.3
    scores = rng.randn(n) + sep * labels
    ours_eer, thr = eer(scores, labels)
    ref_eer, _ = _sklearn_eer_mindcf(scores, labels, 0.01)
    assert abs(ours_eer - ref_eer) < 2.0 / min(labels.sum(), (~labels).sum())  # within one trial of a side
    for p in (0.01, 0.05):
        ours, _ = min_dcf(scores, labels, p_target=p)
        _, ref = _sklearn_eer_mindcf(scores, labels, p)
        assert abs(ours - ref) < 1e-9
    # at the EER threshold, both error rates are close to the EER
    p_miss = np.mean(scores[labels] < thr)
    p_fa = np.mean(scores[~labels] >= thr)
    assert abs(p_miss - ours_eer) < 0.02 and abs(p_fa - ours_eer) < 0.02


def test_hand_made_cases():
    assert eer([0.9, 0.8, 0.1, 0.2], [1, 1, 0, 0])[0] == 0.0
    assert eer([0.1, 0.2, 0.9, 0.8], [1, 1, 0, 0])[0] == 1.0
    # one target below one non-target out of 2 + 2: miss 1/2 where fa 0, or miss 0 where fa 1/2
    e, _ = eer([0.9, 0.5, 0.6, 0.1], [1, 1, 0, 0])
    assert abs(e - 0.5) < 1e-12
    assert min_dcf([0.9, 0.8, 0.1, 0.2], [1, 1, 0, 0])[0] == 0.0
    # ties move together: equal scores cannot separate
    assert eer([0.5, 0.5, 0.5, 0.5], [1, 0, 1, 0])[0] == 0.5
    with pytest.raises(UserError, match="needs both"):
        eer([0.1, 0.2], [1, 1])


def test_a_million_trials_by_sorting():
    rng = np.random.RandomState(0)
    labels = rng.rand(1_000_000) < 0.5
    scores = rng.randn(1_000_000) + 2 * labels
    t0 = time.time()
    e, _ = eer(scores, labels)
    print(f"EER of 1,000,000 trials: {e:.4f} in {time.time() - t0:.2f} s")
    assert abs(e - 0.1587) < 0.003  # two unit Gaussians 2 apart cross at 1: Phi(-1) = 0.1587


def test_cosine_mean_subtraction_and_as_norm():
    rng = np.random.RandomState(0)
    a, b = rng.randn(5, 8), rng.randn(5, 8)
    mean = rng.randn(8)
    s = cosine_scores(a, b, mean)
    ref = [np.dot(x - mean, y - mean) / np.linalg.norm(x - mean) / np.linalg.norm(y - mean) for x, y in zip(a, b)]
    assert np.allclose(s, ref)
    cohort = rng.randn(50, 8)
    n = as_norm(s, a, b, cohort, top_n=10)
    ca = cohort / np.linalg.norm(cohort, axis=1, keepdims=True)
    sa = np.sort((a[0] / np.linalg.norm(a[0])) @ ca.T)[-10:]
    sb = np.sort((b[0] / np.linalg.norm(b[0])) @ ca.T)[-10:]
    expect = 0.5 * ((s[0] - sa.mean()) / sa.std() + (s[0] - sb.mean()) / sb.std())
    assert np.isclose(n[0], expect)


def test_trial_lists_both_forms(tmp_path):
    (tmp_path / "vox.txt").write_text("1 id1/a.wav id1/b.wav\n0 id1/a.wav id2/c.wav\n")
    (tmp_path / "kaldi.txt").write_text("a b target\na c nontarget\n")
    assert read_trials(tmp_path / "vox.txt") == [("id1/a.wav", "id1/b.wav", 1), ("id1/a.wav", "id2/c.wav", 0)]
    assert read_trials(tmp_path / "kaldi.txt") == [("a", "b", 1), ("a", "c", 0)]
    (tmp_path / "bad.txt").write_text("a b maybe\n")
    with pytest.raises(UserError, match="bad.txt' line 1"):
        read_trials(tmp_path / "bad.txt")
