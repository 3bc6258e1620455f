#!/usr/bin/env python3
"""The recipe's figures beside its goals: test WER of the ASR fine-tuned from the pretrained
encoder vs the same ASR from scratch (goal: <= 0.7x), probe accuracies of the frozen BEST-RQ
(and MAE) encoder vs a randomly initialised one (goal: +10 points absolute on the content probe,
the frame-level phone of SUPERB, and on the speaker probe, kNN and linear). The clip-level keyword
probe is reported but is no goal: a random encoder reads it at 94.5 % with a linear probe already.
Printed, and written to exp/summary.json."""

import json
from pathlib import Path

from auden_kit.io import atomic_write_text

EXP = Path("exp")


def wer(name: str):
    p = EXP / name / "decode" / "wer-summary-labeled_cuts_test-ctc_greedy.txt"
    return float(p.read_text().split()[-1]) if p.is_file() else None


def probes(name: str) -> dict:
    p = EXP / "probes" / f"{name}.json"
    kinds = {"custom.keyword": "keyword", "speaker": "speaker", "alignment.phone": "phone"}
    return {f"{kinds[r['label']]}/{r['method']}": r["accuracy"]
            for r in json.loads(p.read_text())["rows"]} if p.is_file() else {}


def main():
    res = {"wer": {"finetuned": wer("finetune"), "scratch": wer("scratch")},
           "probes": {n: probes(n) for n in ("bestrq", "mae", "random")}, "goals": {}}
    w = res["wer"]
    print(f"test WER (CTC greedy): fine-tuned from BEST-RQ {w['finetuned']}  |  from scratch {w['scratch']}")
    if w["finetuned"] is not None and w["scratch"] is not None:
        ratio = w["finetuned"] / max(w["scratch"], 1e-9)
        res["goals"]["finetuned <= 0.7x scratch"] = ratio <= 0.7
        print(f"  ratio {ratio:.3f} (goal <= 0.7: {'met' if ratio <= 0.7 else 'NOT met'})")
    rnd = res["probes"]["random"]
    print(f"\n{'probe':<18} {'random':>8} {'bestrq':>8} {'mae':>8}")
    for key in sorted(rnd):
        row = [res["probes"][n].get(key) for n in ("random", "bestrq", "mae")]
        print(f"{key:<18} " + " ".join(f"{'-' if v is None else f'{v:.2f}':>8}" for v in row))
        for n in ("bestrq", "mae"):
            v = res["probes"][n].get(key)
            if v is not None and not key.startswith("keyword/"):
                res["goals"][f"{n} {key} >= random + 10"] = v >= rnd[key] + 10
    print()
    for k, ok in res["goals"].items():
        print(f"  {k}: {'met' if ok else 'NOT met'}")
    atomic_write_text(EXP / "summary.json", json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
