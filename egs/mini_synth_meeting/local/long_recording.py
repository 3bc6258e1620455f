#!/usr/bin/env python3
"""Decode a long recording: test meetings back to back (1 s apart) as one file, decoded by the
Python API in windows (split at pauses), speakers linked across windows by voice embeddings;
scored against the meetings' references with global speaker labels (the same voice in two
meetings is one speaker), so cpWER and DER measure the linking too. Prints and writes metrics,
the real-time factor and the peak memory."""

import argparse
import json
import resource
import time
from pathlib import Path

import soundfile as sf
import torch

import auden_kit
from auden_kit.data.segments import cut_segments, write_segments
from auden_kit.metrics.diarization import score_meetings
from auden_kit.results import Segment


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cuts", required=True, help="test meetings (cut manifest)")
    ap.add_argument("--model", required=True, help="tagspeech model folder")
    ap.add_argument("--num", type=int, default=18, help="meetings to join (18 x ~33 s: about 10 minutes)")
    ap.add_argument("--max-segment", type=float, default=60.0, help="longest window (seconds)")
    ap.add_argument("--link-threshold", type=float, default=None,
                    help="cosine similarity for linking speakers across windows (default: the model's)")
    ap.add_argument("--out-dir", required=True)
    a = ap.parse_args()
    from lhotse import load_manifest_lazy

    cuts = [c for _, c in zip(range(a.num), load_manifest_lazy(a.cuts))]
    rate, gap = 16000, 1.0
    pieces, refs, t = [], [], 0.0
    for c in cuts:
        wav = torch.as_tensor(c.resample(rate).load_audio()).mean(0)
        pieces += [wav, torch.zeros(int(gap * rate))]
        refs += [Segment(s.start + t, s.end + t, s.speaker, s.text) for s in cut_segments(c)]
        t += wav.numel() / rate + gap
    audio = torch.cat(pieces)
    out = Path(a.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sf.write(out / "long.wav", audio.numpy(), rate)
    m = auden_kit.load(a.model)
    if a.link_threshold is not None:
        m.task.model_cfg.link_threshold = a.link_threshold
    t0 = time.time()
    res = m.infer(str(out / "long.wav"), max_segment=a.max_segment)
    elapsed = time.time() - t0
    scores = score_meetings([("long", refs, res.segments)])
    scores.pop("per_meeting")
    scores.update({"recording_s": round(audio.numel() / rate, 1), "meetings_joined": len(cuts),
                   "decode_s": round(elapsed, 1), "rtf": round(elapsed / (audio.numel() / rate), 4),
                   "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                   "ref_speakers": len({s.speaker for s in refs}), "hyp_speakers": len(res.speakers),
                   "link_threshold": m.task.model_cfg.link_threshold})
    write_segments(out / "hyp.rttm", {"long": res.segments}, "rttm")
    write_segments(out / "ref.rttm", {"long": refs}, "rttm")
    (out / "metrics.json").write_text(json.dumps(scores, indent=1) + "\n")
    print(json.dumps(scores, indent=1))


if __name__ == "__main__":
    main()
