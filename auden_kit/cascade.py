"""The cascade baseline for diarized ASR: who spoke when (voice embeddings of short windows,
clustered), then what (the ASR model on each speaker turn). The same segments, formats and
metrics as the one-model ``tagspeech`` task, for comparison in the same run.

1. Speech regions: the energy detector of :func:`auden_kit.data.pauses.speech_segments`.
2. Windows of ``window`` seconds every ``hop`` seconds over each region (a short region is one
   window); each embedded by the voice model (its utterance embedding, L2-normalised).
3. Agglomerative clustering (:func:`auden_kit.clustering.agglomerate`: average linkage, cosine
   distance) cut at ``threshold``: the number of speakers is estimated (or fixed with
   ``num_speakers``). Long recordings of the ``tagspeech`` task link their windows' speakers with
   the same function.
4. Every 10 ms frame of speech takes the label of the window whose centre is nearest; runs of
   one label are the speaker turns (one speaker at a time: overlapped speech is the cascade's
   known weakness).
5. The ASR model transcribes each turn.

:func:`tune_threshold` chooses the clustering threshold on a dev set (lowest DER), embedding each
recording once and clustering it at every candidate.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from auden_kit.clustering import agglomerate
from auden_kit.errors import UserError
from auden_kit.results import Segment, SegmentsResult


@dataclasses.dataclass
class CascadeOptions:
    window: float = 1.5
    hop: float = 0.75
    threshold: float = 0.6  # cosine distance at which clusters stop merging
    num_speakers: int = 0  # 0: estimated
    min_turn: float = 0.3  # turns shorter than this join their neighbour

    def validate(self):
        if self.window <= 0 or self.hop <= 0 or self.hop > self.window:
            raise UserError(f"--window and --hop must be positive with hop <= window, got {self.window}, {self.hop}")
        if not 0 < self.threshold < 2:
            raise UserError(f"--threshold is a cosine distance in (0, 2), got {self.threshold}")
        if self.num_speakers < 0:
            raise UserError(f"--num-speakers must be >= 0, got {self.num_speakers}")


def window_embeddings(wav: torch.Tensor, rate: int, voice, opts: CascadeOptions):
    """Steps 1-2: the speech regions (sample ranges), the windows over them (sample ranges) and
    their L2-normalised embeddings, one row per window (``None`` when there is no speech)."""
    from auden_kit.data.pauses import speech_segments

    regions = speech_segments(wav, rate, max_seconds=1e9, min_pause=0.2)
    win, hop = int(opts.window * rate), int(opts.hop * rate)
    spans = []
    for a, b in regions:
        if b - a < int(0.2 * rate):
            continue
        starts = list(range(a, max(a + 1, b - win + 1), hop)) or [a]
        if starts[-1] + win < b:
            starts.append(max(a, b - win))
        spans += [(s, min(b, s + win)) for s in starts]
    if not spans:
        return None
    emb = np.stack([np.asarray(r.embedding, dtype=np.float64) for r in voice.infer([wav[a:b] for a, b in spans], rate)])
    emb /= np.linalg.norm(emb, axis=1, keepdims=True) + 1e-9
    return regions, spans, emb


def speaker_turns(windows, rate: int, opts: CascadeOptions, threshold: float) -> list[list]:
    """Steps 3-4 at one clustering threshold: [start s, end s, label] per speaker turn."""
    if windows is None:
        return []
    regions, spans, emb = windows
    labels = np.array(agglomerate(emb, 1.0 - threshold, num_speakers=opts.num_speakers), dtype=int)
    centres = np.array([(a + b) / 2 for a, b in spans]) / rate
    turns: list[list] = []
    for a, b in regions:
        t = np.arange(a / rate, b / rate, 0.01)
        if len(t) == 0:
            continue
        near = labels[np.abs(t[:, None] - centres[None, :]).argmin(1)]
        cuts = np.flatnonzero(np.diff(near)) + 1
        for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, len(t)]):
            turns.append([float(t[lo]), float(t[hi - 1] + 0.01), int(near[lo])])
    merged: list[list] = []
    for tr in turns:  # slivers join the previous turn when it touches
        if merged and (tr[2] == merged[-1][2] or tr[1] - tr[0] < opts.min_turn) and tr[0] - merged[-1][1] < 0.02:
            merged[-1][1] = tr[1]
        else:
            merged.append(tr)
    return merged


def _segments(turns: list[list], texts: list[str]) -> list[Segment]:
    return [Segment(round(a, 3), round(b, 3), f"spk{lab + 1}", t) for (a, b, lab), t in zip(turns, texts)]


def diarize_waveform(wav: torch.Tensor, rate: int, voice, asr, opts: CascadeOptions, cut_id: str = "audio",
                     asr_method: str = "") -> SegmentsResult:
    """Segments of one recording (``voice`` and ``asr``: :class:`auden_kit.api.Model`)."""
    turns = speaker_turns(window_embeddings(wav, rate, voice, opts), rate, opts, opts.threshold)
    if not turns:
        return SegmentsResult(cut_id=cut_id)
    texts = [r.text if not isinstance(r, UserError) else ""  # a turn too short to decode: no words
             for _, r in asr.iter_results([wav[int(a * rate): int(b * rate)] for a, b, _ in turns], rate,
                                          **({"method": asr_method} if asr_method else {}))]
    return SegmentsResult(cut_id=cut_id, segments=_segments(turns, texts))


def tune_threshold(recordings, rate: int, voice, opts: CascadeOptions, thresholds) -> tuple[float, dict]:
    """The clustering threshold of lowest DER on ``recordings`` ((waveform, reference segments)
    pairs, e.g. dev meetings), as one tunes pyannote's on a dev set: each recording embedded once,
    clustered at every threshold; no words (DER needs none). Returns (the chosen threshold, the
    metrics of each, by threshold); the first of the lowest on a tie."""
    from auden_kit.metrics.diarization import score_meetings

    hyps: dict = {th: [] for th in thresholds}
    for i, (wav, ref) in enumerate(recordings):
        windows = window_embeddings(wav, rate, voice, opts)
        for th in thresholds:
            turns = speaker_turns(windows, rate, opts, th)
            hyps[th].append((str(i), ref, _segments(turns, [""] * len(turns))))
    if not any(ref for _, ref, _ in hyps[thresholds[0]]):
        raise UserError("the dev recordings to tune the threshold on hold no reference segments (supervisions with "
                        "speakers): give a dev manifest with them")
    scores = {th: {k: v for k, v in score_meetings(items).items() if k != "per_meeting"} for th, items in hyps.items()}
    best = min(thresholds, key=lambda th: scores[th]["der"])
    return best, scores
