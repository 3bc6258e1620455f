"""Speaker verification scoring: cosine scores (with mean subtraction), adaptive score
normalisation (AS-norm), EER and minDCF computed by sorting, trial lists in the VoxCeleb and
Kaldi forms.

Conventions: ``scores`` (N,) higher = more likely the same speaker; ``labels`` (N,) 1 for target
trials (same speaker), 0 for non-target.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from auden_kit.errors import UserError


def _error_curves(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Miss and false-alarm rates for thresholds between consecutive sorted scores.

    Returns (thresholds, p_miss, p_fa); entry i is for accepting every trial whose score is >=
    thresholds[i] (the first entry accepts nothing, the last everything).
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    if scores.shape != labels.shape or scores.ndim != 1:
        raise UserError(f"scores and labels must be 1-D of the same length, got {scores.shape} and {labels.shape}")
    n_tar, n_non = int(labels.sum()), int((~labels).sum())
    if n_tar == 0 or n_non == 0:
        raise UserError(f"the trials hold {n_tar} target and {n_non} non-target trials; EER needs both")
    order = np.argsort(-scores, kind="mergesort")
    s, lab = scores[order], labels[order]
    # accept the top k for k = 0..N, counted only where the score changes (ties move together)
    tar_acc = np.concatenate([[0], np.cumsum(lab)])
    non_acc = np.concatenate([[0], np.cumsum(~lab)])
    keep = np.concatenate([[True], s[1:] != s[:-1], [True]])
    thresholds = np.concatenate([[np.inf], s])[keep]
    p_miss = 1.0 - tar_acc[keep] / n_tar
    p_fa = non_acc[keep] / n_non
    return thresholds, p_miss, p_fa


def eer(scores: Sequence[float], labels: Sequence[int]) -> tuple[float, float]:
    """Equal error rate (as a fraction) and the threshold where miss and false-alarm rates cross
    (linear interpolation between the two operating points around the crossing)."""
    thr, p_miss, p_fa = _error_curves(np.asarray(scores), np.asarray(labels))
    d = p_miss - p_fa  # decreases from 1 to -1 as more trials are accepted
    i = int(np.argmax(d <= 0))  # first point where misses no longer exceed false alarms
    if i == 0:
        return float(p_fa[0]), float(thr[0])
    d0, d1 = d[i - 1], d[i]
    w = d0 / (d0 - d1) if d0 != d1 else 0.0
    rate = p_fa[i - 1] + w * (p_fa[i] - p_fa[i - 1])
    t_hi, t_lo = thr[i - 1], thr[i]
    threshold = t_lo if not np.isfinite(t_hi) else t_hi + w * (t_lo - t_hi)
    return float(rate), float(threshold)


def min_dcf(scores: Sequence[float], labels: Sequence[int], p_target: float = 0.01, c_miss: float = 1.0,
            c_fa: float = 1.0) -> tuple[float, float]:
    """Normalised minimum detection cost (NIST SRE / VoxCeleb) and its threshold:
    min over thresholds of (c_miss p_miss p_target + c_fa p_fa (1 - p_target)) / min(c_miss p_target,
    c_fa (1 - p_target))."""
    thr, p_miss, p_fa = _error_curves(np.asarray(scores), np.asarray(labels))
    cost = c_miss * p_miss * p_target + c_fa * p_fa * (1 - p_target)
    i = int(np.argmin(cost))
    return float(cost[i] / min(c_miss * p_target, c_fa * (1 - p_target))), float(thr[i])


def normalize_embeddings(x: np.ndarray, mean: np.ndarray | None = None) -> np.ndarray:
    """Subtract ``mean`` (e.g. of the training or cohort embeddings), then L2-normalise rows."""
    x = np.asarray(x, dtype=np.float64)
    if mean is not None:
        x = x - mean
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def cosine_scores(a: np.ndarray, b: np.ndarray, mean: np.ndarray | None = None) -> np.ndarray:
    """Row-wise cosine similarity of embeddings a (N, D) and b (N, D) after mean subtraction."""
    return np.sum(normalize_embeddings(a, mean) * normalize_embeddings(b, mean), axis=-1)


def as_norm(scores: np.ndarray, a: np.ndarray, b: np.ndarray, cohort: np.ndarray, top_n: int = 300,
            mean: np.ndarray | None = None) -> np.ndarray:
    """Adaptive symmetric score normalisation: each side's score against the cohort, keeping its
    ``top_n`` highest, gives a mean and deviation; the trial score is the average of the two
    z-normalised scores."""
    ca = normalize_embeddings(cohort, mean)
    top_n = max(1, min(top_n, ca.shape[0]))

    def stats(x):
        s = normalize_embeddings(x, mean) @ ca.T  # (N, C)
        top = np.partition(s, s.shape[1] - top_n, axis=1)[:, -top_n:]
        return top.mean(1), np.maximum(top.std(1), 1e-9)

    ma, sa = stats(a)
    mb, sb = stats(b)
    scores = np.asarray(scores, dtype=np.float64)
    return 0.5 * ((scores - ma) / sa + (scores - mb) / sb)


def read_trials(path: str | Path) -> list[tuple[str, str, int]]:
    """Trial list as (enrol, test, 1 = target / 0 = non-target). Accepted lines:
    ``1 a.wav b.wav`` (VoxCeleb) or ``a b target|nontarget`` (Kaldi)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"trial list '{path}' does not exist")
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 3:
            raise UserError(f"'{path}' line {n}: expected '1 enrol test' or 'enrol test target', got '{line}'")
        if parts[0] in ("0", "1"):
            out.append((parts[1], parts[2], int(parts[0])))
        elif parts[2] in ("target", "nontarget"):
            out.append((parts[0], parts[1], int(parts[2] == "target")))
        else:
            raise UserError(f"'{path}' line {n}: the label must be 0/1 first or target/nontarget last, got '{line}'")
    if not out:
        raise UserError(f"trial list '{path}' holds no trials")
    return out


def make_trials(speakers: dict[str, str], max_trials: int = 200_000, seed: int = 0) -> list[tuple[str, str, int]]:
    """A trial list over utterances ``{utt_id: speaker}``: every pair when there are at most
    ``max_trials`` of them, else up to ``max_trials // 2`` target pairs and as many random
    non-target pairs (seeded). Sorted as (enrol, test, label)."""
    import itertools
    import random

    ids = sorted(speakers)
    n_pairs = len(ids) * (len(ids) - 1) // 2
    if n_pairs <= max_trials:
        return [(a, b, int(speakers[a] == speakers[b])) for a, b in itertools.combinations(ids, 2)]
    rng = random.Random(seed)
    by_spk: dict[str, list[str]] = {}
    for u in ids:
        by_spk.setdefault(speakers[u], []).append(u)
    targets = [(a, b) for us in by_spk.values() for a, b in itertools.combinations(us, 2)]
    if len(targets) > max_trials // 2:
        targets = rng.sample(targets, max_trials // 2)
    nontargets: set[tuple[str, str]] = set()
    want = min(len(targets) or max_trials // 2, n_pairs - len(targets))
    while len(nontargets) < want:
        a, b = rng.sample(ids, 2)
        if speakers[a] != speakers[b]:
            nontargets.add((min(a, b), max(a, b)))
    return sorted([(a, b, 1) for a, b in targets] + [(a, b, 0) for a, b in nontargets])


def utterance_id(cut) -> str:
    """The id a trial list names a cut by: its supervision's id when it has exactly one (the
    utterance id of Kaldi, VoxCeleb and folder corpora; cut ids may carry a channel suffix),
    else the cut id."""
    return cut.supervisions[0].id if len(cut.supervisions) == 1 else cut.id
