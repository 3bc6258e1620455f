"""Chunk-by-chunk inference for a causal Zipformer (``causal: true``).

Each call consumes new fbank frames and returns the encoder frames that became
final. The state holds, per layer, what the chunk-masked full forward would let
the next chunk see: keys, non-linear-attention inputs and values of the last
``left_context`` frames, and the last ``kernel // 2`` inputs of both convolutions;
plus the front end's pending fbank and its ConvNeXt lookahead (3 frames at 50 Hz).
Outputs equal those of ``ZipformerEncoder.forward(x, lens, chunk_size, left_context_frames)``
on the whole input (eval mode).

Shape legend: N batch, T frames, C channels, H heads, L left-context frames.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from auden_kit.nn.scaling import convert_num_channels


def _rel_shift(pos_scores: Tensor, T: int, K: int) -> Tensor:
    """(H, N, T, T+K-1) scores by offset -> (H, N, T, K) for queries at the last T of K keys."""
    H, N, _, n = pos_scores.shape
    rows = torch.arange(T - 1, -1, -1, device=pos_scores.device).unsqueeze(1)
    idx = (rows + torch.arange(K, device=pos_scores.device)).expand(H, N, T, K)
    return torch.gather(pos_scores, 3, idx)


def _attn_weights(m, x: Tensor, pos_emb: Tensor, cached_key: Tensor, pad_mask: Tensor):
    """Attention weights of the chunk's queries over [cached keys; chunk keys]. Returns (weights, new keys)."""
    x = m.in_proj(x)
    T, N, _ = x.shape
    H, dq, dp = m.num_heads, m.query_head_dim, m.pos_head_dim
    q = x[..., : H * dq].reshape(T, N, H, dq).permute(2, 1, 0, 3)
    k_new = x[..., H * dq: 2 * H * dq]
    k_all = torch.cat([cached_key, k_new], dim=0)
    K = k_all.shape[0]
    k = k_all.reshape(K, N, H, dq).permute(2, 1, 3, 0)
    p = x[..., 2 * H * dq:].reshape(T, N, H, dp).permute(2, 1, 0, 3)
    scores = torch.matmul(q, k)
    pe = m.linear_pos(pos_emb).reshape(-1, pos_emb.shape[1], H, dp).permute(2, 0, 3, 1)
    scores = scores + _rel_shift(torch.matmul(p, pe), T, K)
    scores = scores.masked_fill(pad_mask.unsqueeze(1), -1000.0)
    return scores.softmax(dim=-1), k_all[-cached_key.shape[0]:] if cached_key.shape[0] else cached_key


def _values(m, x: Tensor, weights: Tensor, cached_val: Tensor):
    """SelfAttention on [cached values; chunk values]."""
    T, N, _ = x.shape
    H = weights.shape[0]
    v_all = torch.cat([cached_val, m.in_proj(x)], dim=0)
    v = v_all.reshape(v_all.shape[0], N, H, -1).permute(2, 1, 0, 3)
    out = torch.matmul(weights, v).permute(2, 1, 0, 3).reshape(T, N, -1)
    return m.out_proj(out), v_all[-cached_val.shape[0]:] if cached_val.shape[0] else cached_val


def _nonlin(m, x: Tensor, weights: Tensor, cached_x: Tensor):
    s, x, y = m.in_proj(x).chunk(3, dim=2)
    x = x * torch.tanh(s)
    T, N, _ = x.shape
    x_all = torch.cat([cached_x, x], dim=0)
    xa = x_all.reshape(x_all.shape[0], N, 1, -1).permute(2, 1, 0, 3)
    out = torch.matmul(weights, xa).permute(2, 1, 0, 3).reshape(T, N, -1)
    return m.out_proj(out * y), x_all[-cached_x.shape[0]:] if cached_x.shape[0] else cached_x


def _layer(layer, src: Tensor, pos_emb: Tensor, cache: dict, pad_mask: Tensor) -> Tensor:
    src_orig = src
    w, cache["key"] = _attn_weights(layer.self_attn_weights, src, pos_emb, cache["key"], pad_mask)
    src = src + layer.feed_forward1(src)
    na, cache["nonlin"] = _nonlin(layer.nonlin_attention, src, w[0:1], cache["nonlin"])
    src = src + na
    sa, cache["val1"] = _values(layer.self_attn1, src, w, cache["val1"])
    src = src + sa
    c, cache["conv1"] = layer.conv_module1.streaming_forward(src, cache["conv1"])
    src = src + c
    src = src + layer.feed_forward2(src)
    src = layer.bypass_mid(src_orig, src)
    sa, cache["val2"] = _values(layer.self_attn2, src, w, cache["val2"])
    src = src + sa
    c, cache["conv2"] = layer.conv_module2.streaming_forward(src, cache["conv2"])
    src = src + c
    src = src + layer.feed_forward3(src)
    src = layer.norm(src)
    return layer.bypass(src_orig, src)


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
    buf = torch.cat([st["fbank"], x], dim=1)
    n = max(0, (buf.shape[1] - 7) // 2)  # conv3 frame c reads fbank [2c, 2c + 8]
    N = buf.shape[0]
    if n <= 0:
        st["fbank"] = buf
        return buf.new_zeros(N, 0, enc.encoder_dim[0])
    c3 = fe.conv(buf[:, : 2 * n + 7].unsqueeze(1))  # (N, C, n, F')
    st["fbank"] = buf[:, 2 * n:]
    if st["conv3"] is None:  # the full forward zero-pads 3 frames on the left
        st["conv3"] = c3.new_zeros(N, c3.shape[1], 3, c3.shape[3])
    c3 = torch.cat([st["conv3"], c3], dim=2)
    m = fe.convnext
    if c3.shape[2] < 7:
        st["conv3"] = c3
        return buf.new_zeros(N, 0, enc.encoder_dim[0])
    y = nn.functional.conv2d(c3, m.depthwise_conv.weight, m.depthwise_conv.bias, padding=(0, m.padding[1]),
                             groups=m.depthwise_conv.groups)
    y = m.pointwise_conv2(m.activation(m.pointwise_conv1(y)))
    y = c3[:, :, 3:-3] + y
    st["conv3"] = c3[:, :, -6:]
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
    """One chunk (T=chunk, N, C0) at 50 Hz -> (N, chunk // 2, C)."""
    N = x.shape[1]
    outputs = []
    for i, stack in enumerate(enc.encoders):
        ds = enc.downsampling_factor[i]
        info = st["stacks"][i]
        L = info["left"]
        x = convert_num_channels(x, enc.encoder_dim[i])
        src = stack.downsample(x) if ds != 1 else x
        inner = stack.encoder if ds != 1 else stack
        T = src.shape[0]
        seen = st["processed"] // ds  # frames of this stack already processed
        valid_left = min(L, seen)
        pad = torch.zeros(N, L + T, dtype=torch.bool, device=x.device)
        pad[:, : L - valid_left] = True
        pos_emb = inner.encoder_pos(src, left_context_len=L)
        out = src
        for layer, cache in zip(inner.layers, info["layers"]):
            out = _layer(layer, out, pos_emb, cache, pad)
        if ds != 1:
            from auden_kit.encoders.zipformer.modules import simple_upsample

            out = stack.out_combiner(x, simple_upsample(out, ds)[: x.shape[0]])
        x = out
        outputs.append(x)
    st["processed"] += outputs[0].shape[0]
    full = enc._full_dim_output(outputs)
    return enc.downsample_output(full).permute(1, 0, 2)
