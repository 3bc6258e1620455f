#!/usr/bin/env python3
"""Diarized ASR decoding speed and memory: a tagspeech model against the cascade (voice
clustering + ASR) on the same long recording (meetings of a manifest joined back to back).

Each system runs in its own process, so the peak resident memory printed is that system's
alone (models included). Prints RTF, peak RSS and the scores of both.

    cd egs/mini_synth_meeting   # the manifest's audio paths are relative to the recipe
    python ../../bench/meeting_decode.py --cuts data/fbank/meetings_cuts_test.jsonl.gz \\
        --tagspeech exp/tagspeech/model-avg \\
        --voice-model ../mini_synth_voice/exp/model-avg --asr-model ../mini_synth/exp/model-avg --num 18
"""

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def join(cuts_path: str, num: int, out: Path, repeat: int = 1):
    """Write ``num`` meetings back to back (1 s apart), the lot ``repeat`` times over (the same
    speakers come back), to ``out`` (wav); return the references and the duration."""
    import soundfile as sf
    import torch
    from lhotse import load_manifest_lazy

    from auden_kit.data.segments import cut_segments
    from auden_kit.results import Segment

    rate, pieces, refs, t = 16000, [], [], 0.0
    for c in [c for _, c in zip(range(num), load_manifest_lazy(cuts_path))] * repeat:
        wav = torch.as_tensor(c.resample(rate).load_audio()).mean(0)
        pieces += [wav, torch.zeros(rate)]
        refs += [Segment(s.start + t, s.end + t, s.speaker, s.text) for s in cut_segments(c)]
        t += wav.numel() / rate + 1.0
    audio = torch.cat(pieces)
    sf.write(out, audio.numpy(), rate)
    return refs, audio.numel() / rate


def run_one(system: str, wav: str, a) -> dict:
    """In a child process: decode ``wav`` with one system; segments, seconds, peak RSS."""
    import torch

    import auden_kit

    torch.set_num_threads(a.threads)
    t0 = time.time()
    if system == "tagspeech":
        m = auden_kit.load(a.tagspeech)
        if a.link_threshold is not None:
            m.task.model_cfg.link_threshold = a.link_threshold
        load_s = time.time() - t0
        t0 = time.time()
        segs = m.infer(wav, max_segment=60.0).segments
    else:
        from auden_kit import cascade
        from auden_kit.cascade import CascadeOptions, diarize_audio

        if a.cluster_rows:
            cascade.CLUSTER_ROWS = a.cluster_rows

        voice, asr = auden_kit.load(a.voice_model), auden_kit.load(a.asr_model)
        load_s = time.time() - t0
        t0 = time.time()
        segs = diarize_audio(wav, 16000, voice, asr,
                                CascadeOptions(threshold=a.threshold), cut_id="long").segments
    return {"seconds": time.time() - t0, "load_s": load_s,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "segments": [[s.start, s.end, s.speaker, s.text] for s in segs]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cuts", required=True)
    ap.add_argument("--tagspeech", required=True)
    ap.add_argument("--voice-model", required=True)
    ap.add_argument("--asr-model", required=True)
    ap.add_argument("--num", type=int, default=18, help="meetings joined (18 x ~33 s: ~10 minutes)")
    ap.add_argument("--repeat", type=int, default=1, help="the meetings joined this many times over "
                    "(--num 40 --repeat 3: ~74 minutes)")
    ap.add_argument("--threshold", type=float, default=0.4, help="cascade clustering threshold")
    ap.add_argument("--link-threshold", type=float, default=None, help="tagspeech: override the model's")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--systems", nargs="+", default=["tagspeech", "cascade"], choices=["tagspeech", "cascade"])
    ap.add_argument("--cluster-rows", type=int, default=0, help="cascade: windows clustered at once before it "
                    "clusters in stages (0: the toolkit's CLUSTER_ROWS; 100000: all at once)")
    ap.add_argument("--keep-wav", default="", help="also write the joined recording here (e.g. for the CLI)")
    ap.add_argument("--child", default="", help=argparse.SUPPRESS)
    ap.add_argument("--wav", default="", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(run_one(a.child, a.wav, a)))
        return
    from auden_kit.metrics.diarization import score_meetings
    from auden_kit.results import Segment

    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "long.wav"
        refs, dur = join(a.cuts, a.num, wav, a.repeat)
        print(f"recording: {a.num} meetings x {a.repeat}, {dur:.1f} s, {len({s.speaker for s in refs})} speakers")
        print(f"{'system':10} {'RTF':>7} {'decode s':>9} {'peak RSS MB':>12} {'cpWER':>7} {'DER':>6} {'speakers':>9}")
        if a.keep_wav:
            import shutil

            shutil.copy(wav, a.keep_wav)
        for system in a.systems:
            cmd = [sys.executable, __file__, "--child", system, "--wav", str(wav)] + sys.argv[1:]
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode:
                print(f"{system}: failed\n{r.stderr[-2000:]}")
                continue
            out = json.loads(r.stdout.strip().splitlines()[-1])
            segs = [Segment(*s) for s in out["segments"]]
            m = score_meetings([("long", refs, segs)])
            print(f"{system:10} {out['seconds'] / dur:7.4f} {out['seconds']:9.1f} {out['peak_rss_mb']:12.0f} "
                  f"{m['cpwer']:7.2f} {m['der']:6.2f} {len({s.speaker for s in segs}):9d}")


if __name__ == "__main__":
    main()
