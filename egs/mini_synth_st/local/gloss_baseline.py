#!/usr/bin/env python3
"""The monotone word-by-word gloss of each test sentence (every word's most common translation,
in source order) scored like the model: it must be low, or the corpus would not need reordering
and agreement. Prints the scores with their sacrebleu signatures; writes JSON."""

import argparse
import json
from pathlib import Path

from lhotse import load_manifest

from auden_kit.data.corpora.parallel import gloss
from auden_kit.data.translation import translations
from auden_kit.io import atomic_write_text
from auden_kit.metrics.bleu import translation_scores


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("supervisions", type=Path)
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()
    pairs: dict[str, tuple[list, list]] = {}
    for s in load_manifest(a.supervisions):
        for t in translations(s):
            hyps, refs = pairs.setdefault(f"{s.language}-{t['language']}", ([], []))
            hyps.append(gloss(s.text, s.language))
            refs.append(t["text"])
    pairs["all"] = ([h for k, (hs, _) in pairs.items() for h in hs], [r for k, (_, rs) in pairs.items() for r in rs])
    out = {}
    for d, (hyps, refs) in pairs.items():
        scores = translation_scores(hyps, refs)
        out[d] = {s.name: round(s.score, 2) for s in scores}
        for s in scores:
            print(f"gloss {d}: {s}")
    atomic_write_text(a.out, json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
