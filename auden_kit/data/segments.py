"""Speaker segments of recordings: from cuts, and in the field's file formats.

* RTTM (NIST; md-eval, pyannote, dscore): ``SPEAKER <rec> 1 <start> <dur> <NA> <NA> <spk> <NA> <NA>``
* STM (NIST sclite, asclite): ``<rec> <channel> <spk> <start> <end> <transcript>``
* SegLST (CHiME-7/8, MeetEval): a JSON list of ``{session_id, speaker, start_time, end_time, words}``
* text: ``[start - end] speaker: words`` (``speaker (m|f):`` with a predicted gender), one line per
  segment (what ``auden-kit decode`` prints); RTTM's speaker-type field and SegLST's ``gender``
  carry the gender too
* TagSpeech's serialised form: the text lines, then each speaker's time ranges

Readers raise :class:`UserError` naming the file and line; writers are atomic.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from auden_kit.errors import UserError
from auden_kit.io import atomic_write_text
from auden_kit.results import Segment

FORMATS = ("text", "rttm", "stm", "json", "tagspeech")


def gender_code(g) -> str:
    """"m" / "f" from a manifest's gender ("M", "male", "F", "female", any case); "" otherwise."""
    g = str(g or "").strip().lower()
    return "m" if g in ("m", "male") else "f" if g in ("f", "female") else ""


def cut_segments(cut) -> list[Segment]:
    """The supervisions of a cut (any kind, MixedCuts included) as segments relative to the cut
    start, clipped to it, in time order."""
    out = []
    for s in cut.supervisions:
        a, b = max(0.0, s.start), min(cut.duration, s.end)
        if b <= a:
            continue
        out.append(Segment(round(a, 3), round(b, 3), str(s.speaker if s.speaker is not None else "spk"),
                           (s.text or "").strip(), gender_code(s.gender)))
    return sorted(out, key=lambda x: (x.start, x.end))


@dataclasses.dataclass
class SegmentFilter:
    """TagSpeech's training-data filter (arXiv 2601.06896; there: 0.5-30 s, 30 chars/s, 10
    segments): a window is kept when each of its segments lasts ``min_segment`` to
    ``max_segment`` seconds and speaks at most ``max_chars_per_second`` (spaces not counted), and
    it holds at most ``max_segments`` segments. A bound of 0 is off (the default: keep all).
    Segments are taken whole, as annotated (not clipped to the window), so a window edge does not
    turn a normal segment into a "too short" one."""

    min_segment: float = 0.0
    max_segment: float = 0.0
    max_chars_per_second: float = 0.0
    max_segments: int = 0

    def check(self, key: str):  # (not validate(): the key depends on where the filter sits in a config)
        for k in ("min_segment", "max_segment", "max_chars_per_second", "max_segments"):
            if getattr(self, k) < 0:
                raise UserError(f"config key '{key}.{k}' must be >= 0 (0: off), got {getattr(self, k)}")
        if self.max_segment and self.min_segment > self.max_segment:
            raise UserError(f"config keys '{key}.min_segment' ({self.min_segment}) > '{key}.max_segment' "
                            f"({self.max_segment}): nothing would be kept")

    @property
    def active(self) -> bool:
        return bool(self.min_segment or self.max_segment or self.max_chars_per_second or self.max_segments)

    def why_not(self, cut) -> str:
        """Why ``cut`` is dropped ('' when it is kept)."""
        sups = [s for s in cut.supervisions if s.end > 0 and s.start < cut.duration]
        if self.max_segments and len(sups) > self.max_segments:
            return f"{len(sups)} segments > {self.max_segments}"
        for s in sups:
            if s.duration < self.min_segment or (self.max_segment and s.duration > self.max_segment):
                return f"segment '{s.id}' lasts {s.duration:.2f} s (outside {self.min_segment}-{self.max_segment or 'inf'} s)"
            chars = len((s.text or "").replace(" ", ""))
            if self.max_chars_per_second and chars > self.max_chars_per_second * max(s.duration, 1e-3):
                return f"segment '{s.id}' speaks {chars / max(s.duration, 1e-3):.1f} chars/s (> {self.max_chars_per_second})"
        return ""

    def __call__(self, cut) -> bool:
        return not self.why_not(cut)


def _fmt_time(t: float) -> str:
    return f"{t:.2f}"


STYPE = {"m": "adult_male", "f": "adult_female"}  # RTTM's speaker-type field
GENDER_OF_STYPE = {v: k for k, v in STYPE.items()}


def to_rttm(rec_id: str, segs: Sequence[Segment]) -> str:
    return "".join(f"SPEAKER {rec_id} 1 {s.start:.3f} {s.end - s.start:.3f} <NA> {STYPE.get(s.gender, '<NA>')} "
                   f"{s.speaker} <NA> <NA>\n" for s in segs)


def to_stm(rec_id: str, segs: Sequence[Segment]) -> str:
    return "".join(f"{rec_id} 1 {s.speaker} {s.start:.3f} {s.end:.3f} {s.text}\n" for s in segs)


def to_seglst(rec_id: str, segs: Sequence[Segment]) -> list[dict]:
    return [{"session_id": rec_id, "speaker": s.speaker, "start_time": round(s.start, 3),
             "end_time": round(s.end, 3), "words": s.text, **({"gender": s.gender} if s.gender else {})} for s in segs]


#: what a text line shows for a segment whose words were not read (a second talker in overlapped
#: speech, which the single-talker ASR reads as one stream): the speaker is there, the words not
NO_WORDS = "(speech, no words read)"


def to_text(segs: Sequence[Segment]) -> str:
    return "".join(f"[{_fmt_time(s.start)} - {_fmt_time(s.end)}] {s.speaker}{f' ({s.gender})' if s.gender else ''}: "
                   f"{s.text or NO_WORDS}\n" for s in segs)


def to_tagspeech(segs: Sequence[Segment]) -> str:
    """TagSpeech's output layout: time-stamped speaker lines, then per-speaker time ranges."""
    spans: dict[str, list[str]] = {}
    for s in segs:
        spans.setdefault(s.speaker, []).append(f"{_fmt_time(s.start)}-{_fmt_time(s.end)}")
    return to_text(segs) + "".join(f"{k}: {', '.join(v)}\n" for k, v in spans.items())


def render_segments(recordings: Mapping[str, Sequence[Segment]], fmt: str) -> str:
    """Every recording's segments as text in ``fmt`` (see :data:`FORMATS`)."""
    if fmt not in FORMATS:
        raise UserError(f"unknown segment format '{fmt}' (choose from {', '.join(FORMATS)})")
    if fmt == "json":
        rows = [r for rid, segs in recordings.items() for r in to_seglst(rid, segs)]
        return json.dumps(rows, indent=1, ensure_ascii=False) + "\n"
    if fmt in ("text", "tagspeech"):
        fn = to_text if fmt == "text" else to_tagspeech
        return "".join(f"# {rid}\n{fn(segs)}" for rid, segs in recordings.items())
    fn = to_rttm if fmt == "rttm" else to_stm
    return "".join(fn(rid, segs) for rid, segs in recordings.items())


def write_segments(path, recordings: Mapping[str, Sequence[Segment]], fmt: str) -> None:
    """Write every recording's segments to ``path`` in ``fmt`` (atomically)."""
    atomic_write_text(path, render_segments(recordings, fmt))


def _bad(path, lineno: int, line: str, what: str) -> UserError:
    return UserError(f"{path}, line {lineno}: {what}: {line.strip()[:120]!r}")


def _times(path, k: int, line: str, f: list[str], what: str) -> tuple[float, float]:
    """Fields 4 and 5 of a line (RTTM and STM keep their times there) as numbers."""
    try:
        return float(f[3]), float(f[4])
    except ValueError:
        raise _bad(path, k, line, f"{what} (fields 4, 5) must be numbers") from None


def _in_order(out: dict) -> dict[str, list[Segment]]:
    return {r: sorted(v, key=lambda s: (s.start, s.end)) for r, v in out.items()}


def read_rttm(path) -> dict[str, list[Segment]]:
    """{recording id: segments} from an RTTM file (SPEAKER lines; others are skipped)."""
    out: dict[str, list[Segment]] = {}
    for k, line in enumerate(Path(path).read_text().splitlines(), 1):
        f = line.split()
        if not f or f[0] != "SPEAKER":
            continue
        if len(f) < 8:
            raise _bad(path, k, line, "an RTTM SPEAKER line has at least 8 fields")
        start, dur = _times(path, k, line, f, "start and duration")
        end = round(start + dur, 6)  # 9.2 + 0.6 is 9.8, not 9.799999999999999
        out.setdefault(f[1], []).append(Segment(start, end, f[7], gender=GENDER_OF_STYPE.get(f[6], "")))
    return _in_order(out)


def read_stm(path) -> dict[str, list[Segment]]:
    """{recording id: segments} from an STM file (``;;`` comments skipped; a ``<label>`` field
    after the times is dropped)."""
    out: dict[str, list[Segment]] = {}
    for k, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip() or line.startswith(";;"):
            continue
        f = line.split()
        if len(f) < 5:
            raise _bad(path, k, line, "an STM line has at least 5 fields (rec channel speaker start end)")
        start, end = _times(path, k, line, f, "start and end")
        words = f[5:]
        if words and words[0].startswith("<") and words[0].endswith(">"):
            words = words[1:]
        out.setdefault(f[0], []).append(Segment(start, end, f[2], " ".join(words)))
    return _in_order(out)


def read_seglst(path) -> dict[str, list[Segment]]:
    try:
        rows = json.loads(Path(path).read_text())
        out: dict[str, list[Segment]] = {}
        for r in rows:
            out.setdefault(str(r["session_id"]), []).append(
                Segment(float(r["start_time"]), float(r["end_time"]), str(r["speaker"]), str(r.get("words", "")),
                        gender_code(r.get("gender"))))
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"{path}: not a SegLST file (a JSON list of session_id, speaker, start_time, end_time, "
                        f"words): {e}") from None
    return _in_order(out)


def read_segments(path) -> dict[str, list[Segment]]:
    """RTTM, STM or SegLST by file name (``.rttm``, ``.stm``, ``.json``)."""
    p = str(path)
    if not Path(p).is_file():
        raise UserError(f"segment file '{p}' does not exist")
    if p.endswith(".rttm"):
        return read_rttm(p)
    if p.endswith(".stm"):
        return read_stm(p)
    if p.endswith(".json"):
        return read_seglst(p)
    raise UserError(f"'{p}': give an .rttm, .stm or .json (SegLST) file")


def cuts_segments(cuts: Iterable) -> dict[str, list[Segment]]:
    return {c.id: cut_segments(c) for c in cuts}
