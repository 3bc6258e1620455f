#!/usr/bin/env python3
"""Speed of the offline corpus synthesis (with its word/phone alignments) and of feature
extraction: fbank, and fbank + pitch (``data fbank --pitch``), stored with lilcom.

    python bench/data_speed.py [--speakers 4 --utts 20 --jobs 2]
"""

import argparse
import json
import tempfile
import time
from pathlib import Path


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--speakers", type=int, default=4)
    p.add_argument("--utts", type=int, default=20)
    p.add_argument("--jobs", type=int, default=2)
    a = p.parse_args()
    from lhotse import CutSet

    from auden_kit.data.corpora.synthetic import SynthOptions, corpus_to_cuts, synthesize_corpus
    from auden_kit.data.features import FbankSettings, compute_fbank

    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        t0 = time.time()
        root = synthesize_corpus(d, SynthOptions(num_speakers=a.speakers, train_utts=a.utts, dev_utts=0, test_utts=0,
                                                 jobs=a.jobs), progress=False)
        synth_s = time.time() - t0
        cuts = CutSet.from_file(corpus_to_cuts(root, d / "m")["train-clean-100"]).to_eager()
        audio = sum(c.duration for c in cuts)
        rtf = {}
        for name, settings in (("fbank", FbankSettings()), ("fbank_pitch", FbankSettings(pitch=True))):
            t0 = time.time()
            compute_fbank(cuts, d / name, "train", settings, num_jobs=a.jobs)
            rtf[f"{name}.rtf"] = round((time.time() - t0) / audio, 4)
    print(json.dumps({"utterances": len(cuts), "audio_s": round(audio, 1),
                      "synth.utt_per_s": round(len(cuts) / synth_s, 1),
                      "synth.audio_s_per_s": round(audio / synth_s, 1), **rtf, "jobs": a.jobs}))


if __name__ == "__main__":
    main()
