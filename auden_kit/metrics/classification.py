"""Classification metrics: accuracy, per-class precision/recall/F1, macro F1 and unweighted
average recall (UAR, the emotion-recognition convention), from reference and hypothesis labels."""

from __future__ import annotations

from typing import Sequence


def classification_report(refs: Sequence[str], hyps: Sequence[str]) -> dict:
    """{"accuracy", "macro_f1", "uar", "per_class": {label: {"precision", "recall", "f1", "support"}}}
    over the classes that occur in ``refs`` or ``hyps``."""
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    if not refs:
        return {"accuracy": 0.0, "macro_f1": 0.0, "uar": 0.0, "per_class": {}}
    per_class = {}
    for c in sorted(set(refs) | set(hyps)):
        tp = sum(r == c and h == c for r, h in zip(refs, hyps))
        n_ref = sum(r == c for r in refs)
        n_hyp = sum(h == c for h in hyps)
        p = tp / n_hyp if n_hyp else 0.0
        rec = tp / n_ref if n_ref else 0.0
        per_class[c] = {"precision": p, "recall": rec, "f1": 2 * p * rec / (p + rec) if p + rec else 0.0,
                        "support": n_ref}
    present = [c for c, v in per_class.items() if v["support"]]
    return {
        "accuracy": sum(r == h for r, h in zip(refs, hyps)) / len(refs),
        "macro_f1": sum(per_class[c]["f1"] for c in present) / len(present),
        "uar": sum(per_class[c]["recall"] for c in present) / len(present),
        "per_class": per_class,
    }
