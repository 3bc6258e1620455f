"""CREMA-D (Cao et al., 2014) from a local copy: emotion, gender and age labels, speaker-disjoint
splits. Lhotse has no recipe for it; this one follows Lhotse's conventions.

Layout (as distributed)::

    <corpus>/AudioWAV/<actor>_<sentence>_<emotion>_<level>.wav     e.g. 1001_DFA_ANG_XX.wav
    <corpus>/VideoDemographics.csv                                  ActorID,Age,Sex,Race,Ethnicity

Supervisions: ``speaker`` = actor, ``gender`` M/F, ``custom`` = {"emotion": angry|disgust|fear|
happy|neutral|sad, "intensity": LO|MD|HI|XX, "age": years}. Splits are by actor (no speaker in two
parts): of the actors sorted by id, every ``test_every``-th is test and the one after it dev.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

from auden_kit.data.corpora.folder import GENDERS
from auden_kit.errors import UserError
from auden_kit.io import save_cuts_atomic

log = logging.getLogger(__name__)
EMOTIONS = {"ANG": "angry", "DIS": "disgust", "FEA": "fear", "HAP": "happy", "NEU": "neutral", "SAD": "sad"}


def read_demographics(path: Path) -> dict[str, dict]:
    if not path.is_file():
        raise UserError(f"'{path}' is missing (CREMA-D's VideoDemographics.csv holds age and sex per actor)")
    out = {}
    with path.open(newline="", errors="replace") as f:
        for row in csv.DictReader(f):
            actor = (row.get("ActorID") or "").strip()
            if actor:
                sex = (row.get("Sex") or "").strip()
                out[actor] = {"age": (row.get("Age") or "").strip(), "gender": GENDERS.get(sex.lower(), sex or None)}
    return out


def prepare_cremad(corpus_dir: str | Path, out_dir: str | Path, test_every: int = 10) -> dict[str, Path]:
    """Write ``cremad_{recordings,supervisions}_{train,dev,test}.jsonl.gz``; return {name: path}."""
    from lhotse import Recording, RecordingSet, SupervisionSegment, SupervisionSet

    corpus_dir, out_dir = Path(corpus_dir), Path(out_dir)
    audio_dir = corpus_dir / "AudioWAV"
    if not audio_dir.is_dir():
        raise UserError(f"'{audio_dir}' does not exist (give the CREMA-D root, which holds AudioWAV/)")
    demo = read_demographics(corpus_dir / "VideoDemographics.csv")
    files = sorted(audio_dir.glob("*.wav"))
    if not files:
        raise UserError(f"no .wav files in '{audio_dir}'")
    actors = sorted({f.stem.split("_")[0] for f in files})
    split_of = {}
    for i, a in enumerate(actors):
        split_of[a] = "test" if i % test_every == 0 else "dev" if i % test_every == 1 else "train"
    parts: dict[str, tuple[list, list]] = {p: ([], []) for p in ("train", "dev", "test")}
    skipped = 0
    for f in files:
        fields = f.stem.split("_")
        if len(fields) != 4 or fields[2] not in EMOTIONS:
            log.warning("skipping '%s': not <actor>_<sentence>_<emotion>_<level>.wav", f.name)
            skipped += 1
            continue
        actor, sentence, emo, level = fields
        try:
            rec = Recording.from_file(f, recording_id=f.stem)
        except Exception as e:  # noqa: BLE001 - name the file
            raise UserError(f"cannot read audio file '{f}' ({e})") from None
        d = demo.get(actor, {})
        custom = {"emotion": EMOTIONS[emo], "intensity": level, "sentence": sentence}
        if d.get("age"):
            custom["age"] = d["age"]
        recs, sups = parts[split_of[actor]]
        recs.append(rec)
        sups.append(SupervisionSegment(id=f.stem, recording_id=f.stem, start=0.0, duration=rec.duration, channel=0,
                                       speaker=actor, gender=d.get("gender"), language="English", custom=custom))
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for part, (recs, sups) in parts.items():
        if not recs:
            continue
        for kind, m in (("recordings", RecordingSet.from_recordings(recs)),
                        ("supervisions", SupervisionSet.from_segments(sups))):
            p = out_dir / f"cremad_{kind}_{part}.jsonl.gz"
            save_cuts_atomic(m, p)
            written[f"{kind}_{part}"] = p
        log.info("%s: %d utterances, %d actors", part, len(recs), len({s.speaker for s in sups}))
    if skipped:
        log.warning("%d file(s) skipped (names not in CREMA-D's form)", skipped)
    return written
