"""Word timing: how close a recogniser's word start times are to a reference alignment.

The reference is a cut's word alignment (``supervision.alignment["word"]``: what ``lhotse prepare
librispeech`` reads from LibriSpeech-Alignments/MFA files, and what the synthesized corpora store
from the synthesizer itself). Hypothesis words start at the time of their first token piece
(SentencePiece's ``▁`` marks a word start). Hypothesis and reference words are matched by the same
edit-distance alignment as the WER; only correctly recognised words are timed. Reported: the
number timed, mean and median absolute start error, the mean signed error (a transducer emits
late: a positive bias) and the share within 0.1 s and 0.2 s.
"""

from __future__ import annotations

import statistics

WORD_START = "\u2581"


def aligned_items(cut, kind: str) -> list[tuple[str, float, float]]:
    """(symbol, start, end) of the ``kind`` alignment (``word``, ``phone``) of the cut's
    supervisions, in seconds from the cut's start (Lhotse keeps alignment times on the
    recording's clock), gaps (empty symbols) left out, sorted by start."""
    out = []
    for s in cut.supervisions:
        for a in (s.alignment or {}).get(kind, []):
            if a.symbol:
                out.append((a.symbol, a.start - cut.start, a.start - cut.start + a.duration))
    return sorted(out, key=lambda x: x[1])


def hyp_word_starts(tokens: list[str], times: list[float]) -> list[float]:
    """Start time of every word of a hypothesis: the time of each piece that begins a word."""
    return [t for p, t in zip(tokens, times) if p.startswith(WORD_START) and p != WORD_START] \
        if any(p.startswith(WORD_START) for p in tokens) else []


def word_timing(items) -> dict:
    """``items``: (reference [(word, start, end)], hypothesis words, their start times). Returns
    {} when nothing could be timed."""
    import kaldialign

    errors = []
    for ref, hyp_words, hyp_starts in items:
        if not ref or len(hyp_words) != len(hyp_starts):
            continue
        ri = hi = 0
        for a, b in kaldialign.align([w for w, _, _ in ref], list(hyp_words), "*"):
            if a != "*" and b != "*" and a == b:
                errors.append(hyp_starts[hi] - ref[ri][1])
            ri += a != "*"
            hi += b != "*"
    if not errors:
        return {}
    absolute = [abs(e) for e in errors]
    return {"timed_words": len(errors), "mean_abs_ms": round(1000 * statistics.fmean(absolute), 1),
            "median_abs_ms": round(1000 * statistics.median(absolute), 1),
            "bias_ms": round(1000 * statistics.fmean(errors), 1),
            "within_100ms": round(100 * sum(e <= 0.1 for e in absolute) / len(errors), 2),
            "within_200ms": round(100 * sum(e <= 0.2 for e in absolute) / len(errors), 2)}


def timing_summary(t: dict) -> str:
    return (f"word start vs reference alignment: mean |error| {t['mean_abs_ms']:.0f} ms, median "
            f"{t['median_abs_ms']:.0f} ms, bias {t['bias_ms']:+.0f} ms, {t['within_100ms']:.1f} % within 0.1 s, "
            f"{t['within_200ms']:.1f} % within 0.2 s ({t['timed_words']} correct words timed)")
