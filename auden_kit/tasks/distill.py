"""Distillation of an encoder from one or more frozen teachers (USAD / DistilHuBERT style).

    teacher(s) -> per-layer features at their frame rate (frozen, eval, no gradient)
    student encoder -> taps (Zipformer: every stack's output, then the encoder output)
    for each teacher t and each of its K (student tap, teacher layer) pairs:
        FC-GELU-FC head(student tap) -> prediction of the teacher layer, standardised by the
        teacher layer's running statistics; frame rates aligned by average pooling
        loss per frame = L1 - log sigmoid(cosine)
    teachers weighted per cut: ``domain_weight`` (USAD's omega, 10) for a teacher whose
    ``domains`` contain the cut's domain (``domain_key``, e.g. ``custom.domain``), 1 otherwise,
    normalised to sum 1 over teachers (equal when the cut has no domain).

Teachers (``model.teachers``, a list; each ``{name, kind, path, layers, student_taps, domains}``):

* ``kind: model`` an auden-kit model folder; its encoder's taps (the stacks and the output) are
  the layers; reads the same fbank as the student.
* ``kind: hf`` a Hugging Face WavLM / HuBERT / wav2vec 2.0 model from a *local* folder (never
  the hub); ``hidden_states`` are the layers (0 = the CNN/projection output); reads 16 kHz
  audio, which the data workers load with each batch (each waveform zero-mean, unit-variance when
  the folder's ``preprocessor_config.json`` says ``do_normalize``, as for WavLM Large).
* ``kind: cached`` targets stored with the cuts by ``auden-kit data teacher-cache`` (compressed
  per-layer features in a ``custom`` array named ``teacher_<name>``): no teacher runs at all.

A teacher is wrapped in :class:`~auden_kit.nn.frozen.Frozen` and created on first use, so it is
never in the optimizer, the running average, checkpoints or the saved student, and loading a
distilled model folder does not need the teacher. The teachers' layer sizes and frame rates are
recorded in the model config when training starts.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from auden_kit.errors import UserError
from auden_kit.hub import build_encoder, encoder_config
from auden_kit.results import EmbeddingResult
from auden_kit.tasks.base import ModelAssets, Task
from auden_kit.tasks.classify import cut_label

log = logging.getLogger(__name__)
TEACHER_KINDS = ("model", "hf", "cached")
HF_RATE = 16000


@dataclasses.dataclass
class DistillModelConfig:
    encoder_type: str = "zipformer"
    encoder: Any = dataclasses.field(default_factory=dict)
    teachers: list = dataclasses.field(default_factory=list)
    head_hidden: int = 512
    domain_key: str = "custom.domain"
    domain_weight: float = 10.0
    stats_batches: int = 100  # batches over which each teacher layer's mean/variance is estimated

    def __post_init__(self):
        self.encoder = encoder_config(self.encoder_type, self.encoder)

    def validate(self):
        if not self.teachers:
            raise UserError("config key 'model.teachers' is empty: give at least one teacher "
                            "({name, kind: model|hf|cached, path, layers: [..], student_taps: [..]})")
        names = set()
        for i, t in enumerate(self.teachers):
            key = f"model.teachers[{i}]"
            if not isinstance(t, dict):
                raise UserError(f"config key '{key}' must be a mapping, got {t!r}")
            unknown = set(t) - {"name", "kind", "path", "layers", "student_taps", "domains", "dims", "frame_shift",
                                "loss", "code_shapes"}
            if unknown:
                raise UserError(f"config key '{key}': unknown field(s) {sorted(unknown)}")
            name = t.get("name") or ""
            if not name or not name.replace("_", "").isalnum() or name in names:
                raise UserError(f"config key '{key}.name' must be a unique identifier, got '{name}'")
            names.add(name)
            if t.get("kind") not in TEACHER_KINDS:
                raise UserError(f"config key '{key}.kind' must be one of {', '.join(TEACHER_KINDS)}, got "
                                f"'{t.get('kind')}'")
            if t["kind"] != "cached" and not t.get("path"):
                raise UserError(f"config key '{key}.path' is empty (a model folder)")
            if t.get("loss", "values") not in ("values", "codes"):
                raise UserError(f"config key '{key}.loss' must be values (regression) or codes (cross-entropy on "
                                f"vector-quantised codes), got '{t.get('loss')}'")
            if t.get("loss") == "codes" and t["kind"] != "cached":
                raise UserError(f"config key '{key}.loss' is codes, which needs kind: cached (a cache written "
                                "with `auden-kit data teacher-cache --codebooks M`)")
            layers, taps = t.get("layers") or [], t.get("student_taps") or []
            if not layers or len(layers) != len(taps):
                raise UserError(f"config keys '{key}.layers' and '{key}.student_taps' must be equally long, "
                                f"non-empty lists (K teacher layers for K student taps), got {layers} / {taps}")
        if self.head_hidden < 1 or self.domain_weight <= 0 or self.stats_batches < 1:
            raise UserError("config keys 'model.head_hidden' / 'model.domain_weight' / 'model.stats_batches' must "
                            "be positive")


# ------------------------------------------------------------------------------------ teachers
class ModelTeacher(nn.Module):
    """An auden-kit model folder's encoder; layers = its taps (stacks, then the output)."""

    needs_audio = False

    def __init__(self, path: str):
        super().__init__()
        from auden_kit.hub import load_pretrained
        from auden_kit.nn.frozen import Frozen

        if not Path(path, "config.yaml").is_file():
            raise UserError(f"teacher '{path}' is not a model folder (no config.yaml)")
        lm = load_pretrained(path)
        enc = getattr(lm.model, "encoder", None)
        if enc is None:
            raise UserError(f"teacher '{path}' (task {lm.task.name}) has no encoder")
        self.encoder = Frozen(enc)
        self.frame_shift = float(enc.frame_shift)
        self.dims = list(getattr(enc, "layer_dims", ())) + [enc.output_dim]
        self.features = lm.features
        self.feature_dim = int(lm.features.num_features)

    def forward(self, batch: dict) -> tuple[list[Tensor], Tensor]:
        x = batch.get("clean_inputs", batch["inputs"])
        out = self.encoder(x, batch["input_lens"], return_layers=True)
        enc, lens, layers = out
        return list(layers) + [enc], lens


class HfTeacher(nn.Module):
    """A Hugging Face speech encoder (WavLM, HuBERT, wav2vec 2.0) from a local folder."""

    needs_audio = True

    def __init__(self, path: str):
        super().__init__()
        from auden_kit.nn.frozen import Frozen

        if not Path(path, "config.json").is_file():
            raise UserError(f"teacher '{path}' has no config.json (give a local Hugging Face model folder; "
                            "nothing is downloaded)")
        try:
            from transformers import AutoConfig, AutoModel
        except ImportError:
            raise UserError("a Hugging Face teacher needs the 'transformers' package (pip install transformers)") \
                from None
        try:
            c = AutoConfig.from_pretrained(str(path), local_files_only=True)
        except Exception as e:  # noqa: BLE001 - an unreadable or unknown config.json
            raise UserError(f"teacher '{path}': its config.json cannot be read ({e.__class__.__name__}: {e})") from None
        if not getattr(c, "conv_stride", None) or not hasattr(c, "num_hidden_layers"):
            raise UserError(f"teacher '{path}' is a '{getattr(c, 'model_type', '?')}' model; a Hugging Face teacher "
                            "must be a speech encoder that reads the waveform (WavLM, HuBERT, wav2vec 2.0, "
                            "data2vec-audio)")
        try:
            model = AutoModel.from_pretrained(str(path), local_files_only=True)
        except Exception as e:  # noqa: BLE001 - missing or broken weights
            raise UserError(f"teacher '{path}': its weights cannot be loaded ({e.__class__.__name__}: "
                            f"{str(e).splitlines()[0] if str(e) else ''})") from None
        self.model = Frozen(model)
        stride = 1
        for s in c.conv_stride:
            stride *= s
        self.frame_shift = stride / HF_RATE
        self.dims = [c.hidden_size] * (c.num_hidden_layers + 1)
        self.use_mask = getattr(c, "feat_extract_norm", "layer") == "layer"
        # models trained on normalised waveforms (WavLM Large, wav2vec 2.0 large-lv60, ...) say so in their
        # feature extractor's config: each waveform zero-mean, unit-variance over its own samples
        pre = Path(path, "preprocessor_config.json")
        try:
            self.normalize = bool(json.loads(pre.read_text()).get("do_normalize", False)) if pre.is_file() else False
        except (ValueError, AttributeError) as e:
            raise UserError(f"teacher '{path}': {pre.name} cannot be read ({e})") from None

    def forward(self, batch: dict) -> tuple[list[Tensor], Tensor]:
        wav, wav_lens = batch["targets"]["audio"], batch["targets"]["audio_lens"]
        m = self.model.module
        if self.normalize:
            valid = (torch.arange(wav.shape[1], device=wav.device).unsqueeze(0) < wav_lens.unsqueeze(1)).to(wav.dtype)
            n = valid.sum(1, keepdim=True).clamp(min=1)
            mean = (wav * valid).sum(1, keepdim=True) / n
            var = (((wav - mean) * valid) ** 2).sum(1, keepdim=True) / n
            wav = (wav - mean) / torch.sqrt(var + 1e-7) * valid
        kw = {}
        if self.use_mask:
            kw["attention_mask"] = (torch.arange(wav.shape[1], device=wav.device).unsqueeze(0)
                                    < wav_lens.unsqueeze(1)).long()
        out = self.model(wav, output_hidden_states=True, **kw)
        lens = m._get_feat_extract_output_lengths(wav_lens).long()
        return list(out.hidden_states), lens


class CachedTeacher(nn.Module):
    """Targets stored with the cuts (``auden-kit data teacher-cache``): layers split from one array."""

    needs_audio = False

    def __init__(self, name: str, dims: list[int], frame_shift: float):
        super().__init__()
        self.name, self.dims, self.frame_shift = name, list(dims), float(frame_shift)

    def forward(self, batch: dict) -> tuple[list[Tensor], Tensor]:
        x, lens = batch["targets"]["cached"][self.name], batch["targets"]["cached_lens"][self.name]
        return list(x.split(self.dims, dim=-1)), lens


def open_teacher(t: dict) -> nn.Module:
    if t["kind"] == "model":
        return ModelTeacher(t["path"])
    if t["kind"] == "hf":
        return HfTeacher(t["path"])
    if not t.get("dims") or not t.get("frame_shift"):
        raise UserError(f"cached teacher '{t['name']}' needs its layer sizes: train once with the cuts written by "
                        "`auden-kit data teacher-cache` (they record them)")
    return CachedTeacher(t["name"], t["dims"], t["frame_shift"])


def cached_meta(cut, name: str) -> tuple[list[int], float]:
    arr = (cut.custom or {}).get(f"teacher_{name}") or (cut.custom or {}).get(f"teacher_{name}_codes")
    if arr is None:
        raise UserError(f"cut '{cut.id}' has no cached targets 'teacher_{name}' (write them with "
                        f"`auden-kit data teacher-cache --name {name}`)")
    dims = [int(v) for v in (cut.custom or {}).get(f"teacher_{name}_dims", [])]
    if not dims:
        raise UserError(f"cut '{cut.id}': cached targets 'teacher_{name}' lack their layer sizes")
    return dims, float(arr.frame_shift)


def cut_domain(cut, key: str):
    """The cut's domain: ``custom.<k>`` of the cut itself (unlabeled audio has no supervision), else
    of its first supervision, or any supervision field; None when absent."""
    if not key:
        return None
    if key.startswith("custom.") and cut.custom and cut.custom.get(key[len("custom."):]) not in (None, ""):
        return str(cut.custom[key[len("custom."):]])
    return cut_label(cut, key)


# ------------------------------------------------------------------------------------ model
def pool_time(x: Tensor, lens: Tensor, factor: int) -> tuple[Tensor, Tensor]:
    """Average ``factor`` consecutive frames: (N, T, C) -> (N, ceil(T/factor), C)."""
    if factor <= 1:
        return x, lens
    y = nn.functional.avg_pool1d(x.transpose(1, 2), factor, factor, ceil_mode=True).transpose(1, 2)
    return y, torch.div(lens + factor - 1, factor, rounding_mode="floor")


def codes_per_frame(t: dict, student_shift: float) -> int:
    """Teacher frames each student frame predicts (MVQ: a 40 ms student, 20 ms teacher codes: 2)."""
    return max(1, round(student_shift / t["frame_shift"]))


class DistillModel(nn.Module):
    """Student encoder + one FC-GELU-FC head per (teacher, tap), and the teachers' layer statistics."""

    def __init__(self, cfg: DistillModelConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = build_encoder(cfg.encoder_type, cfg.encoder)
        taps = list(getattr(self.encoder, "layer_dims", ())) + [self.encoder.output_dim]
        self.heads = nn.ModuleDict()
        for t in cfg.teachers:
            for k, (tap, layer) in enumerate(zip(t["student_taps"], t["layers"])):
                if not -len(taps) <= tap < len(taps):
                    raise UserError(f"teacher '{t['name']}': student tap {tap} does not exist (the student has "
                                    f"{len(taps)} taps: 0..{len(taps) - 2} stacks, {len(taps) - 1} the output)")
                d = t["dims"][layer]
                key = f"{t['name']}_{k}"
                out = d
                if t.get("loss") == "codes":  # logits of every codebook, for each teacher frame of a student frame
                    m, size = t["code_shapes"][layer]
                    out = codes_per_frame(t, self.encoder.frame_shift) * m * size
                self.heads[key] = nn.Sequential(nn.Linear(taps[tap], cfg.head_hidden), nn.GELU(),
                                                nn.Linear(cfg.head_hidden, out))
                self.register_buffer(f"stat_sum_{key}", torch.zeros(d, dtype=torch.float64))
                self.register_buffer(f"stat_sq_{key}", torch.zeros(d, dtype=torch.float64))
                self.register_buffer(f"stat_n_{key}", torch.zeros((), dtype=torch.float64))
        self._teachers = None  # created on first use (never part of the module tree)

    def teachers(self) -> dict:
        if self._teachers is None:
            from auden_kit.nn.frozen import Frozen

            dev = next(self.encoder.parameters()).device
            self._teachers = {t["name"]: Frozen(open_teacher(t)).to(dev) for t in self.cfg.teachers}
        return self._teachers

    def _apply(self, fn, recurse=True):
        if self._teachers:
            for t in self._teachers.values():
                t._apply(fn)
        return super()._apply(fn, recurse)

    def standardise(self, key: str, y: Tensor, mask: Tensor, update: bool) -> Tensor:
        s, q, n = (getattr(self, f"stat_{w}_{key}") for w in ("sum", "sq", "n"))
        if update:
            v = y[mask].double()
            s += v.sum(0)
            q += (v * v).sum(0)
            n += v.shape[0]
        mean = s / n.clamp(min=1)
        std = (q / n.clamp(min=1) - mean * mean).clamp(min=1e-8).sqrt()
        return ((y - mean.to(y.dtype)) / std.to(y.dtype))

    def forward(self, x: Tensor, x_lens: Tensor):
        return self.encoder(x, x_lens)


class DistillTask(Task):
    name = "distill"
    model_config_cls = DistillModelConfig
    needs_clean_inputs = True
    metric = "loss"

    def build_assets(self, train_cfg, model_cfg, train_cuts) -> ModelAssets:
        """Record every teacher's layer sizes and frame rate in the model config (the saved model is
        rebuilt from them without opening the teachers)."""
        assets = super().build_assets(train_cfg, model_cfg, train_cuts)
        first = next(iter(train_cuts), None)
        for t in model_cfg.teachers:
            if t["kind"] == "cached":
                if first is None:
                    raise UserError("the training manifest is empty")
                t["dims"], t["frame_shift"] = cached_meta(first, t["name"])
                if t.get("loss") == "codes":
                    books = (first.custom or {}).get(f"teacher_{t['name']}_vq")
                    if not books:
                        raise UserError(f"teacher '{t['name']}' has loss: codes but cut '{first.id}' holds values, "
                                        "not codes: write the cache with `auden-kit data teacher-cache --codebooks M`")
                    t["code_shapes"] = [list(_codebook(b).codebooks.shape[:2]) for b in books]
            else:
                te = open_teacher(t)
                t["dims"], t["frame_shift"] = te.dims, te.frame_shift
                if isinstance(te, ModelTeacher) and te.feature_dim != model_cfg.encoder.feature_dim:
                    raise UserError(f"teacher '{t['path']}' reads {te.feature_dim}-bin features but the student's "
                                    f"model.encoder.feature_dim is {model_cfg.encoder.feature_dim}")
            bad = [v for v in t["layers"] if not -len(t["dims"]) <= v < len(t["dims"])]
            if bad:
                raise UserError(f"teacher '{t['name']}' has {len(t['dims'])} layers (0..{len(t['dims']) - 1}); "
                                f"model.teachers layers {bad} do not exist")
            t["layers"] = [v % len(t["dims"]) for v in t["layers"]]
            log.info("teacher %s (%s): %d layers, %.0f ms frames, distilled layers %s into student taps %s",
                     t["name"], t["kind"], len(t["dims"]), 1000 * t["frame_shift"], t["layers"], t["student_taps"])
        return assets

    def build_model(self) -> DistillModel:
        for t in self.model_cfg.teachers:
            if not t.get("dims"):
                raise UserError(f"teacher '{t['name']}': its layer sizes are unknown (train first)")
        return DistillModel(self.model_cfg)

    def batch_targets(self, cuts, train: bool) -> dict:
        import numpy as np

        cfg = self.model_cfg
        out: dict = {"domains": [cut_domain(c, cfg.domain_key) for c in cuts]}
        if any(t["kind"] == "hf" for t in cfg.teachers):
            wavs = []
            for c in cuts:
                a = c.resample(HF_RATE).load_audio() if c.sampling_rate != HF_RATE else c.load_audio()
                wavs.append(torch.from_numpy(np.asarray(a, dtype=np.float32)).mean(0))
            lens = torch.tensor([len(w) for w in wavs])
            out["audio"] = nn.utils.rnn.pad_sequence(wavs, batch_first=True)
            out["audio_lens"] = lens
        cached = [t["name"] for t in cfg.teachers if t["kind"] == "cached"]
        if cached:
            out["cached"], out["cached_lens"] = {}, {}
            as_codes = {t["name"] for t in cfg.teachers if t.get("loss") == "codes"}
            for name in cached:
                arrs = []
                for c in cuts:
                    cached_meta(c, name)
                    if name in as_codes:  # the codes themselves are the targets
                        if f"teacher_{name}_codes" not in c.custom:
                            raise UserError(f"cut '{c.id}' holds values of teacher '{name}', which trains on codes "
                                            "(loss: codes): quantise it with `auden-kit data teacher-cache "
                                            "--codebooks-from` the training cache")
                        arrs.append(torch.from_numpy(np.asarray(c.load_custom(f"teacher_{name}_codes"))).long())
                        continue
                    if f"teacher_{name}_codes" in c.custom:  # vector-quantised: decoded per layer
                        arrs.append(self._decode_codes(c, name))
                        continue
                    arrs.append(torch.from_numpy(np.asarray(c.load_custom(f"teacher_{name}"), dtype=np.float32)))
                out["cached"][name] = nn.utils.rnn.pad_sequence(arrs, batch_first=True)
                out["cached_lens"][name] = torch.tensor([len(a) for a in arrs])
        return out

    @staticmethod
    def _decode_codes(cut, name: str) -> Tensor:
        """A cut's cached codes (frames x layers*M) decoded with the layers' codebooks."""
        import numpy as np

        parts, col = [], 0
        codes = torch.from_numpy(np.asarray(cut.load_custom(f"teacher_{name}_codes"))).long()
        for p in cut.custom.get(f"teacher_{name}_vq") or []:
            if not Path(p).is_file():
                raise UserError(f"cut '{cut.id}': the codebooks of cached teacher '{name}' ({p}) are missing; "
                                "they are written beside the codes by `auden-kit data teacher-cache`")
            q = _codebook(p)
            parts.append(q.decode(codes[:, col: col + q.num_codebooks]))
            col += q.num_codebooks
        return torch.cat(parts, -1)

    def teacher_weights(self, domains: list, device) -> Tensor:
        """(N, num_teachers) weights summing to 1 per row."""
        cfg = self.model_cfg
        w = torch.ones(len(domains), len(cfg.teachers), device=device)
        for j, t in enumerate(cfg.teachers):
            ds = set(t.get("domains") or [])
            for i, d in enumerate(domains):
                if d is not None and d in ds:
                    w[i, j] = cfg.domain_weight
        return w / w.sum(1, keepdim=True)

    def compute_loss(self, model: DistillModel, batch: dict, step: int):
        cfg = model.cfg
        x, x_lens = batch["inputs"], batch["input_lens"]
        enc, enc_lens, layers = model.encoder(x, x_lens, return_layers=True)
        taps = list(layers) + [enc]
        weights = self.teacher_weights(batch["targets"].get("domains") or [None] * x.shape[0], enc.device)
        loss = enc.new_zeros(())
        stats: dict = {}
        frames = float(enc_lens.sum())
        update = model.training and step < cfg.stats_batches
        for j, t in enumerate(cfg.teachers):
            if t.get("loss") == "codes":
                loss = loss + self._codes_loss(model, t, taps, enc_lens, batch, weights[:, j], stats)
                continue
            feats, t_lens = model.teachers()[t["name"]](batch)
            ratio = t["frame_shift"] / model.encoder.frame_shift
            cos_tot = 0.0
            for k, (tap, layer) in enumerate(zip(t["student_taps"], t["layers"])):
                key = f"{t['name']}_{k}"
                pred, p_lens = model.heads[key](taps[tap]), enc_lens
                tgt, g_lens = feats[layer].float(), t_lens
                if ratio < 1:  # teacher frames finer: pool them
                    tgt, g_lens = pool_time(tgt, g_lens, round(1 / ratio))
                elif ratio > 1:
                    pred, p_lens = pool_time(pred, p_lens, round(ratio))
                T = min(pred.shape[1], tgt.shape[1])
                pred, tgt = pred[:, :T].float(), tgt[:, :T]
                lens = torch.minimum(p_lens, g_lens).clamp(max=T)
                mask = torch.arange(T, device=enc.device).unsqueeze(0) < lens.unsqueeze(1)
                tgt = model.standardise(key, tgt, mask, update)
                cos = nn.functional.cosine_similarity(pred, tgt, dim=-1)
                per = (pred - tgt).abs().mean(-1) - nn.functional.logsigmoid(cos)  # (N, T)
                # per-row mean over frames, weighted by the teacher's weight, scaled to student frames
                row = (per * mask).sum(1) / lens.clamp(min=1) * enc_lens
                loss = loss + (weights[:, j] * row).sum() / len(t["layers"])
                cos_tot += float(((cos.detach() * mask).sum(1) / lens.clamp(min=1) * enc_lens).sum()) / len(t["layers"])
            stats[f"cos_{t['name']}"] = cos_tot
        stats["loss"] = float(loss.detach())
        return loss, stats, frames

    @staticmethod
    def _codes_loss(model: DistillModel, t: dict, taps: list, enc_lens: Tensor, batch: dict, weight: Tensor,
                    stats: dict) -> Tensor:
        """MVQ-style: cross-entropy of every codebook's code (icefall's MVQ distillation predicts
        HuBERT codes); a student frame predicts the ``codes_per_frame`` teacher frames it covers, a
        coarser teacher frame is predicted from the mean of the student frames it covers."""
        codes = batch["targets"]["cached"][t["name"]]  # (N, T_teacher, sum of codebooks) ids
        c_lens = batch["targets"]["cached_lens"][t["name"]]
        up = codes_per_frame(t, model.encoder.frame_shift)
        down = max(1, round(t["frame_shift"] / model.encoder.frame_shift))
        offsets = [0]
        for m, _ in t["code_shapes"]:
            offsets.append(offsets[-1] + m)
        total, hits, n = enc_lens.new_zeros((), dtype=torch.float32), 0.0, 0.0
        for k, (tap, layer) in enumerate(zip(t["student_taps"], t["layers"])):
            m, size = t["code_shapes"][layer]
            h, h_lens = pool_time(taps[tap], enc_lens, down)
            logits = model.heads[f"{t['name']}_{k}"](h).float()
            N, T = logits.shape[:2]
            logits = logits.reshape(N, T * up, m, size)
            tgt = codes[:, :, offsets[layer]: offsets[layer] + m]
            T2 = min(logits.shape[1], tgt.shape[1])
            lens = torch.minimum(h_lens * up, c_lens).clamp(max=T2)
            mask = torch.arange(T2, device=logits.device).unsqueeze(0) < lens.unsqueeze(1)
            lg, tg = logits[:, :T2], tgt[:, :T2].to(logits.device)
            ce = nn.functional.cross_entropy(lg.reshape(-1, size), tg.reshape(-1), reduction="none").view(N, T2, m)
            row = (ce.mean(-1) * mask).sum(1) / lens.clamp(min=1) * enc_lens
            total = total + (weight * row).sum() / len(t["layers"])
            hits += float(((lg.argmax(-1) == tg).float().mean(-1) * mask).sum())
            n += float(mask.sum())
        # code accuracy, scaled to student frames like the other statistics (the trainer divides by frames)
        stats[f"code_acc_{t['name']}"] = hits / max(n, 1.0) * float(enc_lens.sum())
        return total

    @torch.no_grad()
    def infer(self, model: DistillModel, batch: dict, **_) -> list[EmbeddingResult]:
        """The mean-pooled encoder output of each row (what a clip-level probe reads)."""
        return self.encoder_embeddings(model, batch)


@torch.no_grad()
def write_teacher_cache(kind: str, path: str, name: str, layers: list[int], cuts_path: str, out: str | Path,
                        storage_dir: str | Path, features=None, max_duration: float = 100.0,
                        tick_power: int = -8, codebooks: int = 0, codebook_size: int = 256,
                        vq_frames: int = 100_000, codebooks_from: str = "") -> dict:
    """Run a teacher once over a manifest and store the chosen layers with every cut: a lilcom
    array ``custom["teacher_<name>"]`` (the layers concatenated, frames x sum of sizes, values
    rounded to multiples of 2^tick_power) and ``custom["teacher_<name>_dims"]``. A ``cached``
    teacher of that name then reads layers 0..K-1 = these layers in this order. Returns sizes.

    ``codebooks`` > 0 stores vector-quantised codes instead (:class:`~auden_kit.nn.vq.ResidualVQ`
    per layer, fitted on up to ``vq_frames`` frames sampled over the whole manifest):
    ``custom["teacher_<name>_codes"]`` (frames x layers*codebooks bytes, one .npy per cut) and
    ``custom["teacher_<name>_vq"]`` (each layer's codebook file); training decodes them. The
    returned ``vq_error`` is each layer's share of variance the codes lose. ``codebooks_from`` (a
    manifest written with codebooks) quantises with its codebooks instead of fitting new ones."""
    from lhotse import CutSet, LilcomChunkyWriter
    from lhotse.utils import fastcopy

    from auden_kit.data.features import FbankSettings
    from auden_kit.io import save_cuts_atomic
    from auden_kit.probe import cut_batches

    if kind not in ("model", "hf"):
        raise UserError(f"--kind must be model or hf (a cache is made from a live teacher), got '{kind}'")
    if codebooks < 0:
        raise UserError(f"--codebooks must be >= 0 (0: no quantisation), got {codebooks}")
    if codebooks and not 2 <= codebook_size <= 256:
        raise UserError(f"--codebook-size must be 2..256 (one byte per code), got {codebook_size}")
    shared = _shared_codebooks(codebooks_from, name, len(layers)) if codebooks_from else None
    spec = {"name": name, "kind": kind, "path": path, "layers": layers, "student_taps": [0] * len(layers)}
    teacher = open_teacher(spec).eval()
    bad = [v for v in layers if not -len(teacher.dims) <= v < len(teacher.dims)]
    if bad or not layers:
        raise UserError(f"the teacher has layers 0..{len(teacher.dims) - 1}; --layers {layers} is not a "
                        "non-empty list of them")
    dims = [teacher.dims[v] for v in layers]
    task = DistillTask().setup(DistillModelConfig(teachers=[spec], domain_key=""), ModelAssets())
    features = features or getattr(teacher, "features", None) or FbankSettings()
    done, frames, stored = [], 0, 0
    Path(storage_dir).mkdir(parents=True, exist_ok=True)
    with LilcomChunkyWriter(Path(storage_dir) / f"teacher_{name}", tick_power=tick_power) as writer:
        for batch in cut_batches(cuts_path, features, max_duration, task=task):
            feats, lens = teacher(batch)
            sel = torch.cat([feats[v] for v in layers], dim=-1).float()
            for i, c in enumerate(batch["cuts"]):
                arr = sel[i, : int(lens[i])].numpy()
                ta = writer.store_array(c.id, arr, frame_shift=teacher.frame_shift, temporal_dim=0)
                done.append(fastcopy(c, custom={**(c.custom or {}), f"teacher_{name}": ta,
                                                f"teacher_{name}_dims": dims}))
                frames += arr.shape[0]
                stored += arr.size
    vq_error = None
    if codebooks > 0 or shared:
        done, vq_error = _quantise_cache(done, name, dims, Path(storage_dir), codebooks, codebook_size, vq_frames,
                                         shared)
    save_cuts_atomic(CutSet.from_cuts(done), out)
    size = sum(f.stat().st_size for p in Path(storage_dir).glob(f"teacher_{name}*")
               for f in ([p] if p.is_file() else p.rglob("*")) if f.is_file())
    return {"cuts": len(done), "frames": frames, "dims": dims, "bytes": size,
            "bytes_float32": 4 * stored, "frame_shift": teacher.frame_shift, "vq_error": vq_error}


@functools.lru_cache(maxsize=64)
def _codebook(path: str):
    """A codebook file, read once per process (data workers included)."""
    from auden_kit.nn.vq import ResidualVQ

    return ResidualVQ.load(path)


def _shared_codebooks(manifest: str, name: str, num_layers: int) -> list[str]:
    """The codebook files of an earlier quantised cache of teacher ``name`` (its first cut's)."""
    from lhotse import CutSet

    if not Path(manifest).is_file():
        raise UserError(f"--codebooks-from: manifest '{manifest}' does not exist")
    first = next(iter(CutSet.from_file(manifest)), None)
    paths = (first.custom or {}).get(f"teacher_{name}_vq") if first is not None else None
    if not paths:
        raise UserError(f"--codebooks-from: '{manifest}' holds no vector-quantised cache of teacher '{name}' "
                        "(write one with --codebooks M)")
    if len(paths) != num_layers:
        raise UserError(f"--codebooks-from: '{manifest}' quantises {len(paths)} layer(s) of teacher '{name}', "
                        f"--layers names {num_layers}: store the same layers")
    for p in paths:
        if not Path(p).is_file():
            raise UserError(f"--codebooks-from: codebook file '{p}' (named by '{manifest}') is missing")
    return list(paths)


def _quantise_cache(cuts: list, name: str, dims: list[int], storage: Path, codebooks: int, size: int,
                    max_frames: int, shared: list[str] | None = None) -> tuple[list, list[float]]:
    """Replace the cuts' stored layers by residual-VQ codes (see :func:`write_teacher_cache`); the
    float arrays are deleted. Returns the new cuts and each layer's lost share of variance. With
    ``shared`` (codebook files, one per layer), those codebooks are used instead of new ones."""
    import numpy as np
    from lhotse.features.io import NumpyFilesWriter
    from lhotse.utils import fastcopy

    from auden_kit.nn.vq import ResidualVQ

    bounds = np.cumsum([0] + dims)
    if shared:
        qs = [ResidualVQ.load(p) for p in shared]
        wrong = [li for li, q in enumerate(qs) if q.codebooks.shape[-1] != dims[li]]
        if wrong:
            raise UserError(f"--codebooks-from: the codebooks of layer(s) {wrong} are {qs[wrong[0]].codebooks.shape[-1]}"
                            f"-dimensional, the teacher's layers {[dims[li] for li in wrong]}: another teacher?")
        files = [str(Path(p).resolve()) for p in shared]
    else:
        total = sum(c.custom[f"teacher_{name}"].shape[0] for c in cuts)
        keep = max(1, int(np.ceil(total / max(1, max_frames))))  # every keep-th frame of every cut
        sample = torch.cat([torch.from_numpy(c.load_custom(f"teacher_{name}")[::keep].astype(np.float32))
                            for c in cuts])
        qs, files = [], []
        for li in range(len(dims)):
            q = ResidualVQ.fit(sample[:, bounds[li]: bounds[li + 1]], codebooks, size)
            q.save(storage / f"teacher_{name}_vq{li}.safetensors")
            qs.append(q)
            files.append(str((storage / f"teacher_{name}_vq{li}.safetensors").resolve()))
    lost, var = np.zeros(len(dims)), np.zeros(len(dims))
    out = []
    with NumpyFilesWriter(storage / f"teacher_{name}_codes") as writer:  # one .npy of bytes per cut: exact
        for c in cuts:
            x = torch.from_numpy(c.load_custom(f"teacher_{name}").astype(np.float32))
            codes = []
            for li, q in enumerate(qs):
                part = x[:, bounds[li]: bounds[li + 1]]
                k = q.encode(part)
                lost[li] += float(((q.decode(k) - part) ** 2).sum())
                var[li] += float(((part - q.mean) ** 2).sum())
                codes.append(k)
            arr = torch.cat(codes, 1).numpy().astype(np.uint8)
            ta = writer.store_array(c.id, arr, frame_shift=c.custom[f"teacher_{name}"].frame_shift, temporal_dim=0)
            custom = {k: v for k, v in c.custom.items() if k != f"teacher_{name}"}
            custom.update({f"teacher_{name}_codes": ta, f"teacher_{name}_vq": files})
            out.append(fastcopy(c, custom=custom))
    (storage / f"teacher_{name}.lca").unlink(missing_ok=True)
    return out, [round(float(a / max(b, 1e-12)), 4) for a, b in zip(lost, var)]
