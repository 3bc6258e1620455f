"""Lhotse feature extractor ``auden-fbank-pitch``: the filterbank of
:class:`auden_kit.data.features.FbankSettings` with the pitch features of
:func:`auden_kit.data.pitch.pitch_features` appended, stored or computed on the fly alike
(``FbankSettings(pitch=True).extractor()``)."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from lhotse.features.base import FeatureExtractor, register_extractor

from auden_kit.data.features import FbankSettings
from auden_kit.data.pitch import NUM_PITCH_FEATURES, pitch_features


@register_extractor
class FbankPitch(FeatureExtractor):
    name = "auden-fbank-pitch"
    config_type = FbankSettings  # with pitch=True

    def __init__(self, config: FbankSettings | None = None):
        super().__init__(config=dataclasses.replace(config or FbankSettings(), pitch=True))
        self.fbank = dataclasses.replace(self.config, pitch=False).extractor()

    @property
    def frame_shift(self) -> float:
        return self.config.frame_shift

    def feature_dim(self, sampling_rate: int) -> int:
        return self.config.num_mel_bins + NUM_PITCH_FEATURES

    def extract(self, samples, sampling_rate: int):
        was_tensor = isinstance(samples, torch.Tensor)
        x = samples.detach().cpu().numpy() if was_tensor else np.asarray(samples)
        x = x.reshape(-1).astype(np.float32)
        fb = np.asarray(self.fbank.extract(x, sampling_rate))
        p = pitch_features(x, sampling_rate, self.config.frame_shift)
        n = min(len(fb), len(p))
        out = np.concatenate([fb[:n], p[:n]], axis=1).astype(np.float32)
        return torch.from_numpy(out) if was_tensor else out
