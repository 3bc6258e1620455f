#!/usr/bin/env python3
"""Speaker clustering speed: ``auden_kit.clustering.agglomerate`` (average linkage on cosine
similarity: the cascade's clustering of window embeddings, the linking of a long recording's
speakers) on random embeddings around a few centres, as many rows as a recording of some length
gives the cascade (1.5 s windows every 0.75 s: ~4,800 rows an hour of speech). Prints one JSON
line: seconds and clusters per size.

    python bench/clustering.py --rows 1000 2000 4800
"""
import argparse
import json
import time

import numpy as np

from auden_kit.clustering import agglomerate


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, nargs="+", default=[1000, 2000, 4800])
    ap.add_argument("--centres", type=int, default=6, help="speakers")
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--threshold", type=float, default=0.3, help="least average cosine to merge")
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    seconds, clusters = [], []
    for n in a.rows:
        centres = rng.normal(size=(a.centres, a.dim))
        emb = centres[rng.integers(0, a.centres, n)] + rng.normal(size=(n, a.dim))
        t0 = time.perf_counter()
        labels = agglomerate(emb, a.threshold)
        seconds.append(round(time.perf_counter() - t0, 3))
        clusters.append(len(set(labels)))
    print(json.dumps({"bench": "clustering", "rows": a.rows, "seconds": seconds, "clusters": clusters,
                      "centres": a.centres, "dim": a.dim, "threshold": a.threshold}))


if __name__ == "__main__":
    main()
