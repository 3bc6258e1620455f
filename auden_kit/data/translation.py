"""The speech-translation schema of a supervision, and adapters from the corpora's own forms.

Schema (Auden-compatible)::

    supervision.text        the transcript, in the spoken language
    supervision.language    the spoken language ("en", "es", ...)
    supervision.custom["translation"] = [{"language": "de", "text": "..."}, ...]

A supervision without translations is valid (it trains the decoder on its own transcript).
The adapters are pure functions over Lhotse supervisions, so they are tested on hand-made
manifests and need no corpus:

* :func:`from_must_c` Lhotse's ``must_c`` recipe puts the *translation* in ``text``; the English
  transcript is the corpus's ``txt/<split>.en`` in the order of ``txt/<split>.yaml``.
* :func:`from_iwslt22_ta` Lhotse's ``iwslt22_ta`` keeps ``custom["translated_text"] = {lang: text}``.
* :func:`read_covost2_tsv`, :func:`prepare_covost2` CoVoST 2's ``covost_v2.<src>_<tgt>.<split>.tsv`` (path, sentence,
  translation, client_id) over Common Voice clips.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Iterable, Sequence

from auden_kit.errors import UserError

log = logging.getLogger(__name__)
KEY = "translation"


def language_tag(lang: str) -> str:
    """The tokenizer symbol of a language: ``<en>``."""
    return f"<{lang}>"


def translations(sup) -> list[dict]:
    """The ``[{"language", "text"}]`` translations of a supervision (empty when it has none)."""
    custom = sup.custom or {}
    return list(custom.get(KEY) or [])


def with_translations(sup, items: Sequence[dict]):
    """A copy of ``sup`` whose ``custom["translation"]`` is ``items`` (other custom keys kept)."""
    from dataclasses import replace

    custom = dict(sup.custom or {})
    custom[KEY] = [{"language": str(t["language"]), "text": str(t["text"])} for t in items]
    return replace(sup, custom=custom)


def check_fields(custom: dict | None, language: str | None) -> str | None:
    """What is wrong with a supervision's translation fields (its ``custom`` and ``language``),
    or None. Only supervisions that carry ``custom["translation"]`` are checked."""
    custom = custom or {}
    if KEY not in custom:
        return None
    items = custom[KEY]
    if not isinstance(items, list):
        return (f"custom['{KEY}'] must be a list of {{'language': ..., 'text': ...}}, got "
                f"{type(items).__name__}")
    if not language:
        return "has translations but no 'language' (the spoken language of its transcript)"
    for i, t in enumerate(items):
        if not isinstance(t, dict) or not t.get("language") or not isinstance(t.get("text"), str):
            return f"custom['{KEY}'][{i}] must be {{'language': 'xx', 'text': '...'}}, got {t!r}"
        if not t["text"].strip():
            return f"custom['{KEY}'][{i}] ({t['language']}) has an empty text"
    return None


def pick_translation(sup, tgt_lang: str | None = None) -> dict | None:
    """The translation into ``tgt_lang`` (or the first one when None), or None."""
    for t in translations(sup):
        if tgt_lang is None or t["language"] == tgt_lang:
            return t
    return None


def language_pairs(sups: Iterable) -> dict[str, int]:
    """{"en-es": count, "en-en" (transcript only): count, ...} over supervisions."""
    out: dict[str, int] = {}
    for s in sups:
        tr = translations(s)
        for key in ([f"{s.language}-{t['language']}" for t in tr] or [f"{s.language}-{s.language}"]):
            out[key] = out.get(key, 0) + 1
    return out


# ---------------------------------------------------------------------------- adapters
def from_must_c(sups: Iterable, segments: Sequence[dict], transcripts: Sequence[str], tgt_lang: str,
                src_lang: str = "en") -> list:
    """Lhotse ``must_c`` supervisions (``text`` = translation) -> the schema, with the English
    transcript joined from the corpus: ``segments`` is ``txt/<split>.yaml`` (dicts with ``wav``,
    ``offset``) and ``transcripts`` the lines of ``txt/<split>.en`` in the same order.
    Supervisions are matched by (recording, start), so the manifest's order does not matter."""
    if len(segments) != len(transcripts):
        raise UserError(f"MuST-C: {len(segments)} segments in the yaml but {len(transcripts)} transcript lines")
    by_key = {(Path(s["wav"]).stem, round(float(s["offset"]), 2)): t.strip() for s, t in zip(segments, transcripts)}
    out = []
    for s in sups:
        key = (s.recording_id, round(float(s.start), 2))
        if key not in by_key:
            raise UserError(f"MuST-C supervision '{s.id}': no segment of '{s.recording_id}' starts at "
                            f"{s.start:.2f} s in the yaml (is it the same split?)")
        from dataclasses import replace

        base = replace(s, text=by_key[key], language=src_lang)
        out.append(with_translations(base, [{"language": tgt_lang, "text": s.text}]))
    return out


def from_iwslt22_ta(sups: Iterable) -> list:
    """Lhotse ``iwslt22_ta`` supervisions (``custom["translated_text"] = {lang: text}``) -> the schema."""
    out = []
    for s in sups:
        custom = dict(s.custom or {})
        tt = custom.pop("translated_text", None) or {}
        if not isinstance(tt, dict):
            raise UserError(f"supervision '{s.id}': custom['translated_text'] should be {{lang: text}}, got {tt!r}")
        from dataclasses import replace

        base = replace(s, custom=custom or None)
        out.append(with_translations(base, [{"language": k, "text": v} for k, v in tt.items() if v and v.strip()]))
    return out


def read_covost2_tsv(tsv: str | Path, src_lang: str, tgt_lang: str) -> list[dict]:
    """Rows of a CoVoST 2 TSV as ``{"path", "sentence", "translation", "client_id"}``.
    Quotes are literal in these files (sentences contain ``"``), so no CSV quoting."""
    tsv = Path(tsv)
    if not tsv.is_file():
        raise UserError(f"CoVoST 2 table '{tsv}' does not exist (expected covost_v2.{src_lang}_{tgt_lang}"
                        ".<split>.tsv, from the CoVoST 2 release)")
    with open(tsv, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        need = {"path", "sentence", "translation"}
        if not need <= set(reader.fieldnames or []):
            raise UserError(f"'{tsv}': columns {sorted(need)} expected, found {reader.fieldnames}")
        return [row for row in reader]


def covost2_supervisions(rows: Sequence[dict], recordings: dict, src_lang: str, tgt_lang: str) -> list:
    """Supervisions of the schema for CoVoST 2 rows whose clip is in ``recordings``
    ({clip file name: Recording}); rows without a clip are skipped."""
    from lhotse import SupervisionSegment

    out = []
    for row in rows:
        rec = recordings.get(row["path"])
        if rec is None:
            continue
        sup = SupervisionSegment(id=rec.id, recording_id=rec.id, start=0.0, duration=rec.duration, channel=0,
                                 text=row["sentence"].strip(), language=src_lang,
                                 speaker=(row.get("client_id") or "")[:16] or None)
        trans = (row.get("translation") or "").strip()
        out.append(with_translations(sup, [{"language": tgt_lang, "text": trans}] if trans else []))
    return out


def prepare_covost2(clips_dir: str | Path, tsv_dir: str | Path, src_lang: str, tgt_lang: str, out_dir: str | Path,
                    splits: Sequence[str] = ("train", "dev", "test"), jobs: int = 2) -> dict:
    """Manifests ``covost2_{recordings,supervisions}_<src>-<tgt>_<split>.jsonl.gz`` from Common
    Voice clips and the CoVoST 2 tables ``covost_v2.<src>_<tgt>.<split>.tsv``. Clips a table names
    but the folder lacks are skipped with a count (Common Voice releases differ)."""
    from concurrent.futures import ThreadPoolExecutor

    from lhotse import Recording, RecordingSet, SupervisionSet

    from auden_kit.io import save_cuts_atomic

    clips_dir, tsv_dir, out_dir = Path(clips_dir), Path(tsv_dir), Path(out_dir)
    if not clips_dir.is_dir():
        raise UserError(f"CoVoST 2: clips folder '{clips_dir}' does not exist (Common Voice's clips/ of {src_lang})")
    out = {}
    for split in splits:
        rows = read_covost2_tsv(tsv_dir / f"covost_v2.{src_lang}_{tgt_lang}.{split}.tsv", src_lang, tgt_lang)
        present = [r for r in rows if (clips_dir / r["path"]).is_file()]
        if len(present) < len(rows):
            missing = next(r["path"] for r in rows if not (clips_dir / r["path"]).is_file())
            log.warning("%d of %d clips of %s are not in '%s' (e.g. '%s'); skipped", len(rows) - len(present),
                        len(rows), split, clips_dir, missing)
        if not present:
            raise UserError(f"CoVoST 2 {split}: none of the {len(rows)} clips is in '{clips_dir}'")

        def read(row):
            try:
                return row["path"], Recording.from_file(clips_dir / row["path"], recording_id=Path(row["path"]).stem)
            except Exception as e:  # noqa: BLE001 - any unreadable clip is named
                raise UserError(f"CoVoST 2: cannot read clip '{clips_dir / row['path']}' ({e})") from None

        with ThreadPoolExecutor(max(1, jobs)) as ex:
            recs = dict(ex.map(read, present))
        sups = covost2_supervisions(present, recs, src_lang, tgt_lang)
        pair = f"{src_lang}-{tgt_lang}"
        save_cuts_atomic(RecordingSet.from_recordings(recs.values()), out_dir / f"covost2_recordings_{pair}_{split}.jsonl.gz")
        sp = out_dir / f"covost2_supervisions_{pair}_{split}.jsonl.gz"
        save_cuts_atomic(SupervisionSet.from_segments(sups), sp)
        out[split] = sp
    return out
