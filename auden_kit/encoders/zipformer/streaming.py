"""Chunk-by-chunk inference for a causal Zipformer (``causal: true``).

Each call consumes new fbank frames and returns the encoder frames that became
final. The state holds, per layer, what the chunk-masked full forward would let
the next chunk see: keys, non-linear-attention inputs and values of the last
``left_context`` frames, and the last ``kernel // 2`` inputs of both convolutions;
plus the front end's pending fbank and its ConvNeXt look-ahead (``CONVNEXT_PAD`` frames at 50 Hz).
The chunk itself goes through the encoder's own stacks and layers (their ``cache`` argument), so
there is one implementation of the attention and layer computations.
Outputs equal those of ``ZipformerEncoder.forward(x, lens, chunk_size, left_context_frames)``
on the whole input (eval mode).

Shape legend: N batch, T frames, C channels, H heads, L left-context frames.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from auden_kit.encoders.zipformer.subsampling import CONV_CONTEXT, CONVNEXT_PAD, frames_after_front_end
from auden_kit.nn.scaling import convert_num_channels


def init_states(enc, batch_size: int, device=None) -> dict:
    """Empty streaming state for ``enc`` (a causal ZipformerEncoder) and ``batch_size`` streams."""
    cfg = enc.cfg
    if not cfg.causal:
        raise ValueError("streaming needs a causal encoder (model.encoder.causal=true)")
    chunk = cfg.chunk_size[0]
    left = cfg.left_context_frames[0]
    if chunk <= 0 or left < 0:
        raise ValueError("streaming needs a positive chunk_size[0] and a non-negative left_context_frames[0]")
    left_chunks = max(1, left // chunk)
    device = device or next(enc.parameters()).device
    N = batch_size
    stacks = []
    heads = cfg.per_stack("num_heads")
    for i, stack in enumerate(enc.encoders):
        ds = enc.downsampling_factor[i]
        L = left_chunks * chunk // ds
        d = enc.encoder_dim[i]
        inner = stack.encoder if ds != 1 else stack
        layers = []
        for layer in inner.layers:
            dq = layer.self_attn_weights.query_head_dim * heads[i]
            dv = layer.self_attn1.in_proj.out_features
            hid = layer.nonlin_attention.hidden_channels
            k = enc.cnn_module_kernel[i] // 2
            layers.append({"key": torch.zeros(L, N, dq, device=device), "nonlin": torch.zeros(L, N, hid, device=device),
                           "val1": torch.zeros(L, N, dv, device=device), "val2": torch.zeros(L, N, dv, device=device),
                           "conv1": torch.zeros(N, d, k, device=device), "conv2": torch.zeros(N, d, k, device=device)})
        stacks.append({"layers": layers, "left": L})
    c3 = enc.encoder_embed.convnext.depthwise_conv.in_channels
    return {
        "fbank": torch.zeros(N, 0, cfg.feature_dim, device=device),  # not yet consumed by the convolutions
        "conv3": None,  # ConvNeXt input frames kept for its +-3 frame window
        "c3_channels": c3,
        "embed": torch.zeros(N, 0, enc.encoder_dim[0], device=device),  # 50 Hz frames waiting for a full chunk
        "stacks": stacks, "processed": 0, "chunk": chunk,
    }


def _front_end(enc, x: Tensor, st: dict) -> Tensor:
    """New fbank (N, T, F) -> newly final 50 Hz embeddings (N, T', C0)."""
    fe = enc.encoder_embed
    P = CONVNEXT_PAD
    buf = torch.cat([st["fbank"], x], dim=1)
    n = max(0, frames_after_front_end(buf.shape[1]))  # conv frame c reads fbank [2c, 2c + CONV_CONTEXT + 1]
    N = buf.shape[0]
    if n <= 0:
        st["fbank"] = buf
        return buf.new_zeros(N, 0, enc.encoder_dim[0])
    c3 = fe.conv(buf[:, : 2 * n + CONV_CONTEXT].unsqueeze(1))  # (N, C, n, F')
    st["fbank"] = buf[:, 2 * n:]
    if st["conv3"] is None:  # the full forward zero-pads the ConvNeXt's window on the left
        st["conv3"] = c3.new_zeros(N, c3.shape[1], P, c3.shape[3])
    c3 = torch.cat([st["conv3"], c3], dim=2)
    m = fe.convnext
    if c3.shape[2] < 2 * P + 1:
        st["conv3"] = c3
        return buf.new_zeros(N, 0, enc.encoder_dim[0])
    y = nn.functional.conv2d(c3, m.depthwise_conv.weight, m.depthwise_conv.bias, padding=(0, m.padding[1]),
                             groups=m.depthwise_conv.groups)
    y = m.pointwise_conv2(m.activation(m.pointwise_conv1(y)))
    y = c3[:, :, P:-P] + y
    st["conv3"] = c3[:, :, -2 * P:]
    n_, c, t, f = y.shape
    y = fe.out(y.transpose(1, 2).reshape(n_, t, c * f))
    return fe.out_norm(y)


@torch.no_grad()
def streaming_forward(enc, x: Tensor, st: dict) -> tuple[Tensor, dict]:
    """Feed fbank frames (N, T, F) of every stream; return newly final encoder frames (N, T_out, C)."""
    emb = torch.cat([st["embed"], _front_end(enc, x, st)], dim=1)
    chunk = st["chunk"]
    outs = []
    while emb.shape[1] >= chunk:
        cur, emb = emb[:, :chunk], emb[:, chunk:]
        outs.append(_encode_chunk(enc, cur.permute(1, 0, 2), st))
    st["embed"] = emb
    if not outs:
        return x.new_zeros(x.shape[0], 0, enc.output_dim), st
    return torch.cat(outs, dim=1), st


def _encode_chunk(enc, x: Tensor, st: dict) -> Tensor:
    """One chunk (T=chunk, N, C0) at 50 Hz -> (N, chunk // 2, C): the encoder's own stacks and layers,
    each continuing from its cache."""
    N = x.shape[1]
    outputs = []
    for i, stack in enumerate(enc.encoders):
        ds = enc.downsampling_factor[i]
        info = st["stacks"][i]
        L = info["left"]
        x = convert_num_channels(x, enc.encoder_dim[i])
        T = (x.shape[0] + ds - 1) // ds
        valid_left = min(L, st["processed"] // ds)  # cache frames that hold real past frames
        pad = torch.zeros(N, L + T, dtype=torch.bool, device=x.device)
        pad[:, : L - valid_left] = True
        x = stack(x, src_key_padding_mask=pad, cache=info)
        outputs.append(x)
    st["processed"] += outputs[0].shape[0]
    return enc.downsample_output(enc._full_dim_output(outputs)).permute(1, 0, 2)
