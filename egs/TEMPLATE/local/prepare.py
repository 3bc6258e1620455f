#!/usr/bin/env python3
"""Stage 0 of this recipe: turn your data into Lhotse manifests. Edit this file for your corpus.

Expected layout (change it here if yours differs):
    <corpus>/<part>/...audio files...      (wav/flac/ogg/mp3; file name = utterance id)
    <corpus>/<part>/text                    (<utterance-id> <transcript>, one per line)
    <corpus>/<part>/utt2spk                 (optional: <utterance-id> <speaker>)
    <corpus>/<part>/utt2<key>               (optional: gender, lang, or any custom label)
for each part in --parts (default: train dev test).
"""

import argparse
import sys
from pathlib import Path

from auden_kit.data.corpora.folder import parse_parts, prepare_folder
from auden_kit.errors import UserError


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus-dir", type=Path, required=True)
    p.add_argument("--out-dir", type=Path, default=Path("data/manifests"))
    p.add_argument("--parts", nargs="+", default=["train", "dev", "test"],
                   help="sub-folders; name=folder renames (train=train_nodev: a Kaldi data dir's part)")
    p.add_argument("--prefix", default="mydata")
    a = p.parse_args()
    try:
        for part, sub in parse_parts(a.parts):
            prepare_folder(a.corpus_dir / sub, a.out_dir, a.prefix, part)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
