"""Manifest validation: find every problem (up to a limit), each naming its cut id.

Checks: unreadable lines, duplicate cut/recording/supervision ids, missing or
unreadable audio, sample-rate and length mismatches between the manifest and
the file, non-positive durations, empty text, supervisions outside their cut
or recording, missing feature archives, malformed translations (the speech-translation schema of
:mod:`auden_kit.data.translation`).
"""

from __future__ import annotations

import gzip
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from auden_kit.data.translation import check_fields

log = logging.getLogger(__name__)


@dataclass
class Problem:
    where: str  # cut id (or "line N" when the line itself is broken)
    what: str

    def __str__(self):
        return f"{self.where}: {self.what}"


def _open(path: Path):
    return gzip.open(path, "rt") if path.suffix == ".gz" else open(path)


def _read_fully(f: Path, promised: int) -> str | None:
    """Decode every sample of ``f``; None when all is well, else what is wrong."""
    import numpy as np
    import soundfile as sf

    try:
        data, _ = sf.read(str(f), dtype="float32", always_2d=True)
    except Exception as e:  # noqa: BLE001 - corrupt data past a good header
        return f"audio file '{f}' cannot be decoded ({e})"
    from auden_kit.data.audio import _promised_frames

    header = _promised_frames(f) or promised
    if data.shape[0] < header:
        return f"audio file '{f}' is truncated: its header promises {header} samples, it holds {data.shape[0]}"
    if not np.isfinite(data).all():
        return f"audio file '{f}' holds non-finite samples (NaN or inf)"
    return None


def _check_audio(rec: dict, cid: str, check_audio: bool, cache: dict, decode: bool = False) -> list[Problem]:
    out = []
    rid = rec.get("id", "?")
    if rec.get("duration", 0) <= 0:
        out.append(Problem(cid, f"recording '{rid}' has non-positive duration {rec.get('duration')}"))
    if not check_audio:
        return out
    for src in rec.get("sources", []):
        if src.get("type") != "file":
            continue
        f = Path(src["source"])
        key = str(f)
        if key not in cache:
            if not f.is_file():
                cache[key] = f"audio file '{f}' is missing"
            else:
                try:
                    import soundfile as sf

                    info = sf.info(str(f))
                    cache[key] = (info.samplerate, info.frames)
                    if decode:
                        cache[key] = _read_fully(f, info.frames) or cache[key]
                except Exception as e:
                    cache[key] = f"audio file '{f}' cannot be read ({e})"
        got = cache[key]
        if isinstance(got, str):
            out.append(Problem(cid, got))
            continue
        sr, frames = got
        if rec.get("sampling_rate") and sr != rec["sampling_rate"]:
            out.append(Problem(cid, f"sample-rate mismatch: manifest says {rec['sampling_rate']} Hz, "
                                    f"'{f}' is {sr} Hz (re-create the manifest)"))
        elif rec.get("num_samples") and not rec.get("transforms") and abs(frames - rec["num_samples"]) > 0.01 * sr:
            out.append(Problem(cid, f"length mismatch: manifest says {rec['num_samples']} samples, "
                                    f"'{f}' has {frames}"))
    return out


def _check_features(obj: dict, cid: str) -> list[Problem]:
    import numpy as np
    from lhotse.cut import Cut

    try:
        feats = Cut.from_dict(obj).load_features()
    except Exception as e:  # noqa: BLE001
        return [Problem(cid, f"features cannot be loaded ({e})")]
    if not np.isfinite(feats).all():
        return [Problem(cid, "features hold non-finite values")]
    return []


def _kind(obj: dict) -> str:
    if "sources" in obj:
        return "recording"
    if "recording_id" in obj and "recording" not in obj and "features" not in obj:
        return "supervision"
    return "cut"


def _iter_json(path: Path, problems: list[Problem]):
    try:
        with _open(path) as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    yield lineno, json.loads(line)
                except json.JSONDecodeError as e:
                    problems.append(Problem(f"{path.name} line {lineno}", f"not valid JSON ({e})"))
    except (OSError, EOFError) as e:
        problems.append(Problem(str(path), f"cannot read manifest ({e})"))


def _check_supervision(s: dict, cid: str, dur: float | None, require_text: bool, seen: set) -> list[Problem]:
    out = []
    sid = s.get("id", "?")
    if sid in seen:
        out.append(Problem(cid, f"duplicate supervision id '{sid}'"))
    seen.add(sid)
    if require_text and not (s.get("text") or "").strip():
        out.append(Problem(cid, f"supervision '{sid}' has empty text"))
    bad = check_fields(s.get("custom"), s.get("language"))
    if bad:
        out.append(Problem(cid, f"supervision '{sid}' {bad}"))
    s0, sd = s.get("start", 0), s.get("duration", 0)
    if sd <= 0:
        out.append(Problem(cid, f"supervision '{sid}' has non-positive duration {sd}"))
    if dur is not None and (s0 < -1e-3 or s0 + sd > dur + 1e-3):
        out.append(Problem(cid, f"supervision '{sid}' [{s0:.2f}, {s0 + sd:.2f}] s lies outside "
                                f"its cut/recording (0, {dur:.2f}) s"))
    for kind, items in (s.get("alignment") or {}).items():  # word/phone times (recording clock)
        last = -1e-3
        for i, a in enumerate(items or []):
            st, d = (a[1], a[2]) if isinstance(a, (list, tuple)) else (a.get("start", 0), a.get("duration", 0))
            if st < last - 1e-3 or d < 0 or st < -1e-3:
                out.append(Problem(cid, f"supervision '{sid}' {kind} alignment item {i} ({st}, duration {d}) is "
                                        "negative or out of order: items must be sorted by start, with "
                                        "non-negative durations"))
                break
            last = st
    return out


def _flat_tracks(obj: dict, offset: float = 0.0):
    """(track cut, absolute offset) of a MixedCut's tracks, nested MixedCuts flattened."""
    for t in obj.get("tracks") or []:
        c, off = t.get("cut") or {}, offset + float(t.get("offset", 0.0))
        if "tracks" in c:
            yield from _flat_tracks(c, off)
        else:
            yield c, off


def _check_mixed(obj: dict, cid: str, check_audio: bool, audio_cache: dict, decode: bool, require_text: bool,
                 seen: set) -> list[Problem]:
    """A MixedCut (simulated meetings, noise mixes): every track's audio, and every supervision
    of every track inside the mixture once shifted by the track's offset."""
    out: list[Problem] = []
    tracks = list(_flat_tracks(obj))
    if not tracks:
        return [Problem(cid, "MixedCut has no tracks")]
    dur = 0.0
    sups = []
    for k, (c, off) in enumerate(tracks):
        d = c.get("duration", 0)
        if not isinstance(d, (int, float)) or d <= 0:
            out.append(Problem(cid, f"track {k} ('{c.get('id')}') has non-positive duration {d}"))
            continue
        dur = max(dur, off + d)
        if c.get("recording") is not None:
            out += _check_audio(c["recording"], f"{cid} track {k}", check_audio, audio_cache, decode)
        sups += [{**sv, "start": sv.get("start", 0) + off} for sv in c.get("supervisions", [])]
    if require_text and not sups:
        out.append(Problem(cid, "MixedCut has no supervision"))
    for sv in sups:
        out += _check_supervision(sv, cid, dur, require_text, seen)
    return out


def validate_manifests(paths, check_audio: bool = True, require_text: bool = True,
                       limit: int = 100, decode: bool = False) -> tuple[int, list[Problem]]:
    """Validate Lhotse manifests: cuts, recordings or supervisions (jsonl[.gz]).

    Recordings given alongside supervisions are cross-checked (unknown recording
    ids, supervisions past the end of their recording). Problems name the cut id
    (or the recording/supervision id). With ``decode`` every audio file is decoded in full
    and every cut's features are loaded (slow; finds damage past a good header).
    Returns (items read, problems).
    """
    problems: list[Problem] = []
    recordings: dict[str, dict] = {}
    supervisions: list[dict] = []
    seen_cuts: set[str] = set()
    seen_recs: set[str] = set()
    seen_sups: set[str] = set()
    audio_cache: dict = {}
    n = 0
    for path in [Path(p) for p in paths]:
        if not path.is_file():
            problems.append(Problem(str(path), "manifest file does not exist"))
            continue
        for lineno, obj in _iter_json(path, problems):
            if len(problems) >= limit:
                return n, problems[:limit]
            n += 1
            kind = _kind(obj)
            if kind == "recording":
                rid = obj.get("id", f"line {lineno}")
                if rid in seen_recs:
                    problems.append(Problem(rid, "duplicate recording id"))
                seen_recs.add(rid)
                recordings[rid] = obj
                problems += _check_audio(obj, rid, check_audio, audio_cache, decode)
                continue
            if kind == "supervision":
                supervisions.append(obj)
                continue
            cid = obj.get("id", f"line {lineno}")
            if cid in seen_cuts:
                problems.append(Problem(cid, "duplicate cut id"))
            seen_cuts.add(cid)
            if "tracks" in obj:  # a MixedCut: its tracks' cuts, shifted by their offsets
                problems += _check_mixed(obj, cid, check_audio, audio_cache, decode, require_text, seen_sups)
                continue
            dur = obj.get("duration", 0)
            if not isinstance(dur, (int, float)) or dur <= 0:
                problems.append(Problem(cid, f"non-positive duration {dur}"))
                dur = None
            rec = obj.get("recording")
            if rec is not None:
                problems += _check_audio(rec, cid, check_audio, audio_cache, decode)
                start = obj.get("start", 0)
                if dur and rec.get("duration") and start + dur > rec["duration"] + 1e-3:
                    problems.append(Problem(cid, f"cut [{start:.2f}, {start + dur:.2f}] s runs past its "
                                                 f"recording '{rec.get('id')}' ({rec['duration']:.2f} s)"))
            elif obj.get("features") is None:
                problems.append(Problem(cid, "cut has neither a recording nor features"))
            feats = obj.get("features")
            if feats and check_audio and feats.get("storage_path"):
                sp = Path(feats["storage_path"])
                if not sp.exists():
                    problems.append(Problem(cid, f"feature archive '{sp}' is missing"))
                elif decode:
                    problems += _check_features(obj, cid)
            sups = obj.get("supervisions", [])
            if require_text and not sups:
                problems.append(Problem(cid, "cut has no supervision"))
            for s in sups:
                problems += _check_supervision(s, cid, dur, require_text, seen_sups)
    for s in supervisions:
        rid = s.get("recording_id")
        rec = recordings.get(rid)
        where = s.get("id", "?")
        if recordings and rec is None:
            problems.append(Problem(where, f"supervision refers to unknown recording '{rid}'"))
        problems += _check_supervision(s, where, rec.get("duration") if rec else None, require_text, seen_sups)
    if n == 0 and not problems:
        problems.append(Problem(", ".join(str(p) for p in paths), "the manifest(s) hold no items"))
    return n, problems[:limit]
