"""Input level matched to the training audio's.

A model trained on audio recorded at one level reads words into the same speech 20 dB quieter
(the mini_synth ASR on 200 test utterances: WER 1.55 at their level, 37.79 at -20 dB, 82.75 at
-30 dB; ``bench/level_robustness.py``, table in ``bench/RESULTS.md``). Recorded levels are
arbitrary (microphone gain, distance), so inference moves an input whose speech level lies far
outside the range of the training audio (more than :data:`MARGIN_DB` beyond its 5 / 95 %
quantiles) to the training median, and leaves every other input as it is, so a model's reading of
audio like its training data does not change. (On 60 of those utterances, moving *every* input to
the median cost 1.72 -> 3.23 at their own level; moving far-off inputs only to the nearest edge of
the range left 5.59 at -20 dB where the median gives 3.23.) Training with ``data.gain_db`` makes
the model itself level-blind inside the range (:class:`~auden_kit.data.datamodule.RandomGain`).

The level of an input is the 90 % quantile of its frames' log mel energy (the loud frames: speech,
whatever the share of pauses), in dB. Training records the 5 / 50 / 95 % quantiles of that level
over up to :data:`MAX_CUTS` training cuts spread over the manifest (model folder,
``data_stats.level_db_p5`` ...). The API applies the gain to the waveform before the fbank (quiet
bins are not lost under the fbank's floor); decoding a manifest of precomputed features adds it to
the log mel rows, which is the same above the floor (``log(g^2 P) = log P + 2 log g``; bins of
digital silence stay at the floor). Pitch rows are left alone.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch

from auden_kit.data.pauses import SILENT_FEATURES, feature_log_energy

log = logging.getLogger(__name__)

DB_PER_NAT = 10.0 / math.log(10.0)
#: the fbank's floor: log of float32 epsilon (the value of every bin of digital silence)
LOG_MEL_FLOOR = math.log(torch.finfo(torch.float32).eps)
#: inputs up to this far outside the training range (5 / 95 % quantiles) are left as they are: no
#: test cut of the mini_synth recipes lies beyond it (at 3 dB, 2 of the voice test set did, and
#: moving them cost the voice model EER 1.07 -> 1.39)
MARGIN_DB = 6.0
#: training cuts read for the level statistics
MAX_CUTS = 200


def speech_level_db(feats: torch.Tensor, num_mel_bins: int) -> float | None:
    """Level of (T, F) log-mel features (pitch columns after ``num_mel_bins`` ignored), in dB;
    None when they hold no signal."""
    if feats.shape[0] == 0:
        return None
    e = feature_log_energy(feats[:, :num_mel_bins])
    top = float(torch.quantile(e, 0.9))
    return None if top < SILENT_FEATURES else top * DB_PER_NAT


def level_stats(cuts, settings, num_cuts: int, max_cuts: int = MAX_CUTS) -> dict:
    """``level_db_p5/p50/p95`` and ``level_cuts`` of up to ``max_cuts`` cuts, every
    ``num_cuts // max_cuts``-th (spread over a manifest sorted by speaker or length). Features are
    the cuts' own, or computed from their audio with ``settings``. Cuts that cannot be read are
    left out (training reports them); {} when none could be."""
    from auden_kit.data.audio import load_cut_audio
    from auden_kit.data.features import fbank_from_waveform

    step = max(1, num_cuts // max_cuts)
    levels = []
    for k, c in enumerate(cuts):
        if k % step:
            continue
        if len(levels) >= max_cuts:
            break
        try:
            if c.has_features:
                f = torch.from_numpy(np.asarray(c.load_features(), dtype=np.float32))
            else:
                f = fbank_from_waveform(load_cut_audio(c, settings.sample_rate), settings)
        except Exception as e:  # noqa: BLE001 - a statistic: an unreadable cut is reported by training itself
            log.debug("level statistics: cut '%s' left out (%s)", c.id, e)
            continue
        lv = speech_level_db(f, settings.num_mel_bins)
        if lv is not None:
            levels.append(lv)
    if not levels:
        return {}
    q = np.percentile(levels, [5, 50, 95])
    return {"level_db_p5": round(float(q[0]), 2), "level_db_p50": round(float(q[1]), 2),
            "level_db_p95": round(float(q[2]), 2), "level_cuts": len(levels)}


def has_level_stats(stats: dict | None) -> bool:
    """Whether a model folder's ``data_stats`` record its training level (folders from before
    they were recorded do not)."""
    return "level_db_p5" in (stats or {})


def level_shift_db(level_db: float | None, stats: dict, margin: float = MARGIN_DB) -> float:
    """dB to add to an input of level ``level_db``: outside the training range
    ``[p5 - margin, p95 + margin]``, to the training median; 0 inside it, for no signal, or without
    statistics (a model folder from before they were recorded)."""
    if level_db is None or not has_level_stats(stats):
        return 0.0
    if stats["level_db_p5"] - margin <= level_db <= stats["level_db_p95"] + margin:
        return 0.0
    return stats["level_db_p50"] - level_db


def shift_level(feats: torch.Tensor, shift_db: float | torch.Tensor, num_mel_bins: int) -> torch.Tensor:
    """``feats`` (..., F) with ``shift_db`` added to the mel bins of every frame (a gain on the
    waveform; a tensor that broadcasts against ``feats``, e.g. (B, 1, 1), gives each row its own);
    bins at the floor (digital silence) stay there. A new tensor."""
    out = feats.clone()
    mel = out[..., :num_mel_bins]
    live = mel > LOG_MEL_FLOOR + 1e-3
    out[..., :num_mel_bins] = torch.where(live, (mel + shift_db / DB_PER_NAT).clamp_min(LOG_MEL_FLOOR), mel)
    return out
