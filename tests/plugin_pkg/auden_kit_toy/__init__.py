"""A loss-only toy task from outside auden-kit: predict a frozen random teacher's projection of the
clean (un-augmented) features from the augmented ones. It uses the plugin interface only:
clean inputs, a Frozen teacher (never optimized, averaged or saved), loss-only validation."""

import dataclasses
from typing import Any

import torch
from torch import nn

from auden_kit.hub import build_encoder, encoder_config
from auden_kit.nn.frozen import Frozen
from auden_kit.tasks.base import Task


@dataclasses.dataclass
class ToyConfig:
    encoder_type: str = "zipformer"
    encoder: Any = dataclasses.field(default_factory=dict)
    target_dim: int = 8

    def __post_init__(self):
        self.encoder = encoder_config(self.encoder_type, self.encoder)


class ToyModel(nn.Module):
    def __init__(self, cfg: ToyConfig):
        super().__init__()
        self.encoder = build_encoder(cfg.encoder_type, cfg.encoder)
        self.head = nn.Linear(self.encoder.output_dim, cfg.target_dim)
        g = torch.Generator().manual_seed(0)
        teacher = nn.Linear(cfg.encoder.feature_dim, cfg.target_dim)
        with torch.no_grad():
            teacher.weight.copy_(torch.randn(teacher.weight.shape, generator=g) * 0.1)
        self.teacher = Frozen(teacher)


class ToyRegressionTask(Task):
    name = "toy_regress"
    model_config_cls = ToyConfig
    needs_clean_inputs = True

    def build_model(self):
        return ToyModel(self.model_cfg)

    def compute_loss(self, model, batch, step):
        enc, lens = model.encoder(batch["inputs"], batch["input_lens"])
        target = model.teacher(batch["clean_inputs"])  # (N, T, D) at the input rate
        T = enc.shape[1]
        target = nn.functional.adaptive_avg_pool1d(target.transpose(1, 2), T).transpose(1, 2)
        mask = (torch.arange(T).unsqueeze(0) < lens.unsqueeze(1)).unsqueeze(-1).float()
        loss = (((model.head(enc) - target) ** 2) * mask).sum()
        n = float(mask.sum())
        return loss, {"loss": float(loss.detach())}, n


@dataclasses.dataclass
class ToyLinearConfig:
    feature_dim: int = 80
    dim: int = 16


class ToyLinearEncoder(nn.Module):
    """A deterministic per-frame encoder (no dropout, no random regularizers): what a test needs
    to compare training runs bit for bit."""

    config_cls = ToyLinearConfig
    frame_shift = 0.01

    def __init__(self, cfg: ToyLinearConfig):
        super().__init__()
        self.proj = nn.Linear(cfg.feature_dim, cfg.dim)
        self.output_dim = cfg.dim

    def forward(self, x, x_lens):
        return torch.tanh(self.proj(x)), x_lens
