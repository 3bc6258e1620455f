"""Self-supervised pretraining of an encoder: BEST-RQ (default) or MAE-style reconstruction.

BEST-RQ (Chiu et al., 2022), on the same fbank the ASR reads::

    clean fbank -> global mean/var normalisation -> stack ``s`` frames (s = encoder frame shift /
      10 ms, 4 for Zipformer) -> frozen random projection (s*F -> codebook_dim) -> nearest of
      ``codebook_size`` frozen random unit vectors = the target code of each output frame,
      one code per codebook (``codebook_init: kmeans``: the unit vectors are spherical k-means
      centroids of the projected training patches instead, fitted once when a run starts)
    fbank with spans masked (start probability ``mask_prob`` per frame, ``mask_span`` frames,
      filled with noise around the global mean, never on padding, at least ``min_masks`` spans)
      -> encoder -> one linear softmax head per codebook
    loss: cross-entropy on the output frames at least half masked, summed over codebooks,
      normalised by the number of such frames.

The encoder sees raw fbank exactly as the ASR does (masked frames are filled with
``mean + std * N(0, mask_noise_std)``, i.e. BEST-RQ's N(0, 0.1) in normalised units), so a
pretrained encoder is taken by ``trainer.init_from`` with no change to the ASR's input.

The normalisation statistics (``model.feature_stats``: a JSON from ``auden-kit data cmvn``, or
computed from the first ``stats_max_cuts`` training cuts when empty), the projections and the
codebooks are buffers of the model: they are saved in the model folder and give identical codes
after loading (the running average copies tensors that never change; see
``training/checkpoint.py``). ``quantizer_seed`` makes them reproducible.

``objective: mae`` (Dasheng-style): the same masking, a light Transformer decoder on the encoder
output predicts each masked output frame's stacked, normalised fbank patch (each patch
normalised by its own mean and variance with ``norm_patch``); MSE on masked frames.

Unlabeled cuts (no supervisions, or supervisions without text) are valid input. Validation is
the loss and masked accuracy on a fixed mask (seeded per batch), so epochs are comparable.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from auden_kit.data.features import FRAME_SHIFT
from auden_kit.errors import UserError
from auden_kit.hub import build_encoder, encoder_config
from auden_kit.results import EmbeddingResult
from auden_kit.tasks.base import ModelAssets, Task

log = logging.getLogger(__name__)


@dataclasses.dataclass
class SslModelConfig:
    encoder_type: str = "zipformer"
    encoder: Any = dataclasses.field(default_factory=dict)
    objective: str = "bestrq"  # bestrq | mae
    # quantizer (bestrq)
    num_codebooks: int = 1
    codebook_size: int = 8192
    codebook_dim: int = 16
    quantizer_seed: int = 1234
    # > 0: a shared Linear-GELU-LayerNorm layer of this width between the encoder and the code heads
    # (SimCLR's projection head): it takes up the code-specific part, so the encoder's output keeps
    # more of what probes and fine-tuning read (RESULTS.md of egs/mini_synth_ssl); 0 = linear heads
    head_hidden: int = 0
    # random: BEST-RQ's random unit vectors; kmeans: spherical k-means centroids of the projected
    # training patches (HuBERT's first-iteration idea), fitted once before training, then frozen
    codebook_init: str = "random"
    kmeans_max_cuts: int = 1000
    kmeans_frames: int = 100000  # projected output frames the k-means sees at most
    # global normalisation: a JSON from `auden-kit data cmvn`; "" = computed from training cuts
    feature_stats: str = ""
    stats_max_cuts: int = 1000
    # masking (in fbank frames)
    mask_prob: float = 0.01
    mask_span: int = 40
    min_masks: int = 1
    mask_noise_std: float = 0.1
    # mae
    mae_decoder_dim: int = 256
    mae_decoder_layers: int = 1
    mae_decoder_heads: int = 4
    norm_patch: bool = True

    def __post_init__(self):
        self.encoder = encoder_config(self.encoder_type, self.encoder)

    def validate(self):
        if self.objective not in ("bestrq", "mae"):
            raise UserError(f"config key 'model.objective' must be bestrq or mae, got '{self.objective}'")
        if self.codebook_init not in ("random", "kmeans"):
            raise UserError(f"config key 'model.codebook_init' must be random or kmeans, got '{self.codebook_init}'")
        for key in ("num_codebooks", "codebook_size", "codebook_dim", "mask_span", "mae_decoder_dim",
                    "mae_decoder_layers", "mae_decoder_heads", "stats_max_cuts", "kmeans_max_cuts", "kmeans_frames"):
            if getattr(self, key) < 1:
                raise UserError(f"config key 'model.{key}' must be >= 1, got {getattr(self, key)}")
        if self.head_hidden < 0:
            raise UserError(f"config key 'model.head_hidden' must be >= 0, got {self.head_hidden}")
        if not 0 < self.mask_prob < 1:
            raise UserError(f"config key 'model.mask_prob' must be in (0, 1), got {self.mask_prob}")
        if self.min_masks < 0 or self.mask_noise_std < 0:
            raise UserError("config keys 'model.min_masks' / 'model.mask_noise_std' must be >= 0")
        if self.mae_decoder_dim % self.mae_decoder_heads:
            raise UserError(f"config key 'model.mae_decoder_dim' ({self.mae_decoder_dim}) must be divisible by "
                            f"model.mae_decoder_heads ({self.mae_decoder_heads})")


# ------------------------------------------------------------------------------------ statistics
def cut_features(cuts, max_cuts: int):
    """The features (T, F) float32 tensor of each of up to ``max_cuts`` cuts; a cut without
    precomputed features or with unreadable ones is a named error."""
    for k, c in enumerate(cuts):
        if k >= max_cuts:
            return
        if not c.has_features:
            raise UserError(f"cut '{c.id}' has no precomputed features; run `auden-kit data fbank` on the "
                            "manifest first")
        try:
            yield torch.from_numpy(c.load_features())
        except OSError as e:
            raise UserError(f"cut '{c.id}': its features cannot be read ({e}); paths in a manifest are relative "
                            "to where it was made: run from that folder") from None


def feature_stats(cuts, max_cuts: int = 1000) -> dict:
    """Per-bin mean and standard deviation of the precomputed features of (up to ``max_cuts``) cuts:
    {"mean": [F], "std": [F], "frames": n, "cuts": k}. Accumulated in float64."""
    s1 = s2 = None
    frames = k = 0
    for f in cut_features(cuts, max_cuts):
        f = f.double()
        if s1 is None:
            s1, s2 = torch.zeros(f.shape[1], dtype=torch.float64), torch.zeros(f.shape[1], dtype=torch.float64)
        s1 += f.sum(0)
        s2 += (f * f).sum(0)
        frames += f.shape[0]
        k += 1
    if not frames:
        raise UserError("no features to compute statistics from (the manifest is empty)")
    mean = s1 / frames
    std = (s2 / frames - mean * mean).clamp(min=1e-10).sqrt()
    return {"mean": mean.tolist(), "std": std.tolist(), "frames": frames, "cuts": k}


def read_feature_stats(path: str | Path) -> dict:
    try:
        st = json.loads(Path(path).read_text())
        if not (isinstance(st.get("mean"), list) and len(st["mean"]) == len(st.get("std", []))):
            raise ValueError("needs lists 'mean' and 'std' of equal length")
    except (OSError, ValueError) as e:
        raise UserError(f"feature statistics '{path}' cannot be read ({e}); write them with "
                        "`auden-kit data cmvn CUTS --out FILE`") from None
    return st


# ------------------------------------------------------------------------------------ masking
def span_mask(lens: Tensor, T: int, prob: float, span: int, min_masks: int = 1,
              generator: torch.Generator | None = None) -> Tensor:
    """(N, T) bool, True = masked. Every valid frame starts a span of ``span`` frames with
    probability ``prob``; a row gets at least ``min_masks`` spans (placed at random); spans are
    cut at the row's length, so padding is never masked."""
    N = lens.shape[0]
    dev = lens.device
    starts = torch.rand(N, T, generator=generator).to(dev) < prob
    valid = torch.arange(T, device=dev).unsqueeze(0) < lens.unsqueeze(1)
    starts &= valid
    if min_masks > 0:
        need = (starts.sum(1) < min_masks).nonzero().flatten().tolist()
        for i in need:
            n = int(lens[i])
            if n <= 0:
                continue
            room = max(1, n - span + 1)
            pos = torch.randperm(room, generator=generator)[:min_masks].to(dev)
            starts[i, pos] = True
    # dilate starts forward by span-1 frames: a frame is masked when any of the previous `span`
    # frames (itself included) starts a span
    s = starts.float().unsqueeze(1)  # (N, 1, T)
    kernel = torch.ones(1, 1, span, device=dev)
    covered = nn.functional.conv1d(nn.functional.pad(s, (span - 1, 0)), kernel).squeeze(1) > 0
    return covered & valid


def stack_frames(x: Tensor, stack: int, T_out: int) -> Tensor:
    """(N, T, F) -> (N, T_out, stack*F): frames [j*stack, (j+1)*stack) of each output frame j
    (zero-padded at the end when T < T_out*stack)."""
    N, T, F = x.shape
    need = T_out * stack
    if T < need:
        x = nn.functional.pad(x, (0, 0, 0, need - T))
    return x[:, :need].reshape(N, T_out, stack * F)


# ------------------------------------------------------------------------------------ modules
class RandomProjectionQuantizer(nn.Module):
    """BEST-RQ's quantizer: frozen random projections and unit-norm codebooks, all buffers.
    ``forward(x (N, T, D)) -> codes (N, T, G)``: per codebook g, the index of the codebook vector
    with the largest cosine to the projected (and normalised) input."""

    def __init__(self, input_dim: int, num_codebooks: int, codebook_size: int, codebook_dim: int, seed: int):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        proj = torch.empty(num_codebooks, input_dim, codebook_dim)
        bound = math.sqrt(6.0 / (input_dim + codebook_dim))  # Xavier-uniform, as the paper
        proj.uniform_(-bound, bound, generator=g)
        books = torch.randn(num_codebooks, codebook_size, codebook_dim, generator=g)
        self.register_buffer("projection", proj)
        self.register_buffer("codebooks", nn.functional.normalize(books, dim=-1))

    def project(self, x: Tensor, g: int) -> Tensor:
        """(n, D) -> (n, codebook_dim): codebook g's projection, normalised to the unit sphere."""
        return nn.functional.normalize(x.float() @ self.projection[g], dim=-1)

    @torch.no_grad()
    def fit_codebooks(self, patches: Tensor, seed: int, iters: int = 20) -> list[int]:
        """Replace each codebook by spherical k-means centroids of the projected ``patches`` (n, D)
        (Lloyd's k-means on the unit sphere, then renormalised). Returns how many codes each
        codebook uses on ``patches``. Fewer patches than codes: the rest stay random."""
        from auden_kit.nn.vq import kmeans

        for g in range(self.codebooks.shape[0]):
            c = kmeans(self.project(patches, g), self.codebooks.shape[1], iters, seed + g)
            self.codebooks[g, :c.shape[0]] = nn.functional.normalize(c, dim=-1)
        codes = self(patches.unsqueeze(0))[0]  # (n, G), every codebook at once
        return [len(codes[:, g].unique()) for g in range(codes.shape[1])]

    @torch.no_grad()
    def forward(self, x: Tensor, chunk: int = 4096) -> Tensor:
        N, T, D = x.shape
        flat = x.reshape(N * T, D)
        out = torch.empty(N * T, self.projection.shape[0], dtype=torch.long, device=x.device)
        for g in range(self.projection.shape[0]):
            for a in range(0, N * T, chunk):  # bounded memory: chunk x codebook_size scores at a time
                out[a:a + chunk, g] = (self.project(flat[a:a + chunk], g) @ self.codebooks[g].t()).argmax(-1)
        return out.reshape(N, T, -1)


class MaeDecoder(nn.Module):
    """A light Transformer on encoder frames -> one stacked fbank patch per frame."""

    def __init__(self, input_dim: int, dim: int, layers: int, heads: int, patch_dim: int):
        super().__init__()
        self.inp = nn.Linear(input_dim, dim)
        layer = nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout=0.0, batch_first=True, norm_first=True)
        self.body = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.out = nn.Linear(dim, patch_dim)

    def forward(self, x: Tensor, lens: Tensor) -> Tensor:
        pad = torch.arange(x.shape[1], device=x.device).unsqueeze(0) >= lens.unsqueeze(1)
        return self.out(self.body(self.inp(x), src_key_padding_mask=pad))


class SslModel(nn.Module):
    """Encoder + (quantizer and code heads | MAE decoder) + the global feature statistics."""

    def __init__(self, cfg: SslModelConfig, feature_dim: int, mean=None, std=None):
        super().__init__()
        self.cfg = cfg
        self.encoder = build_encoder(cfg.encoder_type, cfg.encoder)
        self.stack = max(1, round(self.encoder.frame_shift / FRAME_SHIFT))
        patch = self.stack * feature_dim
        self.register_buffer("feature_mean", torch.tensor(mean, dtype=torch.float32) if mean is not None
                             else torch.zeros(feature_dim))
        self.register_buffer("feature_std", torch.tensor(std, dtype=torch.float32) if std is not None
                             else torch.ones(feature_dim))
        d = self.encoder.output_dim
        if cfg.objective == "bestrq":
            self.quantizer = RandomProjectionQuantizer(patch, cfg.num_codebooks, cfg.codebook_size,
                                                       cfg.codebook_dim, cfg.quantizer_seed)
            h = cfg.head_hidden or d
            self.head_proj = (nn.Sequential(nn.Linear(d, h), nn.GELU(), nn.LayerNorm(h)) if cfg.head_hidden
                              else nn.Identity())
            self.heads = nn.ModuleList(nn.Linear(h, cfg.codebook_size) for _ in range(cfg.num_codebooks))
        else:
            self.decoder = MaeDecoder(d, cfg.mae_decoder_dim, cfg.mae_decoder_layers, cfg.mae_decoder_heads, patch)

    def normalise(self, x: Tensor) -> Tensor:
        return (x - self.feature_mean) / self.feature_std

    def mask_inputs(self, x: Tensor, mask: Tensor) -> Tensor:
        """Masked frames replaced by mean + std * N(0, mask_noise_std) (raw fbank units)."""
        noise = torch.randn_like(x) * self.cfg.mask_noise_std * self.feature_std + self.feature_mean
        return torch.where(mask.unsqueeze(-1), noise, x)

    def targets(self, clean: Tensor, T_out: int) -> Tensor:
        """Codes (N, T_out, G) for bestrq; normalised patches (N, T_out, s*F) for mae."""
        patches = stack_frames(self.normalise(clean), self.stack, T_out)
        if self.cfg.objective == "bestrq":
            return self.quantizer(patches)
        if self.cfg.norm_patch:
            mu = patches.mean(-1, keepdim=True)
            var = patches.var(-1, keepdim=True, unbiased=False)
            patches = (patches - mu) / (var + 1e-6).sqrt()
        return patches

    def forward(self, x: Tensor, x_lens: Tensor) -> tuple[Tensor, Tensor]:
        return self.encoder(x, x_lens)


class SslTask(Task):
    name = "ssl"
    model_config_cls = SslModelConfig
    needs_clean_inputs = True
    metric = "loss"
    _kmeans_cuts = None  # a new run's training cuts, while its k-means codebooks are still to fit

    def build_assets(self, train_cfg, model_cfg, train_cuts) -> ModelAssets:
        from auden_kit.data.datamodule import load_cuts

        assets = super().build_assets(train_cfg, model_cfg, train_cuts)
        if model_cfg.feature_stats:  # read for training only: a model folder keeps them in its data_stats
            if not Path(model_cfg.feature_stats).is_file():
                raise UserError(f"config key 'model.feature_stats': '{model_cfg.feature_stats}' does not exist "
                                "(write it with `auden-kit data cmvn CUTS --out FILE`, or leave the key empty to "
                                "compute the statistics from the training cuts)")
            st = read_feature_stats(model_cfg.feature_stats)
            log.info("feature statistics from %s (%s frames)", model_cfg.feature_stats, st.get("frames", "?"))
        else:
            st = feature_stats(load_cuts(train_cfg.data.train_cuts), model_cfg.stats_max_cuts)
            log.info("feature statistics from the first %d training cuts (%d frames); a stage can store them "
                     "once with `auden-kit data cmvn` (config key model.feature_stats)", st["cuts"], st["frames"])
        assets.data_stats["feature_mean"] = [round(v, 6) for v in st["mean"]]
        assets.data_stats["feature_std"] = [round(v, 6) for v in st["std"]]
        if model_cfg.objective == "bestrq" and model_cfg.codebook_init == "kmeans":
            self._kmeans_cuts = train_cuts  # a new run: the codebooks are fitted when the model is built
        return assets

    def build_model(self) -> SslModel:
        st = self.assets.data_stats
        mean, std = st.get("feature_mean"), st.get("feature_std")
        F = self.model_cfg.encoder.feature_dim if hasattr(self.model_cfg.encoder, "feature_dim") else len(mean or [])
        if mean is not None and len(mean) != F:
            raise UserError(f"the feature statistics have {len(mean)} bins but model.encoder.feature_dim is {F}")
        model = SslModel(self.model_cfg, F, mean, std)
        cuts = self._kmeans_cuts
        if cuts is not None:  # only for a new training run; a checkpoint or model folder brings its own
            self._kmeans_cuts = None
            self._fit_codebooks(model, cuts)
        return model

    def _fit_codebooks(self, model: SslModel, cuts) -> None:
        cfg = self.model_cfg
        patches = []
        for f in cut_features(cuts, cfg.kmeans_max_cuts):
            n = f.shape[0] // model.stack
            if n:
                patches.append(stack_frames(model.normalise(f.float()).unsqueeze(0), model.stack, n)[0])
        if not patches:
            raise UserError("model.codebook_init=kmeans: the training cuts hold no frames to fit codebooks on")
        x = torch.cat(patches)
        g = torch.Generator().manual_seed(cfg.quantizer_seed)
        if x.shape[0] > cfg.kmeans_frames:
            x = x[torch.randperm(x.shape[0], generator=g)[:cfg.kmeans_frames]]
        used = model.quantizer.fit_codebooks(x, cfg.quantizer_seed)
        log.info("k-means codebooks fitted on %d frames of %d cuts: codes used %s of %d", x.shape[0], len(patches),
                 used, cfg.codebook_size)

    def batch_targets(self, cuts, train: bool) -> dict:
        return {}  # targets come from the clean features, on the device

    def _masks(self, model: SslModel, lens: Tensor, T: int) -> Tensor:
        cfg = model.cfg
        gen = None if model.training else torch.Generator().manual_seed(int(lens.sum()) + T)
        return span_mask(lens, T, cfg.mask_prob, cfg.mask_span, cfg.min_masks, gen)

    def compute_loss(self, model: SslModel, batch: dict, step: int):
        x, x_lens = batch["inputs"], batch["input_lens"]
        clean = batch.get("clean_inputs", x)
        mask = self._masks(model, x_lens, x.shape[1])
        enc, enc_lens = model.encoder(model.mask_inputs(x, mask), x_lens)
        T_out = enc.shape[1]
        valid = torch.arange(T_out, device=enc.device).unsqueeze(0) < enc_lens.unsqueeze(1)
        frac = stack_frames(mask.unsqueeze(-1).float(), model.stack, T_out).mean(-1)  # (N, T_out)
        sel = (frac >= 0.5) & valid
        n = int(sel.sum())
        if n == 0:
            return enc.sum() * 0.0, {"loss": 0.0}, 0.0
        h = enc[sel]  # (n, C)
        with torch.no_grad():
            tgt = model.targets(clean, T_out)[sel]
        stats: dict = {}
        if model.cfg.objective == "bestrq":
            loss = enc.new_zeros(())
            correct = 0.0
            G = tgt.shape[-1]
            h = model.head_proj(h)
            for g, head in enumerate(model.heads):
                logits = head(h).float()
                loss = loss + nn.functional.cross_entropy(logits, tgt[:, g], reduction="sum")
                correct += float((logits.argmax(-1) == tgt[:, g]).sum()) / G
            counts = torch.bincount(tgt[:, 0], minlength=model.cfg.codebook_size).float()
            p = counts / counts.sum()
            perplexity = float(torch.exp(-(p[p > 0] * p[p > 0].log()).sum()))
            # batch-level figures are scaled by n: the trainer logs stats / count
            stats.update(masked_acc=correct, codes_used=float((counts > 0).sum()) * n, code_perplexity=perplexity * n)
        else:
            pred = model.decoder(enc, enc_lens)[sel].float()
            loss = ((pred - tgt.float()) ** 2).mean(-1).sum()
        stats["loss"] = float(loss.detach())
        stats["masked_frac"] = float(sel.sum()) / max(1.0, float(valid.sum())) * n
        return loss, stats, float(n)

    @torch.no_grad()
    def infer(self, model: SslModel, batch: dict, **_) -> list[EmbeddingResult]:
        """The mean-pooled encoder output of each row (what a clip-level probe reads)."""
        return self.encoder_embeddings(model, batch)
