"""Utterance classification: encoder -> pooling -> linear -> one label per cut.

The smallest task that is not ASR, and the pattern the family tasks start from: labels come
from the manifests (``label_key``: a supervision field such as ``speaker``, ``gender``,
``language``, or ``custom.<key>``), the label map is built from the training cuts and saved in
the model folder, a cut without a label ("", None, "Null") is left out of the loss (never
guessed), validation reports accuracy, and decoding returns labels with probabilities.

Targets (``batch["targets"]``): ``labels`` long (B,) class ids, -100 where the label is missing
or unknown; ``refs`` [str|None] * B.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import torch
from torch import nn

from auden_kit.errors import UserError
from auden_kit.heads.pooling import build_pooling
from auden_kit.hub import build_encoder, encoder_config
from auden_kit.results import ClassificationResult
from auden_kit.tasks.base import ModelAssets, Task

log = logging.getLogger(__name__)
MISSING = ("", None, "null", "none")


def cut_label(cut, key: str):
    """The value of ``key`` on the cut's first supervision (``custom.x`` reads custom fields);
    None when absent."""
    if not cut.supervisions:
        return None
    s = cut.supervisions[0]
    if key.startswith("custom."):
        v = (s.custom or {}).get(key[len("custom."):])
    else:
        v = getattr(s, key, None)
    if v is None or (isinstance(v, str) and v.strip().lower() in MISSING):
        return None
    return str(v)


@dataclasses.dataclass
class ClassifierModelConfig:
    encoder_type: str = "zipformer"
    encoder: Any = dataclasses.field(default_factory=dict)
    label_key: str = "speaker"
    pooling: str = "mean"
    dropout: float = 0.1
    num_classes: int = 0  # 0: from the label map

    def __post_init__(self):
        self.encoder = encoder_config(self.encoder_type, self.encoder)

    def validate(self):
        build_pooling(self.pooling)
        if not 0 <= self.dropout < 1:
            raise UserError(f"config key 'model.dropout' must be in [0, 1), got {self.dropout}")


class UtteranceClassifier(nn.Module):
    """forward(x (N, T, F), x_lens) -> logits (N, num_classes)."""

    def __init__(self, cfg: ClassifierModelConfig, num_classes: int):
        super().__init__()
        self.cfg = cfg
        self.encoder = build_encoder(cfg.encoder_type, cfg.encoder)
        self.pooling = build_pooling(cfg.pooling, self.encoder.output_dim)
        self.classifier = nn.Sequential(nn.Dropout(cfg.dropout),
                                        nn.Linear(self.pooling.output_dim(self.encoder.output_dim), num_classes))

    def forward(self, x: torch.Tensor, x_lens: torch.Tensor) -> torch.Tensor:
        enc, lens = self.encoder(x, x_lens)
        return self.classifier(self.pooling(enc, lens))


class ClassificationTask(Task):
    name = "classify"
    model_config_cls = ClassifierModelConfig
    metric = "accuracy"
    metric_lower_is_better = False

    @property
    def labels(self) -> list[str]:
        return self.assets.labels("labels")

    def build_assets(self, train_cfg, model_cfg, train_cuts) -> ModelAssets:
        assets = super().build_assets(train_cfg, model_cfg, train_cuts)
        found = sorted({lab for c in train_cuts if (lab := cut_label(c, model_cfg.label_key)) is not None})
        if len(found) < 2:
            raise UserError(f"config key 'model.label_key' is '{model_cfg.label_key}' but the training cuts have "
                            f"{len(found)} distinct value(s) of it; a classifier needs at least 2")
        log.info("label map '%s': %d classes (%s%s)", model_cfg.label_key, len(found), ", ".join(found[:8]),
                 ", ..." if len(found) > 8 else "")
        assets.label_maps["labels"] = found
        return assets

    def build_model(self) -> UtteranceClassifier:
        n = self.model_cfg.num_classes or len(self.labels)
        if n != len(self.labels):
            raise UserError(f"config key 'model.num_classes' is {n} but the label map has {len(self.labels)} labels")
        return UtteranceClassifier(self.model_cfg, n)

    def batch_targets(self, cuts, train: bool) -> dict:
        index = {lab: i for i, lab in enumerate(self.labels)}
        refs = [cut_label(c, self.model_cfg.label_key) for c in cuts]
        ids = [index.get(r, -100) if r is not None else -100 for r in refs]
        return {"labels": torch.tensor(ids, dtype=torch.long), "refs": refs}

    def compute_loss(self, model: UtteranceClassifier, batch: dict, step: int):
        logits = model(batch["inputs"], batch["input_lens"])
        y = batch["targets"]["labels"]
        known = y != -100
        n = int(known.sum())
        if n == 0:
            return logits.sum() * 0.0, {"loss": 0.0, "accuracy": 0.0}, 0.0
        loss = nn.functional.cross_entropy(logits.float(), y, ignore_index=-100, reduction="sum")
        correct = float((logits.argmax(-1)[known] == y[known]).sum())
        return loss, {"loss": float(loss.detach()), "accuracy": correct}, float(n)

    @torch.no_grad()
    def infer(self, model: UtteranceClassifier, batch: dict, top_k: int = 5, **_) -> list[ClassificationResult]:
        probs = model(batch["inputs"], batch["input_lens"]).float().softmax(-1)
        k = min(top_k, probs.shape[1])
        top = probs.topk(k, dim=-1)
        refs = batch.get("targets", {}).get("refs") or [None] * probs.shape[0]
        ids = batch.get("cut_ids") or [str(i) for i in range(probs.shape[0])]
        head = self.model_cfg.label_key
        out = []
        for cid, vals, idx, ref in zip(ids, top.values.tolist(), top.indices.tolist(), refs):
            out.append(ClassificationResult(cut_id=cid, labels={head: [(self.labels[i], p) for i, p in zip(idx, vals)]},
                                            refs={head: ref} if ref is not None else {}))
        return out

    def evaluate(self, results: list[ClassificationResult]) -> dict:
        head = self.model_cfg.label_key
        scored = [r for r in results if head in r.refs]
        if not scored:
            return {}
        from auden_kit.metrics.classification import classification_report

        rep = classification_report([r.refs[head] for r in scored], [r.best(head) for r in scored])
        return {"accuracy": rep["accuracy"], "macro_f1": rep["macro_f1"], "uar": rep["uar"]}
