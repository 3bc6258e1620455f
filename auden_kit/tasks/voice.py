"""Voice encoders: one utterance embedding for speaker verification/identification, plus
classification heads for paralinguistic labels (gender, emotion, age, ...), trained together.

    encoder (Zipformer by default) -> pooling (mean, mean_std, attentive_stats) -> pooled
    pooled -> Linear -> embedding -> AAM-softmax speaker head (scale, margin ramped 0 -> margin,
                                     sub-centres)
    pooled -> one linear head per extra label, each with its loss weight
    pitch rows -> pitch statistics (prosody, register) -> the heads that ``head_inputs`` points there

The extra heads read the pooled statistics, not the speaker embedding: the AAM loss makes the
embedding invariant to whatever varies within a speaker (speaking style, emotion), which is
exactly what those heads must see (measured on mini_synth_voice: style accuracy 69 % from the
embedding after 12 epochs).

Labels come from the manifests: ``speaker_key`` (default the supervision's ``speaker``) and
``heads`` (supervision fields such as ``gender`` or ``custom.<key>``); their label maps are built
from the training cuts and saved in the model folder. A label missing on a cut ("", None,
"Null") is left out of that head's loss, never guessed. ``crop_seconds`` trains on a random crop
of each cut, drawn anew every epoch (seeded per batch, so resuming is exact).

``head_inputs`` lets a head read statistics of the utterance's pitch instead of, or besides, the
pooled encoder statistics (:class:`~auden_kit.heads.pooling.PitchStats`: ``prosody``, the
intonation; ``register``, where the voice sits), computed from the pitch rows of ``auden-kit data
fbank --pitch`` features before SpecAugment; the encoder then reads the filterbank rows only.
Measured on mini_synth_voice (RESULTS): with 48 training voices the pooled statistics learn the
training voices' style and gender (99-100 %) but not those of new voices (64-83 %); the pitch
statistics carry over. ``balanced_heads`` weights a head's classes by their inverse frequency in
the training cuts (counts kept in the model folder's ``data_stats``).

Targets (``batch["targets"]``): ``{head: long (B,)}`` class ids (-100 = missing) and
``refs: {head: [str|None] * B}``. The loss is normalised by the number of utterances.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from collections import Counter
from typing import Any

import torch
from torch import nn

from auden_kit.data.features import FRAME_SHIFT
from auden_kit.data.pitch import NUM_PITCH_FEATURES
from auden_kit.errors import UserError
from auden_kit.heads.pooling import PitchStats, build_pooling
from auden_kit.hub import build_encoder, encoder_config
from auden_kit.losses.margin import AAMSoftmax, margin_schedule
from auden_kit.results import ClassificationResult, EmbeddingResult
from auden_kit.tasks.base import ModelAssets, Task
from auden_kit.tasks.classify import cut_label

log = logging.getLogger(__name__)
HEAD_SOURCES = ("pooled", *PitchStats.GROUPS)  # a head reads one or several, joined by "+"
MAX_REPORTED_CLASSES = 12  # per-class F1 for heads up to this size (not for hundreds of speakers)


@dataclasses.dataclass
class VoiceResult(ClassificationResult):
    """Labels with probabilities per head, and the utterance embedding."""

    embedding: list = dataclasses.field(default_factory=list)
    weight: float = 1.0  # seconds behind it (pieces of a long recording are averaged by it)

    def to_dict(self) -> dict:
        return {**super().to_dict(), "embedding": [round(v, 6) for v in self.embedding]}

    @classmethod
    def merge(cls, pieces, cut_id):
        labels = ClassificationResult.merge(pieces, cut_id)
        emb, total = EmbeddingResult.weighted_mean(pieces)
        return cls(cut_id=cut_id, labels=labels.labels, refs=labels.refs, embedding=emb, weight=total)


@dataclasses.dataclass
class VoiceModelConfig:
    encoder_type: str = "zipformer"
    encoder: Any = dataclasses.field(default_factory=dict)
    pooling: str = "mean_std"
    embed_dim: int = 192
    speaker_key: str = "speaker"  # "" trains no speaker head
    aam_scale: float = 32.0
    aam_margin: float = 0.2
    margin_start_step: int = 0  # the margin ramps from 0 to aam_margin between these steps
    margin_end_step: int = 2000
    sub_centers: int = 1
    speaker_weight: float = 1.0
    heads: list[str] = dataclasses.field(default_factory=list)  # e.g. [gender, custom.emotion]
    head_weights: dict = dataclasses.field(default_factory=dict)  # {head: loss weight}, default 1
    crop_seconds: float = 0.0  # training: a random crop of this length per cut (0: whole cuts)
    # numeric labels as groups: {head: [edges]}, e.g. {custom.age: [18, 40, 61]} gives the classes
    # "<18", "18-39", "40-60", ">=61" (Auden-Voice's age groups)
    label_bins: dict = dataclasses.field(default_factory=dict)
    # what a head reads: {head: "pooled" (the default), "prosody", "register" or several joined by
    # "+", e.g. "pooled+prosody"}; the pitch statistics need data.fbank.pitch=true
    head_inputs: dict = dataclasses.field(default_factory=dict)
    # heads whose classes are weighted by inverse frequency in the training cuts (e.g. [gender])
    balanced_heads: list[str] = dataclasses.field(default_factory=list)

    def __post_init__(self):
        self.encoder = encoder_config(self.encoder_type, self.encoder)

    def validate(self):
        build_pooling(self.pooling, 1)
        if self.embed_dim < 1 or self.aam_scale <= 0 or not 0 <= self.aam_margin < 1.5 or self.sub_centers < 1:
            raise UserError("config keys 'model.embed_dim' (>= 1), 'model.aam_scale' (> 0), 'model.aam_margin' "
                            f"(in [0, 1.5)), 'model.sub_centers' (>= 1): got {self.embed_dim}, {self.aam_scale}, "
                            f"{self.aam_margin}, {self.sub_centers}")
        if not self.speaker_key and not self.heads:
            raise UserError("config keys 'model.speaker_key' / 'model.heads': a voice model needs at least one head")
        unknown = set(self.head_weights) - set(self.heads) - {self.speaker_key}
        if unknown:
            raise UserError(f"config key 'model.head_weights' names heads that are not in model.heads: {sorted(unknown)}")
        for h, edges in self.label_bins.items():
            if h not in self.all_heads():
                raise UserError(f"config key 'model.label_bins' names '{h}', which is not in model.heads")
            if not edges or list(edges) != sorted(edges) or not all(isinstance(e, (int, float)) for e in edges):
                raise UserError(f"config key 'model.label_bins.{h}' must be increasing numbers, got {edges}")
        if self.crop_seconds < 0:
            raise UserError(f"config key 'model.crop_seconds' must be >= 0, got {self.crop_seconds}")
        for h, src in self.head_inputs.items():
            if h not in self.heads:
                raise UserError(f"config key 'model.head_inputs' names '{h}', which is not in model.heads "
                                f"({self.heads}; the speaker head reads the embedding only)")
            parts = str(src).split("+")
            if not parts or any(p not in HEAD_SOURCES for p in parts) or len(set(parts)) != len(parts):
                raise UserError(f"config key 'model.head_inputs.{h}' must name one or more of "
                                f"{', '.join(HEAD_SOURCES)} joined by '+', got '{src}'")
        bad = [h for h in self.balanced_heads if h not in self.heads]
        if bad:
            raise UserError(f"config key 'model.balanced_heads' names {bad}, which are not in model.heads "
                            f"({self.heads})")

    def head_sources(self, head: str) -> list[str]:
        return str(self.head_inputs.get(head, "pooled")).split("+")

    def reads_pitch(self) -> bool:
        """Whether any head reads pitch statistics."""
        return any(p != "pooled" for h in self.head_inputs for p in self.head_sources(h))

    def encoder_rows(self, fbank) -> int:
        """Feature rows the encoder reads: all of them, or the filterbank only when the pitch rows
        go to the pitch statistics."""
        if not self.reads_pitch():
            return fbank.num_features
        if not fbank.pitch:
            raise UserError("config key 'model.head_inputs' reads pitch statistics, which need pitch features: "
                            "compute them with `auden-kit data fbank --pitch` and train with data.fbank.pitch=true")
        return fbank.num_mel_bins

    def all_heads(self) -> list[str]:
        return ([self.speaker_key] if self.speaker_key else []) + list(self.heads)


class VoiceEncoder(nn.Module):
    """forward(x (N, T, F), x_lens) -> embeddings (N, E); ``pooled_and_embedding`` gives both the
    pooled statistics and the embedding; ``logits`` maps them to a head's logits."""

    def __init__(self, cfg: VoiceModelConfig, num_classes: dict[str, int]):
        super().__init__()
        self.cfg = cfg
        self.encoder = build_encoder(cfg.encoder_type, cfg.encoder)
        self.pooling = build_pooling(cfg.pooling, self.encoder.output_dim)
        pooled_dim = self.pooling.output_dim(self.encoder.output_dim)
        self.embedding = nn.Linear(pooled_dim, cfg.embed_dim)
        self.pitch_stats = PitchStats() if cfg.reads_pitch() else None
        self.heads = nn.ModuleDict()
        sizes = {"pooled": pooled_dim, **{g: sl.stop - sl.start for g, sl in PitchStats.GROUPS.items()}}
        for head, n in num_classes.items():
            if head == cfg.speaker_key:
                self.heads[_name(head)] = AAMSoftmax(cfg.embed_dim, n, cfg.aam_scale, cfg.aam_margin, cfg.sub_centers)
            else:
                self.heads[_name(head)] = nn.Linear(sum(sizes[p] for p in cfg.head_sources(head)), n)

    def pooled_and_embedding(self, x: torch.Tensor, x_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rows = getattr(self.cfg.encoder, "feature_dim", None)  # None: all; pitch rows, if any, come last
        enc, lens = self.encoder(x[..., :rows], x_lens)
        pooled = self.pooling(enc, lens)
        return pooled, self.embedding(pooled)

    def pitch_statistics(self, x: torch.Tensor, x_lens: torch.Tensor) -> torch.Tensor | None:
        """(N, PitchStats.NUM_STATS) from the pitch rows of ``x`` (clean features), or None. Out of
        training, an utterance longer than the training crops is read in windows of their length."""
        if self.pitch_stats is None:
            return None
        span = 0 if self.training else int(round(self.cfg.crop_seconds / FRAME_SHIFT))
        return self.pitch_stats(x[..., -NUM_PITCH_FEATURES:], x_lens, span)

    def forward(self, x: torch.Tensor, x_lens: torch.Tensor) -> torch.Tensor:
        return self.pooled_and_embedding(x, x_lens)[1]

    def logits(self, head: str, pooled: torch.Tensor, emb: torch.Tensor,
               labels: torch.Tensor | None = None, pitch: torch.Tensor | None = None) -> torch.Tensor:
        """Training logits (the speaker head adds its margin to ``labels``); inference: plain."""
        h = self.heads[_name(head)]
        if isinstance(h, AAMSoftmax):
            return h(emb, labels) if labels is not None else h.scale * h.cosine(emb)
        parts = [pooled if p == "pooled" else pitch[:, PitchStats.GROUPS[p]].to(pooled.dtype)
                 for p in self.cfg.head_sources(head)]
        return h(parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1))


def _name(head: str) -> str:
    return head.replace(".", "_")


def bin_label(value: str, edges: list[float]) -> str:
    """The group of a numeric label: edges [18, 40, 61] -> "<18", "18-39", "40-60", ">=61"."""
    x = float(value)
    if x < edges[0]:
        return f"<{edges[0]:g}"
    for lo, hi in zip(edges, edges[1:]):
        if x < hi:
            return f"{lo:g}-{hi - 1:g}" if float(lo).is_integer() and float(hi).is_integer() else f"{lo:g}-{hi:g}"
    return f">={edges[-1]:g}"


def voice_label(cut, head: str, cfg: VoiceModelConfig):
    """A cut's label for ``head`` (None when missing), grouped when ``cfg.label_bins`` says so."""
    v = cut_label(cut, head)
    if v is None or head not in cfg.label_bins:
        return v
    try:
        return bin_label(v, cfg.label_bins[head])
    except ValueError:
        raise UserError(f"cut '{cut.id}': '{head}' is '{v}', not a number, but model.label_bins groups it "
                        "(fix the manifest, or mark it missing with an empty value)") from None


class RandomCrop:
    """Cut transform: cuts longer than ``seconds`` become a random ``seconds``-long window (the
    data module re-seeds ``random`` per batch, so crops are reproducible and differ per epoch)."""

    def __init__(self, seconds: float):
        self.seconds = seconds

    def __call__(self, cuts):
        from lhotse import CutSet

        out = []
        for c in cuts:
            if c.duration > self.seconds + 1e-3:
                start = random.uniform(0.0, c.duration - self.seconds)
                c = c.truncate(offset=start, duration=self.seconds, keep_excessive_supervisions=True)
            out.append(c)
        return CutSet.from_cuts(out)


class VoiceTask(Task):
    name = "voice"
    model_config_cls = VoiceModelConfig

    @property
    def needs_clean_inputs(self) -> bool:  # pitch statistics read the pitch rows before SpecAugment
        cfg = getattr(self, "model_cfg", None)
        return bool(cfg is not None and cfg.reads_pitch())

    def build_assets(self, train_cfg, model_cfg, train_cuts) -> ModelAssets:
        assets = super().build_assets(train_cfg, model_cfg, train_cuts)
        found: dict[str, Counter] = {h: Counter() for h in model_cfg.all_heads()}
        for c in train_cuts:
            for h in found:
                lab = voice_label(c, h, model_cfg)
                if lab is not None:
                    found[h][lab] += 1
        for h, labs in found.items():
            if len(labs) < 2:
                raise UserError(f"voice head '{h}': the training cuts hold {len(labs)} distinct value(s) of it; "
                                "a head needs at least 2 (check the manifests' supervisions)")
            assets.label_maps[_name(h)] = sorted(labs)
            log.info("head '%s': %d classes", h, len(labs))
        if model_cfg.balanced_heads:
            assets.data_stats["class_counts"] = {
                h: [found[h][lab] for lab in assets.label_maps[_name(h)]] for h in model_cfg.balanced_heads}
        return assets

    def class_weights(self, head: str) -> torch.Tensor | None:
        """Inverse-frequency class weights of a balanced head (mean weight over the training cuts
        1), or None."""
        if head not in self.model_cfg.balanced_heads:
            return None
        counts = (self.assets.data_stats.get("class_counts") or {}).get(head)
        if counts is None:
            raise UserError(f"config key 'model.balanced_heads' names '{head}', but the model's data_stats hold no "
                            "class counts for it (they are counted when a training starts; start it afresh)")
        counts = torch.tensor(counts, dtype=torch.float32)
        return counts.sum() / (len(counts) * counts.clamp(min=1))

    def build_model(self) -> VoiceEncoder:
        return VoiceEncoder(self.model_cfg, {h: len(self.assets.labels(_name(h))) for h in self.model_cfg.all_heads()})

    def cut_transforms(self, data_cfg, train: bool) -> list:
        return [RandomCrop(self.model_cfg.crop_seconds)] if train and self.model_cfg.crop_seconds > 0 else []

    def _label_index(self, head: str) -> dict:
        """{label: class id} of a head, built once per worker (not per batch: VoxCeleb with speed
        copies has ~18k speakers)."""
        labels = self.assets.labels(_name(head))
        cache = self.__dict__.setdefault("_label_indices", {})
        if head not in cache or cache[head][0] is not labels:  # rebuilt when setup() brings new assets
            cache[head] = (labels, {lab: i for i, lab in enumerate(labels)})
        return cache[head][1]

    def batch_targets(self, cuts, train: bool) -> dict:
        out: dict = {"refs": {}}
        for h in self.model_cfg.all_heads():
            index = self._label_index(h)
            refs = [voice_label(c, h, self.model_cfg) for c in cuts]
            out[h] = torch.tensor([index.get(r, -100) if r is not None else -100 for r in refs], dtype=torch.long)
            out["refs"][h] = refs
        return out

    def compute_loss(self, model: VoiceEncoder, batch: dict, step: int):
        cfg = model.cfg
        pooled, emb = model.pooled_and_embedding(batch["inputs"], batch["input_lens"])
        pitch = model.pitch_statistics(batch.get("clean_inputs", batch["inputs"]), batch["input_lens"])
        if cfg.speaker_key:
            model.heads[_name(cfg.speaker_key)].margin = margin_schedule(step, cfg.aam_margin, cfg.margin_start_step,
                                                                        cfg.margin_end_step)
        loss = emb.new_zeros((), dtype=torch.float32)
        stats = {}
        for h in cfg.all_heads():
            y = batch["targets"][h]
            known = y != -100
            if not bool(known.any()):
                continue
            logits = model.logits(h, pooled, emb, y, pitch)
            weight = self.class_weights(h)
            ce = nn.functional.cross_entropy(logits.float(), y, ignore_index=-100, reduction="sum",
                                             weight=None if weight is None else weight.to(logits.device))
            w = cfg.speaker_weight if h == cfg.speaker_key else float(cfg.head_weights.get(h, 1.0))
            loss = loss + w * ce
            stats[f"{_name(h)}_loss"] = float(ce.detach())
            stats[f"{_name(h)}_accuracy"] = float((logits.argmax(-1)[known] == y[known]).sum())
        stats["loss"] = float(loss.detach())
        return loss, stats, float(emb.shape[0])

    @torch.no_grad()
    def infer(self, model: VoiceEncoder, batch: dict, top_k: int = 5, **_) -> list[VoiceResult]:
        pooled, emb = model.pooled_and_embedding(batch["inputs"], batch["input_lens"])
        pitch = model.pitch_statistics(batch["inputs"], batch["input_lens"])
        emb = emb.float()
        n = emb.shape[0]
        ids = batch.get("cut_ids") or [str(i) for i in range(n)]
        refs = batch.get("targets", {}).get("refs", {})
        labels: list[dict] = [{} for _ in range(n)]
        for h in model.cfg.all_heads():
            names = self.assets.labels(_name(h))
            probs = model.logits(h, pooled, emb, pitch=pitch).float().softmax(-1)
            top = probs.topk(min(top_k, probs.shape[1]), dim=-1)
            for i, (vals, idx) in enumerate(zip(top.values.tolist(), top.indices.tolist())):
                labels[i][h] = [(names[j], p) for j, p in zip(idx, vals)]
        seconds = (batch["input_lens"].float() * FRAME_SHIFT).tolist()
        return [VoiceResult(cut_id=ids[i], labels=labels[i],
                            refs={h: r[i] for h, r in refs.items() if r[i] is not None},
                            embedding=emb[i].tolist(), weight=seconds[i]) for i in range(n)]

    def evaluate(self, results: list[VoiceResult]) -> dict:
        """Per head: accuracy; for heads with at most ``MAX_REPORTED_CLASSES`` classes also macro F1,
        UAR and each class's F1 (``gender_f1_F``, ...)."""
        from auden_kit.metrics.classification import classification_report

        out = {}
        for h in self.model_cfg.all_heads():
            known = set(self.assets.labels(_name(h)))  # e.g. unseen test speakers are not scored
            scored = [r for r in results if r.refs.get(h) in known]
            if not scored:
                continue
            rep = classification_report([r.refs[h] for r in scored], [r.best(h) for r in scored])
            out[f"{_name(h)}_accuracy"] = rep["accuracy"]
            if len(rep["per_class"]) <= MAX_REPORTED_CLASSES:
                out[f"{_name(h)}_macro_f1"] = rep["macro_f1"]
                out[f"{_name(h)}_uar"] = rep["uar"]
                out.update({f"{_name(h)}_f1_{c}": v["f1"] for c, v in rep["per_class"].items()})
        return out
