"""Where the pauses are: an energy detector over 10 ms frames, for waveforms (long-audio
decoding, the cascade's speech regions) and for log-mel features (re-reading the speech of a
decoded window), one piece of logic for both.

The threshold sits between the quiet and loud ends of the signal's own energy distribution, so
it adapts to level and noise floor; without a clear quiet/loud contrast nothing is split.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator

import torch

# a frame is speech above lo + SPEECH_LEVEL * (hi - lo) of the 5 % / 95 % energy quantiles
SPEECH_LEVEL = 0.3
MIN_CONTRAST = 3.0  # natural-log units (~13 dB) between quiet and loud: below it, no pauses to trust
# loud ends (95 % quantile) below these are no signal at all (digital silence; speech 60 dB below a
# normal level still measures -17.4 / -8.5): nothing is speech. Log mean power of a [-1, 1]
# waveform's 10 ms frames (about -90 dBFS), and :func:`feature_log_energy` of the toolkit's fbank
SILENT_WAVE = -21.0
SILENT_FEATURES = -10.0


def smooth_energy(e: torch.Tensor, smooth: int) -> torch.Tensor:
    """Per-frame log energy ``e`` averaged over ``2 * smooth + 1`` frames."""
    return torch.nn.functional.avg_pool1d(e.float().view(1, 1, -1), 2 * smooth + 1, stride=1, padding=smooth,
                                          count_include_pad=False).view(-1)


def frame_log_energy(wav: torch.Tensor, sample_rate: int, smooth: int) -> torch.Tensor:
    """Log energy of each 10 ms frame of ``wav``, averaged over ``2 * smooth + 1`` frames."""
    hop = sample_rate // 100
    n = wav.numel()
    frames = wav[: n - n % hop].reshape(-1, hop) if n >= hop else wav.reshape(1, -1)
    return smooth_energy(frames.pow(2).mean(-1).add(1e-10).log(), smooth)


def feature_log_energy(feats: torch.Tensor) -> torch.Tensor:
    """Log energy of each frame of log-mel features (T, bins): the log of the summed mel energies
    (follows the waveform's frame energy closely: correlation 0.97 on a simulated meeting)."""
    return feats.float().logsumexp(-1)


def speech_runs(e: torch.Tensor, min_pause: float, silent: float) -> list[tuple[int, int]] | None:
    """Frame ranges of speech in smoothed per-frame log energy ``e``, split at pauses of at least
    ``min_pause`` seconds; none when even the loud end is below ``silent``; None when the signal
    has no quiet/loud contrast to trust."""
    lo, hi = float(torch.quantile(e, 0.05)), float(torch.quantile(e, 0.95))
    if hi < silent:
        return []
    if hi - lo < MIN_CONTRAST:
        return None
    speech = (e > lo + SPEECH_LEVEL * (hi - lo)).tolist()
    min_run = int(min_pause * 100)
    spans: list[tuple[int, int]] = []
    start, quiet, T = None, 0, len(speech)
    for t, v in enumerate(speech + [False] * (min_run + 1)):
        if v:
            if start is None:
                start = t
            quiet = 0
        elif start is not None:
            quiet += 1
            if quiet >= min_run or t >= T:
                spans.append((start, t - quiet + 1))
                start, quiet = None, 0
    return spans


def no_signal(wav: torch.Tensor, sample_rate: int) -> bool:
    """True when even the loud end of ``wav`` is below :data:`SILENT_WAVE` (digital silence):
    there is nothing to read, embed or classify."""
    return speech_runs(frame_log_energy(wav, sample_rate, smooth=2), 0.2, SILENT_WAVE) == []


def quiet_cuts(smooth: torch.Tensor, n: int, max_len: int, search: int, hop: int) -> list[tuple[int, int]]:
    """(start, end) ranges covering ``n`` units (samples, or frames with ``hop`` 1), each at most
    ``max_len`` long, cut at the quietest frame of ``smooth`` (energy per frame of ``hop`` units)
    among the last ``search`` units of each window."""
    out, start = [], 0
    while n - start > max_len:
        lo, hi = (start + max_len - search) // hop, (start + max_len) // hop
        cut = (lo + int(smooth[lo:hi].argmin())) * hop if hi > lo else start + max_len
        cut = max(cut, start + hop)
        out.append((start, cut))
        start = cut
    out.append((start, n))
    return out


def speech_segments(wav: torch.Tensor, sample_rate: int, max_seconds: float = 30.0, merge_up_to: float = 0.0,
                    min_pause: float = 0.2, margin: float = 0.0) -> list[tuple[int, int]]:
    """Sample ranges of the speech in ``wav``: the stretches between pauses of at least
    ``min_pause`` seconds (with ``margin`` seconds of context: 0 by default, since extra
    silence at the edges cost the quick-start model 3 to 10 WER points in bench/long_audio.py
    while no margin matched per-utterance decoding), silence-only stretches dropped,
    neighbours merged while the result stays under ``merge_up_to`` seconds, and a segment longer
    than ``max_seconds`` cut at its quietest frames (:func:`split_at_pauses`). Without a clear
    quiet/loud contrast the whole signal is one stretch."""
    n = wav.numel()
    hop = sample_rate // 100
    if n < 2 * hop:
        return [(0, n)]
    # 50 ms of smoothing: enough against single-frame dips, short enough to keep pauses
    runs = speech_runs(frame_log_energy(wav, sample_rate, smooth=2), min_pause, SILENT_WAVE)
    if runs is None:
        spans = [(0, n)]
    else:
        pad = int(margin * 100)
        spans = [(max(0, a - pad) * hop, min(n, (b + pad) * hop)) for a, b in runs]
        if not spans:
            return []
    merged: list[tuple[int, int]] = []
    limit = merge_up_to * sample_rate
    for a, b in spans:
        if merged and b - merged[-1][0] <= limit:
            merged[-1] = (merged[-1][0], b)
        else:
            merged.append((a, b))
    out = []
    for a, b in merged:
        out += [(a + x, a + y) for x, y in split_at_pauses(wav[a:b], sample_rate, max_seconds)]
    return out


def stretches_by_block(blocks: Iterable[torch.Tensor], find: Callable[[torch.Tensor, int], list]
                       ) -> Iterator[tuple[int, torch.Tensor, list]]:
    """The speech stretches of a recording read in consecutive blocks (e.g.
    :func:`auden_kit.data.audio.read_blocks`), so that memory does not grow with its length.
    Yields ``(start, buf, ranges)``: ``buf`` holds samples of the recording from sample ``start``
    on and ``ranges`` are its finished stretches, as sample ranges of ``buf``. ``find(buf, start)``
    gives the stretches of a buffer in order (e.g. :func:`speech_segments`, or given ranges of the
    recording that fall in it); it must bound their length and find none only where there is
    nothing to keep. The last stretch of a block may run on into the next one: it
    waits, with what follows it, and is found again with the next block. The next block is read
    ahead, so the last one is known as such and a recording of one block gives ``find`` of all of
    it, once."""
    blocks = iter(blocks)
    block = next(blocks, None)
    buf, start = torch.zeros(0), 0
    while block is not None:
        ahead = next(blocks, None)
        buf = torch.cat([buf, block]) if buf.numel() else block
        ranges = find(buf, start)
        if ahead is None or not ranges:  # the end, or silence: all of buf is done with
            done, keep = ranges, buf.numel()
        else:
            done, keep = ranges[:-1], ranges[-1][0]
        if done:
            yield start, buf, done
        start += keep
        buf = buf[keep:].clone()  # the rest of the block is freed
        block = ahead


def split_at_pauses(wav: torch.Tensor, sample_rate: int, max_seconds: float = 30.0,
                    search_seconds: float = 8.0) -> list[tuple[int, int]]:
    """(start, end) sample ranges covering ``wav``, each at most ``max_seconds`` long, cut at the
    quietest 10 ms frame (energy smoothed over ~100 ms) among the last ``search_seconds`` of each
    window: in speech that is a pause between words."""
    n = wav.numel()
    max_len = int(max_seconds * sample_rate)
    if n <= max_len:
        return [(0, n)]
    search = int(min(search_seconds, max_seconds / 2) * sample_rate)
    return quiet_cuts(frame_log_energy(wav, sample_rate, smooth=5), n, max_len, search, sample_rate // 100)


def speech_frames(log_energy: torch.Tensor, max_seconds: float = 30.0, min_pause: float = 0.2,
                  search_seconds: float = 8.0) -> list[tuple[int, int]]:
    """:func:`speech_segments` for 10 ms frames of log energy (e.g. :func:`feature_log_energy`):
    frame ranges of the speech between pauses, none longer than ``max_seconds``."""
    T = len(log_energy)
    if T < 2:
        return [(0, T)]
    runs = speech_runs(smooth_energy(log_energy, 2), min_pause, SILENT_FEATURES)
    max_len = int(max_seconds * 100)
    search = int(min(search_seconds, max_seconds / 2) * 100)
    out = []
    for a, b in [(0, T)] if runs is None else runs:
        out += [(a + x, a + y) for x, y in quiet_cuts(smooth_energy(log_energy[a:b], 5), b - a, max_len, search, 1)]
    return out
