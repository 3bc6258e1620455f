"""Zipformer encoder: front end + six stacks at 1, 2, 4, 8, 4, 2 x the 50 Hz frame rate.

    fbank (N, T, 80) --Conv2dSubsampling--> (N, (T-7)//2, C0) --stacks--> (N, T', max C)
    --SimpleDownsample(2)--> ~25 Hz (N, (T'+1)//2, max C)

Each stack runs at its own frame rate and width; its output is upsampled and mixed
back (learned bypass) into the running sequence, whose width changes between stacks
(truncate / zero-pad). The final output takes each channel from the most recent
stack that had it. Presets match icefall's LibriSpeech small/medium/large.

Shape legend: N batch, T frames, F features, C channels, H heads.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Optional, Union

import torch
from torch import Tensor, nn

from auden_kit.encoders.zipformer.attention import (
    CompactRelPositionalEncoding, NonlinAttention, RelPositionMultiheadAttentionWeights, SelfAttention,
)
from auden_kit.encoders.zipformer.modules import (
    BypassModule, ConvolutionModule, FeedforwardModule, SimpleDownsample, simple_upsample,
)
from auden_kit.encoders.zipformer.subsampling import Conv2dSubsampling, frames_after_front_end
from auden_kit.errors import UserError
from auden_kit.nn.scaling import (
    Balancer, BiasNorm, FloatLike, ScheduledFloat, Whiten, convert_num_channels, whitening_schedule,
)

IntOrTuple = Union[int, tuple[int, ...]]

PRESETS: dict[str, dict] = {
    "zipformer-s": dict(num_encoder_layers=(2, 2, 2, 2, 2, 2), feedforward_dim=(512, 768, 768, 768, 768, 768),
                        encoder_dim=(192, 256, 256, 256, 256, 256), encoder_unmasked_dim=(192,) * 6),
    "zipformer-m": dict(num_encoder_layers=(2, 2, 3, 4, 3, 2), feedforward_dim=(512, 768, 1024, 1536, 1024, 768),
                        encoder_dim=(192, 256, 384, 512, 384, 256),
                        encoder_unmasked_dim=(192, 192, 256, 256, 256, 192)),
    "zipformer-l": dict(num_encoder_layers=(2, 2, 4, 5, 4, 2), feedforward_dim=(512, 768, 1536, 2048, 1536, 768),
                        encoder_dim=(192, 256, 512, 768, 512, 256),
                        encoder_unmasked_dim=(192, 192, 256, 320, 256, 192)),
}


@dataclasses.dataclass
class ZipformerConfig:
    """Sizes are one value for all stacks or one per stack. ``preset`` fills the sizes first."""

    preset: Optional[str] = None
    feature_dim: int = 80
    embed_channels: tuple[int, ...] = (8, 32, 128)  # front-end conv channels (layer 1, 2, 3/ConvNeXt)
    downsampling_factor: tuple[int, ...] = (1, 2, 4, 8, 4, 2)
    num_encoder_layers: tuple[int, ...] = (2, 2, 3, 4, 3, 2)
    encoder_dim: tuple[int, ...] = (192, 256, 384, 512, 384, 256)
    encoder_unmasked_dim: tuple[int, ...] = (192, 192, 256, 256, 256, 192)
    feedforward_dim: tuple[int, ...] = (512, 768, 1024, 1536, 1024, 768)
    num_heads: tuple[int, ...] = (4, 4, 4, 8, 4, 4)
    cnn_module_kernel: tuple[int, ...] = (31, 31, 15, 15, 15, 31)
    query_head_dim: tuple[int, ...] = (32,)
    value_head_dim: tuple[int, ...] = (12,)
    pos_head_dim: tuple[int, ...] = (4,)
    pos_dim: int = 48
    output_downsampling_factor: int = 2
    causal: bool = False
    chunk_size: tuple[int, ...] = (16, 32, 64, -1)  # frames at 50 Hz; one is drawn per batch in training
    left_context_frames: tuple[int, ...] = (64, 128, 256, -1)
    warmup_batches: float = 4000.0

    def __post_init__(self):
        if self.preset:
            if self.preset not in PRESETS:
                raise UserError(f"unknown Zipformer preset '{self.preset}' (choose from {', '.join(PRESETS)})")
            defaults = ZipformerConfig()
            for k, v in PRESETS[self.preset].items():
                if getattr(self, k) == getattr(defaults, k):  # explicit values win over the preset
                    setattr(self, k, v)

    def validate(self):
        n = len(self.downsampling_factor)
        for name in ("num_encoder_layers", "encoder_dim", "encoder_unmasked_dim", "feedforward_dim", "num_heads",
                     "cnn_module_kernel", "query_head_dim", "value_head_dim", "pos_head_dim"):
            v = getattr(self, name)
            if len(v) not in (1, n):
                raise UserError(f"config key 'model.encoder.{name}' needs 1 or {n} values (one per stack), got {len(v)}")
        for u, d in zip(self.per_stack("encoder_unmasked_dim"), self.per_stack("encoder_dim")):
            if u > d:
                raise UserError(f"config key 'model.encoder.encoder_unmasked_dim': {u} is larger than encoder_dim {d}")
        if len(self.embed_channels) != 3:
            raise UserError("config key 'model.encoder.embed_channels' needs 3 values (front-end conv channels)")
        if self.output_downsampling_factor != 2:
            raise UserError("config key 'model.encoder.output_downsampling_factor' must be 2")
        for k in self.per_stack("cnn_module_kernel"):
            if k < 1 or k % 2 == 0:
                raise UserError(f"config key 'model.encoder.cnn_module_kernel': kernels must be odd and positive, got {k}")
        for name in ("num_encoder_layers", "encoder_dim", "feedforward_dim", "num_heads", "query_head_dim",
                     "value_head_dim", "pos_head_dim", "downsampling_factor"):
            if any(v < 1 for v in getattr(self, name)):
                raise UserError(f"config key 'model.encoder.{name}': values must be positive, got {list(getattr(self, name))}")
        if self.pos_dim < 2 or self.pos_dim % 2:
            raise UserError(f"config key 'model.encoder.pos_dim' must be even and positive, got {self.pos_dim}")
        if self.feature_dim < 7:
            raise UserError(f"config key 'model.encoder.feature_dim' must be at least 7 (feature bins), got {self.feature_dim}")
        if min(self.embed_channels) < 1:
            raise UserError(f"config key 'model.encoder.embed_channels' must be positive, got {list(self.embed_channels)}")
        if self.causal and (not self.chunk_size or not self.left_context_frames):
            raise UserError("config keys 'model.encoder.chunk_size' / 'encoder.left_context_frames' need at least one value")

    def per_stack(self, name: str) -> tuple[int, ...]:
        v = tuple(getattr(self, name))
        return v * len(self.downsampling_factor) if len(v) == 1 else v

    @property
    def output_dim(self) -> int:
        return max(self.per_stack("encoder_dim"))


class ZipformerEncoderLayer(nn.Module):
    """One layer: FF1, NonlinAttention, SelfAttn1, Conv1, FF2, mid-bypass, SelfAttn2, Conv2, FF3,
    BiasNorm, bypass. One set of attention weights serves all three attention modules."""

    def __init__(self, embed_dim: int, pos_dim: int, num_heads: int, query_head_dim: int, pos_head_dim: int,
                 value_head_dim: int, feedforward_dim: int, dropout: FloatLike, cnn_module_kernel: int,
                 causal: bool):
        super().__init__()
        self.bypass = BypassModule(embed_dim, skip_rate=ScheduledFloat((0.0, 0.5), (4000.0, 0.02), default=0))
        self.bypass_mid = BypassModule(embed_dim)
        self.attention_skip_rate = ScheduledFloat((0.0, 0.2), (4000.0, 0.05), (16000, 0.0), default=0)
        self.conv_skip_rate = ScheduledFloat((0.0, 0.2), (4000.0, 0.05), (16000, 0.0), default=0)
        self.ff2_skip_rate = ScheduledFloat((0.0, 0.1), (4000.0, 0.01), (50000.0, 0.0))
        self.ff3_skip_rate = ScheduledFloat((0.0, 0.1), (4000.0, 0.01), (50000.0, 0.0))
        self.const_attention_rate = ScheduledFloat((0.0, 0.25), (4000.0, 0.025), default=0)
        self.self_attn_weights = RelPositionMultiheadAttentionWeights(
            embed_dim, pos_dim=pos_dim, num_heads=num_heads, query_head_dim=query_head_dim,
            pos_head_dim=pos_head_dim)
        self.self_attn1 = SelfAttention(embed_dim, num_heads, value_head_dim)
        self.self_attn2 = SelfAttention(embed_dim, num_heads, value_head_dim)
        self.feed_forward1 = FeedforwardModule(embed_dim, (feedforward_dim * 3) // 4, dropout)
        self.feed_forward2 = FeedforwardModule(embed_dim, feedforward_dim, dropout)
        self.feed_forward3 = FeedforwardModule(embed_dim, (feedforward_dim * 5) // 4, dropout)
        self.nonlin_attention = NonlinAttention(embed_dim, hidden_channels=3 * embed_dim // 4)
        self.conv_module1 = ConvolutionModule(embed_dim, cnn_module_kernel, causal=causal)
        self.conv_module2 = ConvolutionModule(embed_dim, cnn_module_kernel, causal=causal)
        # unused by the computation; kept so parameter counts and names match icefall checkpoints
        self.bypass_scale = nn.Parameter(torch.full((embed_dim,), 0.5))
        self.norm = BiasNorm(embed_dim)
        self.balancer1 = Balancer(embed_dim, channel_dim=-1, min_positive=0.45, max_positive=0.55,
                                  min_abs=0.2, max_abs=4.0)
        self.balancer_na = Balancer(embed_dim, channel_dim=-1, min_positive=0.3, max_positive=0.7,
                                    min_abs=ScheduledFloat((0.0, 0.004), (4000.0, 0.02)), prob=0.05)
        self.balancer_ff2 = Balancer(embed_dim, channel_dim=-1, min_positive=0.3, max_positive=0.7,
                                     min_abs=ScheduledFloat((0.0, 0.0), (4000.0, 0.1), default=0.0), max_abs=2.0,
                                     prob=0.05)
        self.balancer_ff3 = Balancer(embed_dim, channel_dim=-1, min_positive=0.3, max_positive=0.7,
                                     min_abs=ScheduledFloat((0.0, 0.0), (4000.0, 0.2), default=0.0), max_abs=4.0,
                                     prob=0.05)
        self.whiten = Whiten(num_groups=1, whitening_limit=whitening_schedule(4.0, ratio=3.0), prob=(0.025, 0.25),
                             grad_scale=0.01)
        self.balancer2 = Balancer(embed_dim, channel_dim=-1, min_positive=0.45, max_positive=0.55,
                                  min_abs=0.1, max_abs=4.0)

    def _rate(self, sf: ScheduledFloat) -> float:
        return float(sf) if self.training and not torch.jit.is_tracing() else 0.0

    def _seq_mask(self, x: Tensor, rate: float) -> Optional[Tensor]:
        """(B, 1) mask dropping whole sequences with probability ``rate`` (training only)."""
        if rate == 0.0:
            return None
        return (torch.rand(x.shape[1], 1, device=x.device) > rate).to(x.dtype)

    @staticmethod
    def _add(src: Tensor, y: Tensor, mask: Optional[Tensor]) -> Tensor:
        return src + (y if mask is None else y * mask)

    def forward(self, src: Tensor, pos_emb: Tensor, chunk_size: int = -1, attn_mask: Optional[Tensor] = None,
                src_key_padding_mask: Optional[Tensor] = None, cache: Optional[dict] = None) -> Tensor:
        """src: (T, B, C); pos_emb: (1, 2T-1, P); attn_mask: (T, T) True=masked;
        src_key_padding_mask: (B, T) True=pad. Returns (T, B, C).

        Streaming (eval, causal): ``cache`` holds what the chunk-masked forward lets this chunk see of
        the past (keys, non-linear-attention inputs, values, convolution inputs; updated in place),
        pos_emb is (1, L+2T-1, P) and src_key_padding_mask (B, L+T) marks unfilled cache frames."""
        src_orig = src
        attn_weights = self.self_attn_weights(src, pos_emb=pos_emb, attn_mask=attn_mask,
                                              key_padding_mask=src_key_padding_mask, cache=cache)
        conv_pad = None if cache is not None else src_key_padding_mask
        src = src + self.feed_forward1(src)
        attn_mask_seq = self._seq_mask(src, self._rate(self.attention_skip_rate))
        na_weights = attn_weights[0:1]
        if self.training and not torch.jit.is_tracing() and random.random() < float(self.const_attention_rate):
            # uniform weights over the allowed positions: encourages averaging-like behaviour early on
            na_weights = (na_weights > 0.0).to(na_weights.dtype)
            na_weights = na_weights / na_weights.sum(dim=-1, keepdim=True)
        src = self._add(src, self.balancer_na(self.nonlin_attention(src, na_weights, cache, "nonlin")), attn_mask_seq)
        src = self._add(src, self.self_attn1(src, attn_weights, cache, "val1"), attn_mask_seq)
        conv_rate = self._rate(self.conv_skip_rate)
        src = self._add(src, self.conv_module1(src, src_key_padding_mask=conv_pad, chunk_size=chunk_size,
                                               cache=cache, key="conv1"), self._seq_mask(src, conv_rate))
        src = self._add(src, self.balancer_ff2(self.feed_forward2(src)),
                        self._seq_mask(src, self._rate(self.ff2_skip_rate)))
        src = self.bypass_mid(src_orig, src)
        src = self._add(src, self.self_attn2(src, attn_weights, cache, "val2"), attn_mask_seq)
        src = self._add(src, self.conv_module2(src, src_key_padding_mask=conv_pad, chunk_size=chunk_size,
                                               cache=cache, key="conv2"), self._seq_mask(src, conv_rate))
        src = self._add(src, self.balancer_ff3(self.feed_forward3(src)),
                        self._seq_mask(src, self._rate(self.ff3_skip_rate)))
        src = self.norm(self.balancer1(src))
        src = self.bypass(src_orig, src)
        return self.whiten(self.balancer2(src))


class ZipformerStack(nn.Module):
    """``num_layers`` layers at one frame rate; layer skipping warms up between
    ``warmup_begin`` and ``warmup_end`` batches (layer by layer)."""

    def __init__(self, make_layer, num_layers: int, pos_dim: int, warmup_begin: float, warmup_end: float,
                 initial_layerdrop_rate: float = 0.5, final_layerdrop_rate: float = 0.05):
        super().__init__()
        self.encoder_pos = CompactRelPositionalEncoding(pos_dim, dropout_rate=0.15, length_factor=1.0)
        self.layers = nn.ModuleList([make_layer() for _ in range(num_layers)])
        self.num_layers = num_layers
        delta = (warmup_end - warmup_begin) / num_layers
        for i, layer in enumerate(self.layers):
            b = warmup_begin + i * delta
            layer.bypass.skip_rate = ScheduledFloat((b, initial_layerdrop_rate), (b + delta, final_layerdrop_rate),
                                                    default=0.0)

    def forward(self, src: Tensor, chunk_size: int = -1, feature_mask: Union[Tensor, float] = 1.0,
                attn_mask: Optional[Tensor] = None, src_key_padding_mask: Optional[Tensor] = None,
                cache: Optional[dict] = None) -> Tensor:
        """With ``cache`` (streaming): {"left": L cached frames, "layers": [per-layer caches]}."""
        pos_emb = self.encoder_pos(src, left_context_len=cache["left"] if cache is not None else 0)
        out = src * feature_mask
        for i, layer in enumerate(self.layers):
            out = layer(out, pos_emb, chunk_size=chunk_size, attn_mask=attn_mask,
                        src_key_padding_mask=src_key_padding_mask,
                        cache=cache["layers"][i] if cache is not None else None)
            out = out * feature_mask
        return out


class DownsampledZipformerStack(nn.Module):
    """Downsample by ``ds``, run the stack, upsample, and mix with the input (learned bypass)."""

    def __init__(self, encoder: ZipformerStack, dim: int, downsample: int):
        super().__init__()
        self.downsample_factor = downsample
        self.downsample = SimpleDownsample(downsample)
        self.encoder = encoder
        self.out_combiner = BypassModule(dim)

    def forward(self, src: Tensor, chunk_size: int = -1, feature_mask: Union[Tensor, float] = 1.0,
                attn_mask: Optional[Tensor] = None, src_key_padding_mask: Optional[Tensor] = None,
                cache: Optional[dict] = None) -> Tensor:
        ds = self.downsample_factor
        src_orig = src
        src = self.downsample(src)
        if attn_mask is not None:
            attn_mask = attn_mask[::ds, ::ds]
        src = self.encoder(src, chunk_size=chunk_size // ds, feature_mask=feature_mask, attn_mask=attn_mask,
                           src_key_padding_mask=src_key_padding_mask, cache=cache)
        src = simple_upsample(src, ds)[: src_orig.shape[0]]
        return self.out_combiner(src_orig, src)


class ZipformerEncoder(nn.Module):
    """Front end + Zipformer stacks. ``forward(x (N, T, F), x_lens (N,)) -> (N, T'', C), lens``."""

    config_cls = ZipformerConfig
    frame_shift = 0.04  # seconds per output frame: 10 ms fbank, x2 front end, x2 output downsampling

    @staticmethod
    def output_lengths(x_lens):
        """Output frames for ``x_lens`` fbank frames (tensor or int): the front end, then x2 down."""
        return (frames_after_front_end(x_lens) + 1) // 2

    def __init__(self, cfg: ZipformerConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        dropout = ScheduledFloat((0.0, 0.3), (20000.0, 0.1))
        dims = cfg.per_stack("encoder_dim")
        self.encoder_dim = dims
        self.encoder_unmasked_dim = cfg.per_stack("encoder_unmasked_dim")
        self.downsampling_factor = tuple(cfg.downsampling_factor)
        self.cnn_module_kernel = cfg.per_stack("cnn_module_kernel")
        c1, c2, c3 = cfg.embed_channels
        self.encoder_embed = Conv2dSubsampling(cfg.feature_dim, dims[0], layer1_channels=c1, layer2_channels=c2,
                                               layer3_channels=c3, dropout=ScheduledFloat((0.0, 0.3), (20000.0, 0.1)))
        n = len(dims)
        stacks = []
        for i in range(n):
            def make_layer(i=i):
                return ZipformerEncoderLayer(
                    embed_dim=dims[i], pos_dim=cfg.pos_dim, num_heads=cfg.per_stack("num_heads")[i],
                    query_head_dim=cfg.per_stack("query_head_dim")[i], pos_head_dim=cfg.per_stack("pos_head_dim")[i],
                    value_head_dim=cfg.per_stack("value_head_dim")[i],
                    feedforward_dim=cfg.per_stack("feedforward_dim")[i], dropout=dropout,
                    cnn_module_kernel=self.cnn_module_kernel[i], causal=cfg.causal)

            stack = ZipformerStack(make_layer, cfg.per_stack("num_encoder_layers")[i], pos_dim=cfg.pos_dim,
                                   warmup_begin=cfg.warmup_batches * (i + 1) / (n + 1),
                                   warmup_end=cfg.warmup_batches * (i + 2) / (n + 1),
                                   final_layerdrop_rate=0.035 * (self.downsampling_factor[i] ** 0.5))
            if self.downsampling_factor[i] != 1:
                stack = DownsampledZipformerStack(stack, dims[i], self.downsampling_factor[i])
            stacks.append(stack)
        self.encoders = nn.ModuleList(stacks)
        self.downsample_output = SimpleDownsample(cfg.output_downsampling_factor)

    @property
    def output_dim(self) -> int:
        return max(self.encoder_dim)

    @property
    def layer_dims(self) -> tuple[int, ...]:
        """Channels of each tap ``forward(..., return_layers=True)`` returns (one per stack)."""
        return tuple(self.encoder_dim)

    # -- training-time helpers
    def _feature_masks(self, x: Tensor) -> list:
        """Per stack, on ~12.5% / ~25% of sequences zero the channels above the unmasked dim
        (so a narrower sub-network must work too). x: (T, B, C0)."""
        if not self.training or torch.jit.is_tracing():
            return [1.0] * len(self.encoder_dim)
        B = x.shape[1]
        p = 0.125
        m1 = (torch.rand(1, B, 1, device=x.device) > p).to(x.dtype)
        m2 = m1 * (torch.rand(1, B, 1, device=x.device) > p).to(x.dtype)
        masks = []
        for d, u1 in zip(self.encoder_dim, self.encoder_unmasked_dim):
            m = torch.ones(1, B, d, dtype=x.dtype, device=x.device)
            u2 = u1 + (d - u1) // 2
            m[:, :, u1:u2] *= m1
            m[:, :, u2:] *= m2
            masks.append(m)
        return masks

    def _chunk_info(self) -> tuple[int, int]:
        if not self.cfg.causal:
            return -1, -1
        if self.training and not torch.jit.is_tracing():
            chunk = random.choice(self.cfg.chunk_size)
            left = random.choice(self.cfg.left_context_frames)
        else:
            chunk, left = self.cfg.chunk_size[0], self.cfg.left_context_frames[0]
        if chunk == -1:
            return -1, -1
        return chunk, max(1, left // chunk) if left >= 0 else -1

    def chunk_attn_mask(self, T: int, chunk_size: int, left_chunks: int, device) -> Optional[Tensor]:
        """(T, T) bool, True = masked: frame t sees its own chunk and ``left_chunks`` before it."""
        if chunk_size <= 0:
            return None
        if left_chunks < 0:
            left_chunks = 1_000_000
        c = torch.arange(T, device=device) // chunk_size
        return (c.unsqueeze(0) > c.unsqueeze(1)) | (c.unsqueeze(0) < c.unsqueeze(1) - left_chunks)

    def _full_dim_output(self, outputs: list[Tensor]) -> Tensor:
        pieces = [outputs[-1]]
        cur = self.encoder_dim[-1]
        for i in range(len(outputs) - 2, -1, -1):
            d = self.encoder_dim[i]
            if d > cur:
                pieces.append(outputs[i][..., cur:d])
                cur = d
        return torch.cat(pieces, dim=-1)

    def init_states(self, batch_size: int = 1, device=None) -> dict:
        """Streaming state (causal models); see :mod:`auden_kit.encoders.zipformer.streaming`."""
        from auden_kit.encoders.zipformer.streaming import init_states

        return init_states(self, batch_size, device)

    def streaming_forward(self, x: Tensor, states: dict) -> tuple[Tensor, dict]:
        """New fbank frames (N, T, F) -> newly final output frames (N, T', C) and the updated state.
        Uses ``chunk_size[0]`` and ``left_context_frames[0]``; equals the chunk-masked ``forward``."""
        from auden_kit.encoders.zipformer.streaming import streaming_forward

        return streaming_forward(self, x, states)

    def forward(self, x: Tensor, x_lens: Tensor, chunk_size: Optional[int] = None,
                left_context_frames: Optional[int] = None, return_layers: bool = False):
        """x: (N, T, F) fbank; x_lens: (N,). ``chunk_size`` / ``left_context_frames`` override the
        causal model's chunking (at 50 Hz). Returns (N, T'', C) and lengths (N,), T'' ~ T / 4.
        ``return_layers``: also a list with every stack's output at the output frame rate,
        (N, T'', C_i) each (the taps of distillation and layer-wise probes)."""
        x, x_lens = self.encoder_embed(x, x_lens)
        x = x.permute(1, 0, 2)  # (T', N, C0)
        T = x.shape[0]
        pad_mask = torch.arange(T, device=x.device).unsqueeze(0) >= x_lens.unsqueeze(1)  # (N, T') True=pad
        if chunk_size is not None and self.cfg.causal:
            left = left_context_frames if left_context_frames is not None else -1
            chunk, left_chunks = chunk_size, (max(1, left // chunk_size) if left >= 0 else -1)
        else:
            chunk, left_chunks = self._chunk_info()
        attn_mask = self.chunk_attn_mask(T, chunk, left_chunks, x.device)
        masks = self._feature_masks(x)
        outputs = []
        for i, stack in enumerate(self.encoders):
            ds = self.downsampling_factor[i]
            x = convert_num_channels(x, self.encoder_dim[i])
            x = stack(x, chunk_size=chunk, feature_mask=masks[i], attn_mask=attn_mask,
                      src_key_padding_mask=pad_mask[..., ::ds])
            outputs.append(x)
        x = self.downsample_output(self._full_dim_output(outputs))
        lens = torch.div(x_lens + 1, 2, rounding_mode="floor")
        if return_layers:
            layers = [self.downsample_output(o).permute(1, 0, 2) for o in outputs]
            return x.permute(1, 0, 2), lens, layers
        return x.permute(1, 0, 2), lens
