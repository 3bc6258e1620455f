"""The cascade baseline for diarized ASR: who spoke when (voice embeddings of short windows,
clustered), then what (the ASR model on each speaker turn). The same segments, formats and
metrics as the one-model ``tagspeech`` task, for comparison in the same run.

1. Speech regions: the energy detector of :func:`auden_kit.data.pauses.speech_segments` (a
   region without a pause is cut after ``REGION_SECONDS``). An audio file is read one block at a
   time, twice (voices, then words), so an hour-long file is never held whole.
2. Windows of ``window`` seconds every ``hop`` seconds over each region (a short region is one
   window); each embedded by the voice model (its utterance embedding, L2-normalised).
3. Agglomerative clustering (:func:`auden_kit.clustering.agglomerate`: average linkage, cosine
   distance) cut at ``threshold``: the number of speakers is estimated (or fixed with
   ``num_speakers``). Long recordings of the ``tagspeech`` task link their windows' speakers with
   the same function. More than ``CLUSTER_ROWS`` windows are clustered in stages
   (:func:`cluster_windows`), so memory stays bounded.
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


REGION_SECONDS = 60.0  # a longer stretch without a pause is cut at its quietest frame (bounds a block's carry)
CLUSTER_ROWS = 3000  # more windows than this (about 40 minutes of speech) are clustered in two stages


def _blocks(audio, rate: int, block_seconds: float, progress=None):
    """A new pass over a recording: a waveform is one block; a file is read block by block
    (:func:`auden_kit.data.audio.read_blocks`), so its length does not bound what fits in memory.
    ``progress``: called with the seconds of each block as it is read."""
    from auden_kit.data.audio import read_blocks

    blocks = iter([audio]) if isinstance(audio, torch.Tensor) else read_blocks(audio, rate, block_seconds)
    for block in blocks:
        if progress is not None:
            progress(block.numel() / rate)
        yield block


def window_embeddings(audio, rate: int, voice, opts: CascadeOptions, block_seconds: float = 600.0, progress=None):
    """Steps 1-2 on a waveform or an audio file (read one block at a time): the speech regions
    (sample ranges), the windows over them (sample ranges) and their L2-normalised embeddings, one
    row per window (``None`` when there is no speech)."""
    from auden_kit.data.pauses import speech_segments, stretches_by_block

    win, hop = int(opts.window * rate), int(opts.hop * rate)
    regions, spans, emb = [], [], []
    for start, buf, ranges in stretches_by_block(_blocks(audio, rate, block_seconds, progress), lambda b, _: speech_segments(
            b, rate, max_seconds=REGION_SECONDS, min_pause=0.2)):
        here = []
        for a, b in ranges:
            regions.append((start + a, start + b))
            if b - a < int(0.2 * rate):
                continue
            starts = list(range(a, max(a + 1, b - win + 1), hop)) or [a]
            if starts[-1] + win < b:
                starts.append(max(a, b - win))
            here += [(s, min(b, s + win)) for s in starts]
        if here:
            emb += [np.asarray(r.embedding, dtype=np.float64) for r in voice.infer([buf[a:b] for a, b in here], rate)]
            spans += [(start + a, start + b) for a, b in here]
    if not spans:
        return None
    emb = np.stack(emb)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True) + 1e-9
    return regions, spans, emb


def cluster_windows(emb: np.ndarray, threshold: float, num_speakers: int = 0, sizes=None, strict: bool = True
                    ) -> np.ndarray:
    """Step 3: a speaker label per window (rows of ``emb``, L2-normalised; or clusters of windows,
    summed, with their ``sizes``). Up to ``CLUSTER_ROWS`` rows are clustered at once (O(n^2)
    memory); more are first clustered in consecutive runs of that many, and the clusters of all
    runs then clustered together, so memory stays bounded however long the recording. The later
    stages are average linkage over the same windows (the summed embeddings of two clusters give
    their summed pairwise similarity); what can differ from clustering all at once is the order of
    merges, since a run merges its own windows first. So the first runs stop at a ``strict``er
    similarity (halfway from ``1 - threshold`` to 1: clusters of one voice, the choice between
    voices left to the stage that sees the whole recording); when that leaves too many, their
    clusters are clustered in runs at the threshold itself (each run down to its own few voices)."""
    n = len(emb)
    if n <= CLUSTER_ROWS:
        return np.array(agglomerate(emb, 1.0 - threshold, num_speakers=num_speakers, sizes=sizes), dtype=int)
    size = np.ones(n) if sizes is None else np.asarray(sizes, dtype=np.float64)
    sums, counts, parent = [], [], np.zeros(n, dtype=int)  # clusters of the runs; row -> its cluster
    for lo in range(0, n, CLUSTER_ROWS):
        part, w = emb[lo: lo + CLUSTER_ROWS], size[lo: lo + CLUSTER_ROWS]
        lab = np.array(agglomerate(part, 1.0 - (threshold / 2 if strict else threshold),
                                   sizes=None if sizes is None else w), dtype=int)
        for k in range(lab.max() + 1):
            parent[lo + np.flatnonzero(lab == k)] = len(sums)
            sums.append(part[lab == k].sum(0))
            counts.append(w[lab == k].sum())
    if len(sums) == n and not strict:  # the runs merged nothing: no smaller problem to hand on
        return np.array(agglomerate(emb, 1.0 - threshold, num_speakers=num_speakers, sizes=sizes), dtype=int)
    top = cluster_windows(np.stack(sums), threshold, num_speakers, np.array(counts), strict=False)
    order: dict[int, int] = {}  # labels by first appearance, as agglomerate numbers them
    return np.array([order.setdefault(int(top[c]), len(order)) for c in parent], dtype=int)


def speaker_turns(windows, rate: int, opts: CascadeOptions, threshold: float) -> list[list]:
    """Steps 3-4 at one clustering threshold: [start s, end s, label] per speaker turn."""
    if windows is None:
        return []
    regions, spans, emb = windows
    labels = cluster_windows(emb, threshold, opts.num_speakers)
    centres = np.array([(a + b) / 2 for a, b in spans]) / rate
    turns: list[list] = []
    for a, b in regions:
        t = np.arange(a / rate, b / rate, 0.01)
        if len(t) == 0:
            continue
        near = labels[_nearest(centres, t)]
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


def _nearest(centres: np.ndarray, t: np.ndarray) -> np.ndarray:
    """For each time in ``t``, the index of the nearest of the increasing ``centres`` (the first
    on a tie), without a times x windows table (an hour holds ~5,000 windows)."""
    if len(centres) == 1:
        return np.zeros(len(t), dtype=int)
    j = np.clip(np.searchsorted(centres, t), 1, len(centres) - 1)
    return np.where(t - centres[j - 1] <= centres[j] - t, j - 1, j)


def _turn_audio(blocks, turns: list[list], rate: int):
    """The waveform of each turn (increasing, not overlapping), in lists as the recording's blocks
    are read (:func:`~auden_kit.data.pauses.stretches_by_block`: a turn that runs into the next
    block waits for it; a turn that ends past the last sample is cut there)."""
    from auden_kit.data.pauses import stretches_by_block

    edges = np.array([(int(a * rate), int(b * rate)) for a, b, _ in turns], dtype=np.int64).reshape(-1, 2)

    def inside(buf: torch.Tensor, start: int) -> list:
        lo, hi = np.searchsorted(edges[:, 1], start, "right"), np.searchsorted(edges[:, 0], start + buf.numel())
        return [(max(0, int(a) - start), min(buf.numel(), int(b) - start)) for a, b in edges[lo:hi]]

    for _, buf, ranges in stretches_by_block(blocks, inside):
        yield [buf[a:b] for a, b in ranges]


def _segments(turns: list[list], texts: list[str]) -> list[Segment]:
    return [Segment(round(a, 3), round(b, 3), f"spk{lab + 1}", t) for (a, b, lab), t in zip(turns, texts)]


def diarize_audio(audio, rate: int, voice, asr, opts: CascadeOptions, cut_id: str = "audio", asr_method: str = "",
                  block_seconds: float = 600.0, progress=None) -> SegmentsResult:
    """Segments of one recording: a waveform at ``rate``, or an audio file, read twice (voices,
    then words) one block of ``block_seconds`` at a time, so that an hour-long file is never held
    whole (``voice`` and ``asr``: :class:`auden_kit.api.Model`). ``progress``: called with the
    seconds of each block as it is read (twice the recording's duration in all, with speech)."""
    turns = speaker_turns(window_embeddings(audio, rate, voice, opts, block_seconds, progress), rate, opts,
                          opts.threshold)
    if not turns:
        return SegmentsResult(cut_id=cut_id)
    texts = []
    for wavs in _turn_audio(_blocks(audio, rate, block_seconds, progress), turns, rate):
        texts += [r.text if not isinstance(r, UserError) else ""  # a turn too short to decode: no words
                  for _, r in asr.iter_results(wavs, rate, **({"method": asr_method} if asr_method else {}))]
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
