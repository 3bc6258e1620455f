"""Read any audio file as mono float32 at a target rate (soundfile, then torchaudio)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from auden_kit.errors import UserError


def resample(wav: torch.Tensor, sr_in: int, sr_out: int) -> torch.Tensor:
    """(..., N) float tensor from ``sr_in`` to ``sr_out`` Hz (band-limited sinc)."""
    if sr_in == sr_out:
        return wav
    import torchaudio.functional as AF

    return AF.resample(wav, sr_in, sr_out)


def load_audio(path: str | Path, sample_rate: int = 16000) -> torch.Tensor:
    """Return a 1-D float32 tensor: channels averaged, resampled to ``sample_rate``.

    Formats: whatever libsndfile reads (wav, flac, ogg, mp3 with libsndfile >= 1.1).
    Raises UserError naming the file if it is missing, empty or unreadable.
    """
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise UserError(f"audio file '{path}' does not exist")
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises several types for corrupt data
        raise UserError(f"cannot read audio file '{path}': {e}") from None
    if data.size == 0:
        raise UserError(f"audio file '{path}' holds no samples")
    mono = torch.from_numpy(np.ascontiguousarray(data.mean(axis=1)))
    return resample(mono, int(sr), sample_rate)
