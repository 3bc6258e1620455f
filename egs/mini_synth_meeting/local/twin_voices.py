#!/usr/bin/env python3
"""An experiment, not a stage: which test meetings hold "twin" voices (``en+X`` and ``en-us+X``:
one espeak variant, two languages' pronunciation rules), and can the voice model tell twins apart?
(RESULTS.md, "Twin voices"). Prints the twin meetings, then the cosine of the voice model's
embeddings of clean test utterances (mean over utterance pairs): within each speaker, between
different voices that are not twins, and for each twin pair. Run in this folder after stage 2:

    python local/twin_voices.py --voice ../mini_synth_voice/exp/model-avg
"""
import argparse
import collections
import gzip
import json

import numpy as np
from lhotse import load_manifest_lazy

import auden_kit
from auden_kit.data.audio import load_cut_audio

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--voice", required=True, help="voice model folder")
p.add_argument("--meetings", default="data/manifests/meetings_supervisions_test.jsonl.gz")
a = p.parse_args()

names = {}  # speaker id -> espeak voice
for part in ("seen", "unseen"):
    for line in open(f"download/{part}/LibriSpeech/SPEAKERS.TXT"):
        if not line.startswith(";"):
            cols = [x.strip() for x in line.split("|")]
            names[cols[0]] = cols[4]


def variant(voice: str) -> str:
    return voice.split("+", 1)[-1]


speakers = collections.defaultdict(set)
for line in gzip.open(a.meetings, "rt"):
    d = json.loads(line)
    speakers[d["recording_id"]].add(d["speaker"])
for rec, spk in sorted(speakers.items()):
    voices = sorted(names[s] for s in spk)
    if len({variant(v) for v in voices}) < len(voices):
        print(f"twins in {rec} ({len(voices)} speakers): {' '.join(voices)}")

voice = auden_kit.load(a.voice)
emb = collections.defaultdict(list)
for part in ("seen", "unseen"):
    cuts = list(load_manifest_lazy(f"data/manifests/{part}/synth_cuts_test-clean.jsonl.gz"))
    for c, r in zip(cuts, voice.infer([load_cut_audio(c, 16000) for c in cuts], 16000)):
        e = np.asarray(r.embedding, dtype=np.float64)
        emb[c.supervisions[0].speaker].append(e / np.linalg.norm(e))
ids = sorted(emb)
same = [(lambda m: m[np.triu_indices(len(m), 1)].mean())(np.stack(emb[s]) @ np.stack(emb[s]).T) for s in ids]
others, twins = [], []
for i, s in enumerate(ids):
    for t in ids[i + 1:]:
        cos = float((np.stack(emb[s]) @ np.stack(emb[t]).T).mean())
        (twins if variant(names[s]) == variant(names[t]) else others).append((cos, names[s], names[t]))
print(f"{len(ids)} speakers; the same speaker: {min(same):.3f}-{max(same):.3f} (median {np.median(same):.3f})")
cos = np.array([c for c, _, _ in others])
print(f"different voices, not twins: median {np.median(cos):.3f}, 99th percentile {np.percentile(cos, 99):.3f}, "
      f"at most {cos.max():.3f} ({len(cos)} pairs)")
for c, s, t in sorted(twins, reverse=True):
    print(f"twins {s} / {t}: {c:.3f}")
