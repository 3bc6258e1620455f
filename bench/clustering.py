#!/usr/bin/env python3
"""Speaker clustering speed and memory: ``auden_kit.clustering.agglomerate`` (average linkage on
cosine similarity: the cascade's clustering of window embeddings, the linking of a long
recording's speakers) on all rows at once, and the cascade's ``cluster_windows`` (the same at up
to ``CLUSTER_ROWS`` rows; more are clustered in stages, in bounded memory), on random embeddings
around a few centres: as many rows as a recording of some length gives the cascade (1.5 s
windows every 0.75 s: ~4,800 rows an hour of speech). Prints one JSON line: per size, seconds,
peak memory (tracemalloc: numpy's arrays included), clusters, and how many rows the staged
labels share with the all-at-once labels (under the best match of clusters).

    python bench/clustering.py --rows 1000 2000 4800 9600 19200
"""
import argparse
import json
import time
import tracemalloc

import numpy as np

from auden_kit.cascade import CLUSTER_ROWS, cluster_windows
from auden_kit.clustering import agglomerate


def measured(fn):
    tracemalloc.start()
    t0 = time.perf_counter()
    out = np.asarray(fn())
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return out, round(seconds, 3), round(peak / 2**20, 1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, nargs="+", default=[1000, 2000, 4800, 9600])
    ap.add_argument("--centres", type=int, default=6, help="speakers")
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--threshold", type=float, default=0.3, help="least average cosine to merge")
    ap.add_argument("--at-once-max", type=int, default=10000,
                    help="larger sizes skip clustering all rows at once (17 bytes per pair of rows)")
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    for n in a.rows:
        centres = rng.normal(size=(a.centres, a.dim))
        who = np.repeat(rng.integers(0, a.centres, n), 8)[:n]  # turns of 8 windows
        emb = centres[who] + rng.normal(size=(n, a.dim))
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        row = {"rows": n}
        staged, row["staged_s"], row["staged_mb"] = measured(lambda: cluster_windows(emb, 1 - a.threshold))
        row["staged_clusters"] = len(set(staged.tolist()))
        if n <= a.at_once_max:
            once, row["at_once_s"], row["at_once_mb"] = measured(lambda: agglomerate(emb, a.threshold))
            row["at_once_clusters"] = len(set(once.tolist()))
            row["same_rows"] = int(sum(np.bincount(once[staged == k]).max() for k in set(staged.tolist())))
        rows.append(row)
    print(json.dumps({"bench": "clustering", "cluster_rows": CLUSTER_ROWS, "centres": a.centres, "dim": a.dim,
                      "threshold": a.threshold, "sizes": rows}))


if __name__ == "__main__":
    main()
