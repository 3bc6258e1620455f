#!/usr/bin/env python3
"""How alike the voices of a decoded meeting's speakers are, pair by pair, and whether the two of a
pair are one reference speaker (an over-split) or two. A measurement for a speaker-level merge
rule (join two decoded speakers whose voices are closer than a cosine), not a stage.

Each decoded speaker is embedded by the voice model: its segments of at least 0.8 s read one by
one (unit embeddings averaged by duration). A decoded speaker stands for the reference speaker
it overlaps most in time.

    python local/speaker_pairs.py --voice ../mini_synth_voice/exp/model-avg \\
        --cuts data/fbank/meetings_cuts_dev.jsonl.gz --decoded exp/tagspeech/decode --part dev

Prints the closest pairs and, for a range of cosines, how many meetings a merge at that cosine
would count right, against how many the decoded output counts right."""

import argparse
import collections
import json
from pathlib import Path

import numpy as np
import torch


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--voice", required=True, help="voice model folder")
    ap.add_argument("--cuts", required=True, help="the decoded meetings' cut manifest")
    ap.add_argument("--decoded", required=True, help="folder with hyp-PART.json and ref-PART.json (auden-kit decode)")
    ap.add_argument("--part", required=True)
    ap.add_argument("--show", type=int, default=15, help="closest pairs to print")
    args = ap.parse_args()

    from auden_kit.api import load
    from auden_kit.clustering import agglomerate
    from auden_kit.data.datamodule import load_cuts

    vm = load(args.voice)
    hyp = json.loads((Path(args.decoded) / f"hyp-{args.part}.json").read_text())
    ref = json.loads((Path(args.decoded) / f"ref-{args.part}.json").read_text())
    by_h, by_r = collections.defaultdict(list), collections.defaultdict(list)
    for s in hyp:
        by_h[s["session_id"]].append(s)
    for s in ref:
        by_r[s["session_id"]].append(s)
    pairs, meetings = [], []
    for c in load_cuts([args.cuts]):
        audio, rate = c.load_audio()[0], c.sampling_rate
        spk = collections.defaultdict(list)
        for s in by_h[c.id]:
            spk[s["speaker"]].append(s)
        n_ref = len({r["speaker"] for r in by_r[c.id]})
        ks = sorted(spk)
        meetings.append((c.id, n_ref, ks, {}))
        if not ks:
            continue
        stands_for, emb = {}, {}
        for k in ks:
            cover = collections.Counter()
            for s in spk[k]:
                for r in by_r[c.id]:
                    cover[r["speaker"]] += max(0.0, min(s["end_time"], r["end_time"]) - max(s["start_time"], r["start_time"]))
            stands_for[k] = cover.most_common(1)[0][0] if cover else None
            segs = [s for s in spk[k] if s["end_time"] - s["start_time"] >= 0.8] or spk[k]
            res = vm.embed([torch.from_numpy(audio[int(s["start_time"] * rate): int(s["end_time"] * rate)])
                            for s in segs], sample_rate=rate)
            e = np.stack([np.asarray(r.embedding, dtype=np.float64) for r in res])
            e /= np.linalg.norm(e, axis=1, keepdims=True)
            v = (e * np.array([s["end_time"] - s["start_time"] for s in segs])[:, None]).sum(0)
            emb[k] = v / np.linalg.norm(v)
        meetings[-1] = (c.id, n_ref, ks, emb)
        for i, a in enumerate(ks):
            for b in ks[i + 1:]:
                pairs.append((float(emb[a] @ emb[b]), stands_for[a] == stands_for[b], c.id, a, b))
    pairs.sort(reverse=True)
    print(f"{len(meetings)} meetings, {len(pairs)} pairs of decoded speakers; closest:")
    for cos, same, sid, a, b in pairs[: args.show]:
        print(f"  {cos:.3f} {'one reference speaker' if same else 'two':22} {sid} {a} {b}")
    right = sum(len(ks) == n for _, n, ks, _ in meetings)
    print(f"counted right as decoded: {right} of {len(meetings)}")
    for th in (0.8, 0.825, 0.85, 0.875, 0.9, 0.925):
        ok = 0
        for _, n, ks, emb in meetings:
            found = len(ks)
            if len(ks) > 1:  # speakers joined while any two groups' average cosine is above th
                x = np.stack([emb[k] for k in ks])
                found = max(agglomerate(x, th)) + 1
            ok += found == n
        print(f"  merged at cosine {th}: {ok} of {len(meetings)} counted right")


if __name__ == "__main__":
    main()
