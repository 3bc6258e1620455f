"""Agglomerative clustering of voice embeddings: the cascade's speaker clustering and the
linking of a long recording's per-window speakers are one algorithm.

Average linkage on cosine similarity: the two clusters whose members are most similar on average
merge, while that average is at least ``threshold`` (or until ``num_speakers`` clusters remain).
``groups`` adds cannot-link constraints: two clusters that hold rows of one group never merge (the
speakers one window's decoder told apart stay apart). Every row is compared with every other, so a
speaker who comes back much later is found again and no early mistake is carried forward.
Without constraints the result is scipy's ``linkage(method="average", metric="cosine")`` cut at
distance ``1 - threshold`` (a test checks), without needing scipy. O(n^2) memory, O(n^3) time: a
few hundred rows (windows of a recording, speakers of its windows) take milliseconds.
"""

from __future__ import annotations

import numpy as np


def agglomerate(emb: np.ndarray, threshold: float, groups=None, num_speakers: int = 0) -> list[int]:
    """Cluster labels 0..K-1, numbered by first appearance, of the rows of ``emb`` (any scale;
    they are L2-normalised here). ``threshold``: the least average cosine similarity at which two
    clusters merge; ``num_speakers`` > 0: merge until that many clusters remain instead (never past
    a cannot-link constraint); ``groups``: one group id per row, rows of one group never share a
    cluster."""
    n = len(emb)
    if n == 0:
        return []
    x = np.asarray(emb, dtype=np.float64)
    x = x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-9)
    total = x @ x.T  # summed pairwise similarity between clusters
    size = np.ones(n)
    g = np.arange(n) if groups is None else np.asarray(groups)
    apart = g[:, None] == g[None, :]  # clusters that may not merge (the diagonal: a cluster and itself)
    alive = np.ones(n, dtype=bool)
    member = np.arange(n)
    clusters = n
    while clusters > max(num_speakers, 1):
        avg = total / np.outer(size, size)
        avg[apart | ~alive[:, None] | ~alive[None, :]] = -np.inf
        i, j = np.unravel_index(int(np.argmax(avg)), avg.shape)
        if not np.isfinite(avg[i, j]) or (not num_speakers and avg[i, j] < threshold):
            break
        total[i] += total[j]
        total[:, i] += total[:, j]
        size[i] += size[j]
        apart[i] |= apart[j]
        apart[:, i] |= apart[:, j]
        alive[j] = False
        member[member == j] = i
        clusters -= 1
    order: dict[int, int] = {}
    return [order.setdefault(int(m), len(order)) for m in member]
