#!/usr/bin/env python3
"""Speaker clustering speed: ``auden_kit.clustering.agglomerate`` (average linkage on cosine
similarity: the cascade's clustering of window embeddings, the linking of a long recording's
speakers) on random embeddings around a few centres, as many rows as a recording of some length
gives the cascade (1.5 s windows every 0.75 s: ~4,800 rows an hour of speech). Prints seconds
and the number of clusters per size.

    python bench/clustering.py --rows 1000 2000 4800
"""
import argparse
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
    print(f"{'rows':>6} {'seconds':>8} {'clusters':>9}")
    for n in a.rows:
        centres = rng.normal(size=(a.centres, a.dim))
        emb = centres[rng.integers(0, a.centres, n)] + rng.normal(size=(n, a.dim))
        t0 = time.perf_counter()
        labels = agglomerate(emb, a.threshold)
        print(f"{n:6d} {time.perf_counter() - t0:8.2f} {len(set(labels)):9d}", flush=True)


if __name__ == "__main__":
    main()
