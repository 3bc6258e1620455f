"""The task plugin interface.

A task module defines a subclass of :class:`Task` and is registered by name in
:data:`auden_kit.hub.TASKS` (lazy import). Batches come from
:mod:`auden_kit.data.datamodule` and are task-agnostic; the task maps
supervisions to targets.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn


@dataclasses.dataclass
class DecodeResult:
    """One utterance: hypothesis text, token pieces and their times in seconds."""

    cut_id: str
    text: str
    tokens: list = dataclasses.field(default_factory=list)
    times: list = dataclasses.field(default_factory=list)
    ref: str | None = None


class Task:
    name: str = "base"
    model_config_cls: type = object
    needs_tokenizer: bool = True
    decode_methods: tuple[str, ...] = ()
    default_decode_method: str = ""

    def build_model(self, cfg: Any, tokenizer) -> nn.Module:
        raise NotImplementedError

    def compute_loss(self, model: nn.Module, batch: dict, tokenizer, step: int) -> tuple[torch.Tensor, dict, int]:
        """Return (loss summed over the batch, {name: summed value} for logging, number of frames)."""
        raise NotImplementedError

    def default_method(self, model: nn.Module) -> str:
        """The decoding method used when none is asked for (validation, ``auden-kit decode``)."""
        return self.default_decode_method

    @torch.no_grad()
    def decode(self, model: nn.Module, batch: dict, tokenizer, method: str = "", beam: int = 4) -> list[DecodeResult]:
        raise NotImplementedError

    def evaluate(self, results: list[DecodeResult]) -> dict:
        """Metrics from decode results that carry references (e.g. {"wer": 3.1})."""
        return {}
