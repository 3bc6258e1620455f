#!/usr/bin/env python3
"""Gather one model's evaluation (stage 6) and the untrained baselines (stage 3) into a table
with the recipe's goals, print it and write it as JSON."""

import argparse
import json
from pathlib import Path


def load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--baselines", type=Path, required=True)
    p.add_argument("--eval-dir", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()
    base = load(a.baselines)
    cos, asn = load(a.eval_dir / "score-cosine.json"), load(a.eval_dir / "score-asnorm.json")
    test, dev = load(a.eval_dir / "metrics-test.json"), load(a.eval_dir / "metrics-dev.json")
    eer = min(cos.get("eer", 100.0), asn.get("eer", 100.0))
    b_cos = base.get("stats-cosine", {}).get("eer", 0.0)
    b_lda = base.get("stats-lda", {}).get("eer", 0.0)
    spc = base.get("style-seconds-per-char", {}).get("accuracy", 0.0)
    rows = [
        ("EER % (unseen speakers), cosine", cos.get("eer"), f"stats-cosine {b_cos}, stats-LDA {b_lda}"),
        ("EER % (unseen speakers), AS-norm", asn.get("eer"), ""),
        ("minDCF(0.01), cosine / AS-norm", f"{cos.get('min_dcf_0.01', 0):.3f} / {asn.get('min_dcf_0.01', 0):.3f}",
         f"stats-LDA {base.get('stats-lda', {}).get('min_dcf_0.01')}"),
        ("gender accuracy % (unseen)", 100 * test.get("gender_accuracy", 0),
         f"stats nearest mean {base.get('gender-stats-nearest-mean', {}).get('accuracy')}"),
        ("style accuracy % (unseen)", 100 * test.get("custom_style_accuracy", 0), f"seconds-per-char {spc}"),
        ("style macro F1 % (unseen)", 100 * test.get("custom_style_macro_f1", 0), ""),
        ("speaker identification % (closed set)", 100 * dev.get("speaker_accuracy", 0), ""),
    ]
    goals = {
        "EER <= 2 % and below both baselines": eer <= 2.0 and eer < b_cos and eer < b_lda,
        "gender >= 95 %": test.get("gender_accuracy", 0) >= 0.95,
        "style >= 90 % and above seconds-per-char": test.get("custom_style_accuracy", 0) >= 0.90
        and 100 * test.get("custom_style_accuracy", 0) > spc,
        "identification >= 98 %": dev.get("speaker_accuracy", 0) >= 0.98,
    }
    width = max(len(r[0]) for r in rows)
    print(f"{'metric':<{width}}  {'model':>12}  baselines")
    for name, val, ref in rows:
        v = f"{val:.2f}" if isinstance(val, float) else str(val)
        print(f"{name:<{width}}  {v:>12}  {ref}")
    for g, ok in goals.items():
        print(f"goal {g}: {'met' if ok else 'NOT met'}")
    out = {"baselines": base, "cosine": cos, "as_norm": asn, "test": test, "dev": dev, "goals": goals}
    tmp = a.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(out, indent=1) + "\n")
    tmp.replace(a.out)


if __name__ == "__main__":
    main()
