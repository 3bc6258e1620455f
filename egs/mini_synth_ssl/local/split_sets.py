#!/usr/bin/env python3
"""Make the recipe's sets from the synthesized manifests:

- unlabeled: the pretraining corpus with its supervisions removed (audio only), minus any
  utterance whose sentence also occurs in the labeled dev/test sets;
- probe sets from the spoken keywords: content probe = keyword, fitted on half of the speakers
  and scored on the other half; speaker probe = speaker, fitted on five words and scored on the
  other five (text-independent).
"""
import argparse
import sys

from lhotse import CutSet, load_manifest
from lhotse.utils import fastcopy

p = argparse.ArgumentParser(description=__doc__)
p.add_argument("--unlabeled", help="the synthesized pretraining corpus (cuts)")
p.add_argument("--labeled-heldout", nargs="+", default=[], help="labeled dev/test cuts")
p.add_argument("--keywords", help="keyword cuts (with features) to split into the probe sets")
p.add_argument("--out-dir", required=True)
a = p.parse_args()

if a.unlabeled:
    held = {s.text for m in a.labeled_heldout for c in load_manifest(m) for s in c.supervisions}
    un = load_manifest(a.unlabeled)
    kept = CutSet.from_cuts(fastcopy(c, supervisions=[]) for c in un if c.supervisions[0].text not in held)
    kept.to_file(f"{a.out_dir}/unlabeled_cuts.jsonl.gz")
    print(f"unlabeled: {len(kept)} of {len(un)} cuts kept (audio only)", file=sys.stderr)
if not a.keywords:
    sys.exit(0)
kw = load_manifest(a.keywords)
speakers = sorted({c.supervisions[0].speaker for c in kw})
first = set(speakers[: len(speakers) // 2])
words = sorted({c.supervisions[0].custom["keyword"] for c in kw})
some = set(words[: len(words) // 2])
sets = {
    "probe_content_train": lambda c: c.supervisions[0].speaker in first,
    "probe_content_test": lambda c: c.supervisions[0].speaker not in first,
    "probe_speaker_train": lambda c: c.supervisions[0].custom["keyword"] in some,
    "probe_speaker_test": lambda c: c.supervisions[0].custom["keyword"] not in some,
}
for name, keep in sets.items():
    kw.filter(keep).to_eager().to_file(f"{a.out_dir}/{name}_cuts.jsonl.gz")
