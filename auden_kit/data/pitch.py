"""Pitch features to append to the filterbank (Kaldi's and ESPnet's ``fbank_pitch`` idea).

A filterbank smears the fundamental frequency across its low bins, and a mean-pooled embedding
keeps little of how the pitch moves. Speaker gender, intonation and speaking style live largely
there, so the voice recipes can append four pitch features per frame:

    pov          voicing strength: the normalised autocorrelation peak (0 unvoiced .. 1 periodic)
    f0           the fundamental frequency in semitones above 100 Hz (log scale, about -10 .. 20
                 for voices), interpolated through unvoiced frames
    f0_norm      f0 minus its voicing-weighted mean over the utterance (the intonation)
    slope        f0's change per frame, in semitones (central difference)

Semitones keep the pitch rows on a scale like the log-mel rows (a few units), as the encoder's
convolutional front end treats them alike.

The estimator is Boersma's (Praat's "ac" method): per frame, the autocorrelation of the
Hann-windowed signal divided by the window's own autocorrelation, the highest peak in the lag
range [1/f0_max, 1/f0_min] with a small preference for higher candidates (octave cost), refined
by parabolic interpolation; a 5-frame median filter removes isolated octave jumps. Frames are
those of Lhotse's fbank (``snip_edges=False``): frame k is centred at ``(k + 0.5) * shift``, and
a signal of n samples has ``(n + shift // 2) // shift`` frames, so the features line up row by
row. The utterance-level normalisation needs the whole signal: pitch features are not streamed.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

NUM_PITCH_FEATURES = 4


@dataclasses.dataclass
class PitchSettings:
    f0_min: float = 60.0
    f0_max: float = 500.0
    window: float = 0.04  # seconds: two periods of a 50 Hz voice
    voicing_threshold: float = 0.45  # pov below this: unvoiced (log_f0 interpolated)
    octave_cost: float = 0.01  # Praat's default: per octave, favours the higher of two equal peaks


def num_frames(num_samples: int, sample_rate: int, frame_shift: float) -> int:
    shift = int(round(frame_shift * sample_rate))
    return (num_samples + shift // 2) // shift


def pitch_features(samples, sample_rate: int, frame_shift: float = 0.01,
                   settings: PitchSettings | None = None) -> np.ndarray:
    """(T, 4) float32 features (see the module docstring) of a 1-D signal at ``sample_rate``,
    T the number of fbank frames of the same signal."""
    s = settings or PitchSettings()
    x = torch.as_tensor(np.asarray(samples, dtype=np.float32)).flatten()
    T = num_frames(x.numel(), sample_rate, frame_shift)
    if T == 0:
        return np.zeros((0, NUM_PITCH_FEATURES), dtype=np.float32)
    shift = int(round(frame_shift * sample_rate))
    W = int(round(s.window * sample_rate)) | 1  # odd: centred windows
    half = W // 2
    centres = torch.arange(T) * shift + shift // 2
    padded = torch.nn.functional.pad(x, (half, half + shift))
    frames = padded[centres.unsqueeze(1) + torch.arange(W)]  # (T, W)
    frames = frames - frames.mean(dim=1, keepdim=True)
    win = torch.hann_window(W, periodic=False)
    n_fft = 1 << math.ceil(math.log2(2 * W))

    def autocorr(v):
        spec = torch.fft.rfft(v, n=n_fft)
        return torch.fft.irfft(spec.real ** 2 + spec.imag ** 2, n=n_fft)[..., :W]

    r = autocorr(frames * win)  # (T, W)
    rw = autocorr(win)
    lag_min = max(2, int(sample_rate / s.f0_max))
    lag_max = min(W // 2, int(math.ceil(sample_rate / s.f0_min)))
    energy = r[:, :1].clamp(min=1e-10)
    nacf = (r / energy) / (rw / rw[0]).clamp(min=1e-3)  # Boersma: the window's own decay divided out
    lags = torch.arange(lag_min, lag_max + 1)
    cand = nacf[:, lag_min:lag_max + 1]
    score = cand - s.octave_cost * torch.log2(s.f0_min * lags.float() / sample_rate).unsqueeze(0)
    # only local maxima are candidates (a lag next to a larger value is the slope of a peak)
    left = nacf[:, lag_min - 1:lag_max]
    right = nacf[:, lag_min + 1:lag_max + 2]
    score = torch.where((cand >= left) & (cand >= right), score, torch.full_like(score, -1e9))
    best = score.argmax(dim=1)
    lag = (best + lag_min).clamp(max=nacf.shape[1] - 2)
    idx = torch.arange(T)
    a, b, c = nacf[idx, lag - 1], nacf[idx, lag], nacf[idx, lag + 1]
    denom = a - 2 * b + c
    delta = torch.where(denom.abs() > 1e-9, 0.5 * (a - c) / denom, torch.zeros_like(denom)).clamp(-0.5, 0.5)
    pov = b.clamp(0, 1)
    silent = energy[:, 0] < 1e-6 * float(energy.max())
    pov = torch.where(silent, torch.zeros_like(pov), pov).numpy()
    f0 = sample_rate / (lag.float() + delta)
    log_f0 = _median5(torch.log(f0).numpy())
    voiced = pov >= s.voicing_threshold
    if voiced.any():
        log_f0 = np.interp(np.arange(T), np.flatnonzero(voiced), log_f0[voiced])
        mean = float((log_f0 * pov)[voiced].sum() / max(pov[voiced].sum(), 1e-6))
    else:  # nothing periodic: a flat contour at the range's geometric middle
        log_f0 = np.full(T, 0.5 * (math.log(s.f0_min) + math.log(s.f0_max)))
        mean = float(log_f0[0])
    st = 12 / math.log(2)  # natural log -> semitones
    f0_st = (log_f0 - math.log(100.0)) * st
    slope = np.gradient(f0_st) if T > 1 else np.zeros(T)
    return np.stack([pov, f0_st, (log_f0 - mean) * st, slope], axis=1).astype(np.float32)


def _median5(v: np.ndarray) -> np.ndarray:
    if len(v) < 5:
        return v
    p = np.pad(v, 2, mode="edge")
    return np.median(np.lib.stride_tricks.sliding_window_view(p, 5), axis=1)
