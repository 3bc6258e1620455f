#!/usr/bin/env python3
"""The model's test metrics (stage 6) beside the gloss baseline (stage 7), checked against the
recipe's goals; printed and written as JSON."""

import argparse
import json
from pathlib import Path

from auden_kit.io import atomic_write_text

GOALS = {  # metric: (threshold, higher is better)
    "bleu": (60.0, True),
    "chrf": (80.0, True),
    "wer": (5.0, False),
    "lid_acc": (99.0, True),
}


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--metrics", type=Path, required=True)
    p.add_argument("--gloss", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()
    m = json.loads(a.metrics.read_text())
    g = json.loads(a.gloss.read_text()).get("all", {})
    base = {"bleu": g.get("BLEU"), "bleu_lc": g.get("BLEU-lc"), "chrf": g.get("chrF")}
    print(f"{'metric':<12} {'model':>8} {'gloss':>8}  goal")
    goals = {}
    for k in sorted(m):
        goal = GOALS.get(k)
        ok = None
        if goal:
            ok = m[k] >= goal[0] if goal[1] else m[k] <= goal[0]
            goals[k] = ok
        b = base.get(k)
        print(f"{k:<12} {m[k]:8.2f} {'' if b is None else f'{b:8.2f}':>8}  "
              + ("" if goal is None else f"{'>=' if goal[1] else '<='} {goal[0]}: {'met' if ok else 'NOT met'}"))
    atomic_write_text(a.out, json.dumps({"model": m, "gloss": base, "goals": goals}, indent=1) + "\n")


if __name__ == "__main__":
    main()
