"""Filterbank features: settings that travel with a model, storage with lilcom, on the fly.

The settings are a small dataclass saved in every model folder, so decoding
computes exactly the features the model was trained on.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch

log = logging.getLogger(__name__)


@dataclasses.dataclass
class FbankSettings:
    """Kaldi-compatible log-mel filterbank (Lhotse's ``Fbank``)."""

    sample_rate: int = 16000
    num_mel_bins: int = 80
    frame_shift: float = 0.01
    frame_length: float = 0.025
    dither: float = 0.0

    def extractor(self):
        from lhotse import Fbank, FbankConfig

        return Fbank(FbankConfig(
            sampling_rate=self.sample_rate, num_mel_bins=self.num_mel_bins,
            frame_shift=self.frame_shift, frame_length=self.frame_length, dither=self.dither,
        ))


def fbank_from_waveform(wav: torch.Tensor, settings: FbankSettings) -> torch.Tensor:
    """(N,) float waveform at ``settings.sample_rate`` -> (T, F) features."""
    ext = settings.extractor()
    feats = ext.extract(wav.numpy(), sampling_rate=settings.sample_rate)
    return torch.as_tensor(feats)


def compute_fbank(cuts, out_dir: str | Path, name: str, settings: FbankSettings | None = None,
                  num_jobs: int = 2, resample_to: int | None = 16000):
    """Compute and store features for ``cuts`` (lilcom archive under ``out_dir``).

    Returns the CutSet with features attached; writing the manifest is the caller's job
    (use :func:`auden_kit.io.save_cuts_atomic`).
    """
    from lhotse import LilcomChunkyWriter

    settings = settings or FbankSettings()
    if resample_to:
        cuts = cuts.resample(resample_to)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    executor, threads = None, None
    if num_jobs > 1:
        # Lhotse's default pool spawns fresh interpreters that each start torch with one thread
        # per core: N jobs x N threads spin against each other (the quick start's fbank stage
        # took 104 s instead of ~35 s on 2 cores). Forked single-threaded workers avoid both
        # the oversubscription and the re-import.
        import multiprocessing
        import sys
        from concurrent.futures import ProcessPoolExecutor

        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # inherited by the forked workers; restored below
        ctx = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
        executor = ProcessPoolExecutor(num_jobs, mp_context=ctx)
    try:
        return cuts.compute_and_store_features(
            extractor=settings.extractor(),
            storage_path=out_dir / f"{name}_feats",
            num_jobs=num_jobs,
            executor=executor,
            storage_type=LilcomChunkyWriter,
        )
    finally:
        if executor is not None:
            executor.shutdown()
            torch.set_num_threads(threads)
