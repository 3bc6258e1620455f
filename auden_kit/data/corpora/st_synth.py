"""An offline speech-translation corpus: English and Spanish speakers (espeak-ng voices) say
sentences of the parallel grammar (:mod:`auden_kit.data.corpora.parallel`); each utterance
carries its transcript and its translation into the other language, in the schema of
:mod:`auden_kit.data.translation`.

Layout written::

    <out>/{train,dev,test}/<speaker>/<utt>.flac
    <manifests>/<prefix>_{recordings,supervisions}_{train,dev,test}.jsonl.gz

Test sentences are never in dev or train (held out by sentence, in both languages). A fraction
of the training utterances (``no_translation``) has no translation: the decoder learns to
write their transcript, so forcing the source language as target gives a transcript.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing as mp
import random
from pathlib import Path

from auden_kit.data.corpora.parallel import LANGUAGES, sample_sentences
from auden_kit.data.corpora.synthetic import Utterance, render_chapter

log = logging.getLogger(__name__)

PARTS = ("train", "dev", "test")
BASES = {"en": ("en-us", "en"), "es": ("es", "es-419")}


@dataclasses.dataclass
class StSynthOptions:
    speakers_per_language: int = 12
    train_utts: int = 100  # per speaker
    dev_utts: int = 4
    test_utts: int = 10
    no_translation: float = 0.1  # fraction of training utterances without a translation
    rate: int = 160
    rate_jitter: int = 20
    pitch_jitter: int = 15
    prefix: str = "mini_st"
    seed: int = 0
    jobs: int = 2


def plan_st_corpus(opts: StSynthOptions) -> dict:
    """Speakers, sentences and prosody per utterance; a pure function of ``opts``."""
    from auden_kit.data.corpora.espeak import ENGLISH_VARIANTS, voice_gender

    rng = random.Random(opts.seed)
    speakers = []
    for lang in LANGUAGES:
        voices = [f"{b}+{v}" for v in ENGLISH_VARIANTS for b in BASES[lang]]
        rng.shuffle(voices)
        if opts.speakers_per_language > len(voices):
            raise ValueError(f"at most {len(voices)} {lang} voices, asked for {opts.speakers_per_language}")
        for i, voice in enumerate(voices[:opts.speakers_per_language]):
            speakers.append({"id": f"{lang}{i:02d}", "language": lang, "voice": voice,
                             "gender": voice_gender(voice.split("+")[1]),
                             "rate": opts.rate + rng.randint(-opts.rate_jitter, opts.rate_jitter),
                             "pitch": 50 + rng.randint(-opts.pitch_jitter, opts.pitch_jitter)})
    used: set = set()
    counts = {"test": opts.test_utts, "dev": opts.dev_utts, "train": opts.train_utts}
    parts: dict[str, list] = {}
    for part in ("test", "dev", "train"):  # test first: its sentences are never reused
        rows = []
        for spk in speakers:
            src = spk["language"]
            tgt = next(x for x in LANGUAGES if x != src)
            for k, s in enumerate(sample_sentences(counts[part], rng, used)):
                keep = part != "train" or rng.random() >= opts.no_translation
                j = max(1, opts.rate_jitter // 2)
                utt = Utterance(utt_id=f"{spk['id']}-{part}-{k:04d}", text=s.text(src), voice=spk["voice"],
                                rate=spk["rate"] + rng.randint(-j, j),
                                pitch=min(99, max(0, spk["pitch"] + rng.randint(-5, 5))),
                                seed=rng.randrange(1 << 30))
                rows.append((spk, utt, {"language": tgt, "text": s.text(tgt)} if keep else None))
        parts[part] = rows
    return {"speakers": speakers, "parts": parts}


def synthesize_st_corpus(out_dir: str | Path, manifest_dir: str | Path, opts: StSynthOptions,
                         progress: bool = True) -> dict[str, Path]:
    """Synthesize the corpus and write its manifests; returns {part: supervisions manifest}."""
    from lhotse import Recording, RecordingSet, SupervisionSegment, SupervisionSet
    from tqdm import tqdm

    from auden_kit.data.translation import with_translations
    from auden_kit.io import save_cuts_atomic

    out_dir, manifest_dir = Path(out_dir), Path(manifest_dir)
    plan = plan_st_corpus(opts)
    tasks = []
    for part, rows in plan["parts"].items():
        by_spk: dict[str, list] = {}
        for spk, utt, _ in rows:
            by_spk.setdefault(spk["id"], []).append(utt)
        for sid, utts in by_spk.items():
            d = out_dir / part / sid
            d.mkdir(parents=True, exist_ok=True)
            for i in range(0, len(utts), 25):
                tasks.append((str(d), utts[i:i + 25], (0.0, 0.0), float("-inf")))
    ctx = mp.get_context("forkserver")
    with ctx.Pool(max(1, opts.jobs), maxtasksperchild=1) as pool:
        total = sum(len(t[1]) for t in tasks)
        with tqdm(total=total, desc="Synthesizing", unit="utt", disable=not progress) as bar:
            for res in pool.imap_unordered(render_chapter, tasks):
                bar.update(len(res))
    written = {}
    for part, rows in plan["parts"].items():
        recs, sups = [], []
        for spk, utt, trans in rows:
            rec = Recording.from_file(out_dir / part / spk["id"] / f"{utt.utt_id}.flac", recording_id=utt.utt_id)
            sup = SupervisionSegment(id=utt.utt_id, recording_id=utt.utt_id, start=0.0, duration=rec.duration,
                                     channel=0, text=utt.text, language=spk["language"], speaker=spk["id"],
                                     gender=spk["gender"])
            recs.append(rec)
            sups.append(with_translations(sup, [trans] if trans else []))
        rp = manifest_dir / f"{opts.prefix}_recordings_{part}.jsonl.gz"
        sp = manifest_dir / f"{opts.prefix}_supervisions_{part}.jsonl.gz"
        save_cuts_atomic(RecordingSet.from_recordings(recs), rp)
        save_cuts_atomic(SupervisionSet.from_segments(sups), sp)
        written[part] = sp
        log.info("%s: %d utterances (%.1f min)", part, len(recs), sum(r.duration for r in recs) / 60)
    return written
