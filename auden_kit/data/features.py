"""Filterbank features: settings that travel with a model, storage with lilcom, on the fly.

The settings are a small dataclass saved in every model folder, so decoding
computes exactly the features the model was trained on.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch

PAD_VALUE = -23.025850929940457  # log(1e-10): Lhotse's padding value for log-mel features

log = logging.getLogger(__name__)


FRAME_SHIFT = 0.01  # seconds per feature frame: the toolkit's features all use it


@dataclasses.dataclass
class FbankSettings:
    """Kaldi-compatible log-mel filterbank (Lhotse's ``Fbank``); ``pitch``: four pitch features
    appended to every frame (:mod:`auden_kit.data.pitch`, Kaldi's/ESPnet's fbank+pitch idea; for
    voice tasks: gender, intonation, speaking style), so ``num_features = num_mel_bins + 4``."""

    sample_rate: int = 16000
    num_mel_bins: int = 80
    frame_shift: float = FRAME_SHIFT
    frame_length: float = 0.025
    dither: float = 0.0
    pitch: bool = False

    def to_dict(self) -> dict:  # Lhotse's feature-extractor config protocol
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(data: dict) -> "FbankSettings":
        return FbankSettings(**data)

    @property
    def num_features(self) -> int:
        from auden_kit.data.pitch import NUM_PITCH_FEATURES

        return self.num_mel_bins + (NUM_PITCH_FEATURES if self.pitch else 0)

    def describe(self) -> str:
        """What a frame holds, for messages: e.g. "84-dim features (80 mel bins + 4 pitch)"."""
        pitch = f" + {self.num_features - self.num_mel_bins} pitch" if self.pitch else ""
        return f"{self.num_features}-dim features ({self.num_mel_bins} mel bins{pitch})"

    def extractor(self):
        if self.pitch:  # its own module: it imports Lhotse, which every command's start should not
            from auden_kit.data.fbank_pitch import FbankPitch

            return FbankPitch(self)
        from lhotse import Fbank, FbankConfig

        return Fbank(FbankConfig(
            sampling_rate=self.sample_rate, num_mel_bins=self.num_mel_bins,
            frame_shift=self.frame_shift, frame_length=self.frame_length, dither=self.dither,
        ))


def fbank_from_waveform(wav: torch.Tensor, settings: FbankSettings, extractor=None) -> torch.Tensor:
    """(N,) float waveform at ``settings.sample_rate`` -> (T, F) features."""
    ext = extractor or settings.extractor()
    feats = ext.extract(wav.numpy(), sampling_rate=settings.sample_rate)
    return torch.as_tensor(feats)


class OnlineFbank:
    """The features :func:`fbank_from_waveform` gives, computed while the audio arrives.

    Lhotse's fbank (``snip_edges=False``) reflects ``(window - shift) // 2`` samples at the start and
    pads the end so that a signal of n samples has ``(n + shift // 2) // shift`` frames; every frame
    depends only on its own window. So frames are computed as soon as their window is complete,
    and :meth:`finish` adds the end padding and the last frames. Memory: one window of samples.
    """

    def __init__(self, settings: FbankSettings):
        import copy

        if settings.pitch:
            from auden_kit.errors import UserError

            raise UserError("the model reads pitch features, which are normalised over the whole utterance: "
                            "streaming decoding needs a model trained on fbank alone (data.fbank.pitch=false)")

        self.settings = settings
        self.fn = copy.deepcopy(settings.extractor().extractor)
        for m in self.fn.modules():  # we do the edge handling ourselves, as Lhotse's does it
            if hasattr(m, "snip_edges"):
                m.snip_edges = True
        self.shift = int(round(settings.frame_shift * settings.sample_rate))
        self.window = int(round(settings.frame_length * settings.sample_rate))
        self.pad_left = (self.window - self.shift) // 2
        self.head = torch.zeros(0)  # the first samples, until the left padding can be built
        self.buf = torch.zeros(0)  # padded signal from frame ``self.frames`` on
        self.frames = 0
        self.received = 0
        self.started = False
        self.tail = torch.zeros(0)  # the last samples received (for the right padding)

    def _frames(self, signal: torch.Tensor) -> torch.Tensor:
        if signal.numel() < self.window:
            return torch.zeros(0, self.settings.num_mel_bins)
        with torch.no_grad():
            out = self.fn(signal.unsqueeze(0).float())
        return (out[0] if isinstance(out, tuple) else out)[0]

    def _take(self, final: bool = False) -> torch.Tensor:
        n = 0 if self.buf.numel() < self.window else 1 + (self.buf.numel() - self.window) // self.shift
        if final:
            n = max(0, min(n, (self.received + self.shift // 2) // self.shift - self.frames))
        if n == 0:
            return torch.zeros(0, self.settings.num_mel_bins)
        out = self._frames(self.buf[: (n - 1) * self.shift + self.window])
        self.buf = self.buf[n * self.shift:]
        self.frames += n
        return out

    def accept(self, samples: torch.Tensor) -> torch.Tensor:
        """New samples (1-D float, at ``settings.sample_rate``) -> newly complete frames (T, F)."""
        samples = torch.as_tensor(samples, dtype=torch.float32).flatten()
        self.received += samples.numel()
        self.tail = torch.cat([self.tail, samples])[-self.window:]
        if not self.started:
            self.head = torch.cat([self.head, samples])
            if self.head.numel() < self.pad_left:
                return torch.zeros(0, self.settings.num_mel_bins)
            self.buf = torch.cat([torch.flip(self.head[: self.pad_left], (0,)), self.head])
            self.started = True
            self.head = torch.zeros(0)
        else:
            self.buf = torch.cat([self.buf, samples])
        return self._take()

    def finish(self) -> torch.Tensor:
        """The last frames (end padding as Lhotse does it)."""
        if not self.started:  # shorter than the left padding
            sig = self.head
            self.head = torch.zeros(0)
            if sig.numel() == 0:
                return torch.zeros(0, self.settings.num_mel_bins)
            return torch.as_tensor(self.settings.extractor().extract(sig.numpy(), self.settings.sample_rate))
        total = (self.received + self.shift // 2) // self.shift
        need = (total - 1) * self.shift + self.window - self.pad_left - self.received
        if need > 0:
            self.buf = torch.cat([self.buf, torch.flip(self.tail[-need:], (0,))])
        return self._take(final=True)


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
