"""MuST-C (English TED talks -> 8+ languages) from a local copy, in the speech-translation
schema (:mod:`auden_kit.data.translation`); nothing is downloaded (the corpus needs a licence).

Layout (as distributed)::

    <corpus>/en-<tgt>/data/<split>/wav/ted_<id>.wav
    <corpus>/en-<tgt>/data/<split>/txt/<split>.yaml  (wav, offset, duration, speaker_id per segment)
    <corpus>/en-<tgt>/data/<split>/txt/<split>.en    (transcripts, one line per segment)
    <corpus>/en-<tgt>/data/<split>/txt/<split>.<tgt> (translations)

Lhotse's ``must_c`` recipe reads it (supervision ``text`` = the translation); the English
transcript is then joined back with :func:`~auden_kit.data.translation.from_must_c`. Manifests:
``must_c_{recordings,supervisions}_en-<tgt>_<split>.jsonl.gz``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from auden_kit.errors import UserError
from auden_kit.io import save_cuts_atomic

log = logging.getLogger(__name__)
SPLITS = ("train", "dev", "tst-COMMON", "tst-HE")


def prepare_must_c(corpus_dir: str | Path, out_dir: str | Path, tgt_lang: str, num_jobs: int = 1) -> dict:
    """Write the manifests of every split; returns {split: supervisions path}."""
    from lhotse import SupervisionSet, load_manifest
    from lhotse.recipes.must_c import prepare_must_c as lhotse_prepare
    from lhotse.serialization import load_yaml

    from auden_kit.data.translation import from_must_c

    corpus_dir, out_dir = Path(corpus_dir), Path(out_dir)
    data = corpus_dir / f"en-{tgt_lang}" / "data"
    if not data.is_dir():
        raise UserError(f"MuST-C: '{data}' does not exist (give the folder that holds en-{tgt_lang}/, e.g. "
                        "MUSTC_v1.0 or v2.0)")
    missing = [str(data / s / "txt" / f"{s}.{x}") for s in SPLITS for x in ("yaml", "en", tgt_lang)
               if not (data / s / "txt" / f"{s}.{x}").is_file()]
    if missing:
        raise UserError(f"MuST-C: {len(missing)} text file(s) missing, e.g. '{missing[0]}'")
    lhotse_prepare(corpus_dir, out_dir, tgt_lang=tgt_lang, num_jobs=num_jobs)
    out = {}
    for split in SPLITS:
        path = out_dir / f"must_c_supervisions_en-{tgt_lang}_{split}.jsonl.gz"
        txt = data / split / "txt"
        segments = load_yaml(txt / f"{split}.yaml")
        transcripts = (txt / f"{split}.en").read_text(encoding="utf-8").splitlines()
        sups = from_must_c(load_manifest(path), segments, transcripts, tgt_lang=tgt_lang)
        save_cuts_atomic(SupervisionSet.from_segments(sups), path)
        out[split] = path
        log.info("MuST-C en-%s %s: %d segments", tgt_lang, split, len(sups))
    return out
