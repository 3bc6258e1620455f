"""The task plugin interface: what every task family (ASR, ST, voice, SSL, distillation,
diarized ASR, ...) implements, and the contract the trainer and data module rely on.

A task is found by name (``task: asr`` in a config) through :mod:`auden_kit.hub`: built-in
tasks are listed there, external packages add theirs through the ``auden_kit.tasks`` entry-point
group. The trainer, data module, model folders and CLI know nothing task-specific.

Life of a task object
---------------------
1. ``task.setup(model_cfg, assets)`` once the model config is validated and the assets (named
   tokenizers, label maps) are known. Training builds assets with :meth:`Task.build_assets`
   (from the config and the training manifests); a model folder stores them.
2. ``task.build_model()`` -> ``nn.Module``.
3. Data workers call ``task.batch_targets(cuts, train)`` for every batch; the task is pickled
   into the workers, so keep it light (tokenizers are picklable).
4. The trainer calls ``task.compute_loss(model, batch, step)`` and ``task.validate(...)``.
5. Inference calls ``task.infer(model, batch, **options)`` -> typed :mod:`results` and
   ``task.merge(pieces)`` to stitch the pieces of a long recording.

Batch contract (shape legend: B batch rows, T feature frames, F feature bins)::

    inputs        float (B, T, F) features, zero-padded; augmented (SpecAugment) in training
    input_lens    long  (B,) valid frames per row
    clean_inputs  float (B, T, F) the same features without input augmentation; present only
                  when ``task.needs_clean_inputs`` (masked-prediction targets, distillation)
    cut_ids       [str] * B
    cuts          the Lhotse CutSet of the batch, in row order (all supervisions, MixedCut
                  tracks, ``custom`` fields)
    targets       dict: whatever ``task.batch_targets`` returned (texts, label ids, ...)

Every tensor in the batch (also inside ``targets``) is moved to the training device by the
trainer; everything else stays as is.

Loss contract: ``compute_loss`` returns ``(loss, stats, count)``: ``loss`` is a scalar *summed*
over the batch, ``count`` is what it is normalised by (frames, tokens or utterances: the task
decides); the trainer back-propagates ``loss / count`` (summed over accumulated batches and
ranks the same way) and logs every ``stats[k] / count``. ``stats["loss"]`` must be present.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import torch
from torch import nn

from auden_kit.errors import UserError
from auden_kit.results import Result, TextResult

DecodeResult = TextResult  # the name used before results were typed per task


@dataclasses.dataclass
class ModelAssets:
    """What a model needs besides weights and config: named tokenizers and label maps.

    ``tokenizers``: {name: Tokenizer}, e.g. {"text": bpe} for ASR, {"src": ..., "tgt": ...} for ST.
    ``label_maps``: {name: [label, ...]}, the index of a label is its class id.
    """

    tokenizers: dict = dataclasses.field(default_factory=dict)
    label_maps: dict = dataclasses.field(default_factory=dict)
    #: facts about the training data that inference uses (e.g. ``duration_p50``: the median
    #: training-cut length, to which pieces of long recordings are merged)
    data_stats: dict = dataclasses.field(default_factory=dict)

    def tokenizer(self, name: str = "text"):
        if name not in self.tokenizers:
            have = ", ".join(sorted(self.tokenizers)) or "none"
            raise UserError(f"this model has no tokenizer '{name}' (it has: {have}); give one with "
                            f"config key 'tokenizers.{name}' (a folder with tokenizer.yaml)")
        return self.tokenizers[name]

    def labels(self, name: str) -> list[str]:
        if name not in self.label_maps:
            have = ", ".join(sorted(self.label_maps)) or "none"
            raise UserError(f"this model has no label map '{name}' (it has: {have})")
        return self.label_maps[name]


class Task:
    """Base class of task plugins. Subclasses set ``name`` and ``model_config_cls`` and
    implement :meth:`build_model`, :meth:`batch_targets`, :meth:`compute_loss`, :meth:`infer`."""

    name: str = "base"
    model_config_cls: type = object
    #: the task reads ``clean_inputs`` (features before SpecAugment) from the batch
    needs_clean_inputs: bool = False
    #: decoding methods ``infer`` accepts (first = default); empty: the task has one way
    decode_methods: tuple[str, ...] = ()
    #: validation metric the best checkpoints are chosen by, and whether lower is better
    metric: str = "loss"
    metric_lower_is_better: bool = True
    #: options of :meth:`infer` used when validation decodes (e.g. a cheaper search)
    validate_options: dict = {}
    #: further keyword options of :meth:`infer` that the CLI may pass (e.g. ``tgt_lang``)
    infer_options: tuple[str, ...] = ()
    #: parameter-name prefixes of training-only modules (an auxiliary loss's towers): a model folder
    #: loaded for inference builds the model of :meth:`inference_config` and leaves them out
    training_only: tuple[str, ...] = ()

    def __init__(self):
        self.model_cfg: Any = None
        self.assets = ModelAssets()

    # ---------------------------------------------------------------- set-up
    def build_assets(self, train_cfg, model_cfg, train_cuts) -> ModelAssets:
        """Tokenizers and label maps for a new training run (``train_cfg.tokenizers`` are loaded;
        a task with labels builds its maps from ``train_cuts``, a lazy CutSet)."""
        from auden_kit.tokenizers import load_tokenizer

        return ModelAssets(tokenizers={k: load_tokenizer(v) for k, v in train_cfg.all_tokenizers().items()})

    def setup(self, model_cfg, assets: ModelAssets) -> "Task":
        self.model_cfg = model_cfg
        self.assets = assets
        return self

    def build_model(self) -> nn.Module:
        raise NotImplementedError

    def inference_config(self, model_cfg):
        """The model config a loaded model folder is built from (default: as trained). A task with
        training-only parts switches them off here, so that inference needs nothing outside the
        folder (e.g. the Hugging Face text tower of an alignment loss)."""
        return model_cfg

    # ---------------------------------------------------------------- data
    def cut_transforms(self, data_cfg, train: bool) -> list[Callable]:
        """Extra cut transforms this task needs (e.g. random crops), applied after the data
        module's own (speed perturbation, noise) and before features are read."""
        return []

    def keep_training_cut(self, cut) -> bool:
        """False drops ``cut`` from the training data (a task's data filter, e.g. TagSpeech's);
        validation, decoding and scoring see every cut."""
        return True

    def batch_targets(self, cuts, train: bool) -> dict:
        """Targets of a batch from its cuts (runs in data workers). Raise UserError naming the
        cut id for a cut the task cannot use."""
        return {}

    # ---------------------------------------------------------------- training
    def compute_loss(self, model: nn.Module, batch: dict, step: int) -> tuple[torch.Tensor, dict, float]:
        """Return (loss summed over the batch, {name: summed value}, normaliser count)."""
        raise NotImplementedError

    @torch.no_grad()
    def validate(self, model: nn.Module, batches, step: int, decode: bool = True) -> dict:
        """Validation metrics ({name: value}) over ``batches`` (already on the device).
        Default: the loss terms only; tasks with a metric also run inference (unless not ``decode``)."""
        tot: dict = {}
        count = 0.0
        results: list = []
        want_results = decode and type(self).evaluate is not Task.evaluate
        for batch in batches:
            _, stats, n = self.compute_loss(model, batch, step)
            for k, v in stats.items():
                tot[k] = tot.get(k, 0.0) + v
            count += n
            if want_results:
                results += self.infer(model, batch, **self.validate_options)
        out = {k: v / max(count, 1e-9) for k, v in tot.items()}
        if want_results:
            out.update(self.evaluate(results))
        return out

    # ---------------------------------------------------------------- inference
    def default_method(self, model: nn.Module) -> str:
        return self.decode_methods[0] if self.decode_methods else ""

    def check_method(self, model: nn.Module, method: str) -> str:
        method = method or self.default_method(model)
        if self.decode_methods and method not in self.decode_methods:
            raise UserError(f"unknown decoding method '{method}' (choose from {', '.join(self.decode_methods)})")
        return method

    @torch.no_grad()
    def infer(self, model: nn.Module, batch: dict, **options) -> list[Result]:
        """Results for every row of ``batch`` (refs filled in when the batch has targets)."""
        raise NotImplementedError

    @staticmethod
    def encoder_embeddings(model: nn.Module, batch: dict) -> list:
        """The mean-pooled ``model.encoder`` output of each row as :class:`EmbeddingResult` (what
        loss-only tasks such as ``ssl`` and ``distill`` return from ``infer``)."""
        from auden_kit.heads.pooling import MeanPooling
        from auden_kit.results import EmbeddingResult

        enc, lens = model.encoder(batch["inputs"], batch["input_lens"])
        pooled = MeanPooling()(enc, lens)
        ids = batch.get("cut_ids") or [str(i) for i in range(len(pooled))]
        return [EmbeddingResult(cut_id=c, embedding=e.tolist(), weight=float(n) * model.encoder.frame_shift)
                for c, e, n in zip(ids, pooled, lens)]

    def silent_result(self, cut_id: str) -> Result:
        """The result of audio with no signal at all (digital silence), decoded without running
        the model: tasks that read speech return an empty one (no words, no speakers); the others
        (embeddings, labels) have nothing to describe, so the input is an error."""
        raise UserError(f"audio '{cut_id}' holds no signal (digital silence, nothing above about -90 dBFS): "
                        "nothing to embed or classify; check the file or leave it out")

    def merge(self, pieces: Sequence[tuple[float, Result]], cut_id: str) -> Result:
        """Stitch the results of consecutive pieces of one long recording; ``pieces`` holds
        (offset in seconds, result). Default: the results' own ``merge``."""
        return type(pieces[0][1]).merge(pieces, cut_id)

    def evaluate(self, results: list[Result]) -> dict:
        """Metrics from results that carry references (e.g. {"wer": 3.1})."""
        return {}

    def write_results(self, results: list[Result], out_dir, name: str) -> str:
        """Write ``results-<name>.jsonl`` (one result per line) and ``metrics-<name>.json`` (what
        :meth:`evaluate` gives) for a decoded manifest; return a one-line summary."""
        import json

        from auden_kit.io import atomic_write_text

        lines = [json.dumps(r.to_dict(), ensure_ascii=False) for r in results]
        atomic_write_text(f"{out_dir}/results-{name}.jsonl", "\n".join(lines) + "\n")
        metrics = self.evaluate(results)
        atomic_write_text(f"{out_dir}/metrics-{name}.json", json.dumps(metrics, indent=1) + "\n")
        return ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()) or f"{len(results)} results"
