"""Zipformer (Yao et al., 2023) in pure PyTorch: front end, stacks, layers, presets."""

from auden_kit.encoders.zipformer.encoder import PRESETS, ZipformerConfig, ZipformerEncoder

__all__ = ["PRESETS", "ZipformerConfig", "ZipformerEncoder"]
