"""Typed inference results, one kind per family of outputs.

Every result has ``cut_id`` (the file name, or the cut id of a manifest), a ``to_dict()`` for
JSON output, and a ``merge`` that stitches the results of consecutive pieces of one long
recording (pieces are (offset in seconds, result)).

* :class:`TextResult`            text, token pieces and their times (ASR, transcripts)
* :class:`TranslationResult`     translation with its transcript and languages (speech translation)
* :class:`ClassificationResult`  per head: labels with probabilities (speaker, gender, emotion...)
* :class:`EmbeddingResult`       a fixed-size vector (speaker embeddings)
* :class:`SegmentsResult`        time-stamped speaker segments with text (diarized ASR)
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence


@dataclasses.dataclass
class Result:
    cut_id: str

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def merge(cls, pieces: Sequence[tuple[float, "Result"]], cut_id: str) -> "Result":
        if len(pieces) == 1:
            return dataclasses.replace(pieces[0][1], cut_id=cut_id)
        raise NotImplementedError(f"{cls.__name__} results of a long recording cannot be stitched")


@dataclasses.dataclass
class TextResult(Result):
    """Hypothesis ``text``, its token pieces and their start times in seconds; ``ref`` when known."""

    text: str = ""
    tokens: list = dataclasses.field(default_factory=list)
    times: list = dataclasses.field(default_factory=list)
    ref: Optional[str] = None
    ref_words: Optional[list] = None  # the reference's word alignment [(word, start, end)] when the cut has one

    def to_dict(self) -> dict:
        d = {"id": self.cut_id, "text": self.text, "tokens": self.tokens, "times": self.times}
        if self.ref is not None:
            d["ref"] = self.ref
        return d

    @classmethod
    def merge(cls, pieces, cut_id):
        texts, tokens, times = [], [], []
        for offset, r in pieces:
            if r.text:
                texts.append(r.text)
            tokens += r.tokens
            times += [round(offset + t, 3) for t in r.times]
        refs = [r.ref for _, r in pieces if r.ref]
        return cls(cut_id=cut_id, text=" ".join(texts), tokens=tokens, times=times,
                   ref=" ".join(refs) if refs else None)


@dataclasses.dataclass
class TranslationResult(Result):
    """``text`` in ``tgt_lang``, translated from speech in ``src_lang`` (identified with
    probability ``src_lang_prob`` unless forced), with the ``transcript`` of the same audio;
    ``ref`` / ``ref_transcript`` / ``ref_src_lang`` when known."""

    text: str = ""
    transcript: str = ""
    src_lang: str = ""
    tgt_lang: str = ""
    src_lang_prob: float = 1.0
    tokens: list = dataclasses.field(default_factory=list)
    ref: Optional[str] = None
    ref_transcript: Optional[str] = None
    ref_src_lang: Optional[str] = None

    def to_dict(self) -> dict:
        d = {"id": self.cut_id, "text": self.text, "transcript": self.transcript, "src_lang": self.src_lang,
             "src_lang_prob": round(self.src_lang_prob, 4), "tgt_lang": self.tgt_lang, "tokens": self.tokens}
        for k in ("ref", "ref_transcript", "ref_src_lang"):
            if getattr(self, k) is not None:
                d[k] = getattr(self, k)
        return d

    @classmethod
    def merge(cls, pieces, cut_id):
        """Pieces of one recording: texts joined; the source language of the longest text."""
        rs = [r for _, r in pieces]
        main = max(rs, key=lambda r: len(r.transcript))

        def join(attr):
            vals = [getattr(r, attr) for r in rs if getattr(r, attr)]
            return " ".join(vals) if vals else None

        return cls(cut_id=cut_id, text=join("text") or "", transcript=join("transcript") or "",
                   src_lang=main.src_lang, tgt_lang=main.tgt_lang, src_lang_prob=main.src_lang_prob,
                   tokens=[t for r in rs for t in r.tokens], ref=join("ref"), ref_transcript=join("ref_transcript"),
                   ref_src_lang=main.ref_src_lang)


@dataclasses.dataclass
class ClassificationResult(Result):
    """``labels``: {head: [(label, probability), ...] best first}; ``refs``: {head: label}."""

    labels: dict = dataclasses.field(default_factory=dict)
    refs: dict = dataclasses.field(default_factory=dict)

    def best(self, head: str) -> str:
        return self.labels[head][0][0]

    def to_dict(self) -> dict:
        d = {"id": self.cut_id, **{h: [{"label": lab, "prob": round(p, 4)} for lab, p in v]
                                  for h, v in self.labels.items()}}
        if self.refs:
            d["refs"] = self.refs
        return d

    @classmethod
    def merge(cls, pieces, cut_id):
        """Duration-unaware average of the pieces' probabilities, per head."""
        heads: dict[str, dict[str, float]] = {}
        for _, r in pieces:
            for h, v in r.labels.items():
                acc = heads.setdefault(h, {})
                for lab, p in v:
                    acc[lab] = acc.get(lab, 0.0) + p / len(pieces)
        return cls(cut_id=cut_id, labels={h: sorted(acc.items(), key=lambda kv: -kv[1]) for h, acc in heads.items()},
                   refs=pieces[0][1].refs)


@dataclasses.dataclass
class EmbeddingResult(Result):
    embedding: list = dataclasses.field(default_factory=list)
    weight: float = 1.0  # seconds of audio behind it (for averaging pieces)

    @staticmethod
    def weighted_mean(pieces) -> tuple[list, float]:
        """Duration-weighted mean of the pieces' embeddings, and their total duration."""
        total = sum(r.weight for _, r in pieces)
        dim = len(pieces[0][1].embedding)
        return [sum(r.embedding[i] * r.weight for _, r in pieces) / total for i in range(dim)], total

    @classmethod
    def merge(cls, pieces, cut_id):
        emb, total = cls.weighted_mean(pieces)
        return cls(cut_id=cut_id, embedding=emb, weight=total)


@dataclasses.dataclass
class Segment:
    start: float
    end: float
    speaker: str
    text: str = ""
    gender: str = ""  # "m", "f" or "" (unknown / not predicted)


def _seg_dicts(segs) -> list:
    return [{"start": round(s.start, 3), "end": round(s.end, 3), "speaker": s.speaker, "text": s.text,
             **({"gender": s.gender} if s.gender else {})} for s in segs]


def shift_segments(segs: list, offset: float) -> list:
    """``segs`` with ``offset`` seconds added to their times (a piece's times -> the recording's)."""
    return [dataclasses.replace(s, start=round(s.start + offset, 3), end=round(s.end + offset, 3)) for s in segs]


@dataclasses.dataclass
class SegmentsResult(Result):
    """Who spoke what and when: ``segments`` ([:class:`Segment`] in time order); ``refs`` the
    reference segments when known; ``embeddings`` {speaker: voice embedding} (links speakers of
    the windows of a long recording); ``tokens`` the decoder's raw output; ``failed`` True when
    the output could not be used (scored as a complete miss, never dropped)."""

    segments: list = dataclasses.field(default_factory=list)
    refs: Optional[list] = None
    embeddings: dict = dataclasses.field(default_factory=dict)
    tokens: list = dataclasses.field(default_factory=list)
    failed: bool = False

    @property
    def speakers(self) -> list[str]:
        return sorted({s.speaker for s in self.segments})

    @property
    def text(self) -> str:
        return " ".join(s.text for s in self.segments if s.text)

    def to_dict(self) -> dict:
        d = {"id": self.cut_id, "segments": _seg_dicts(self.segments), "speakers": self.speakers}
        if self.refs is not None:
            d["refs"] = _seg_dicts(self.refs)
        if self.failed:
            d["failed"] = True
        return d

    @classmethod
    def merge(cls, pieces, cut_id):
        """Global times, speaker labels as they are (tasks that can link speakers across pieces
        override this: see ``TagSpeechTask.merge``)."""
        segs = [s for off, r in pieces for s in shift_segments(r.segments, off)]
        refs = [s for off, r in pieces for s in shift_segments(r.refs or [], off)]
        return cls(cut_id=cut_id, segments=segs, refs=refs or None, failed=any(r.failed for _, r in pieces))
