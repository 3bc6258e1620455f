"""Load icefall Zipformer2 transducer checkpoints (``pretrained.pt``, ``epoch-N.pt``) into our modules.

Module and parameter names follow icefall's, so the map is a prefix change: icefall keeps the
front end (``encoder_embed``) beside the encoder stacks (``encoder``); ours holds both in
``encoder``. Decoder, joiner, simple projections and the CTC head keep their names.
"""

from __future__ import annotations

from pathlib import Path

import torch

from auden_kit.errors import UserError


def icefall_to_auden(state: dict) -> dict:
    out = {}
    for k, v in state.items():
        # the attention decoder keeps its names: our icefall-layout decoder uses icefall's
        out["encoder." + k if k.startswith("encoder_embed.") else k] = v
    return out


def load_icefall_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"icefall checkpoint '{path}' does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - truncated or not a torch file
        raise UserError(f"icefall checkpoint '{path}' cannot be read ({e.__class__.__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else ''}); download it again") from None
    state = ckpt.get("model", ckpt) if isinstance(ckpt, dict) else ckpt
    if not isinstance(state, dict) or not any(k.startswith("encoder") for k in state):
        raise UserError(f"'{path}' does not look like an icefall Zipformer checkpoint (no encoder weights)")
    return icefall_to_auden(state)


def apply_icefall_state(model: torch.nn.Module, state: dict) -> None:
    """Load converted weights; errors name the first mismatching keys (wrong preset or head sizes)."""
    own = model.state_dict()
    shape_bad = [k for k in state if k in own and own[k].shape != state[k].shape]
    if shape_bad:
        k = shape_bad[0]
        raise UserError(f"icefall weight '{k}' has shape {tuple(state[k].shape)} but the model expects "
                        f"{tuple(own[k].shape)}: choose the matching preset/sizes")
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected:
        raise UserError(f"icefall checkpoint has weights this model lacks, e.g. {unexpected[:3]}")
    if missing:
        raise UserError(f"this model has weights the icefall checkpoint lacks, e.g. {missing[:3]} "
                        "(set model.use_ctc / sizes to match the checkpoint)")


def _count(state: dict, prefix: str) -> int:
    """Number of consecutive integer children ``prefix{i}.`` in ``state``."""
    n = 0
    while any(k.startswith(f"{prefix}{n}.") for k in state):
        n += 1
    return n


def infer_config(state: dict) -> tuple[dict, dict]:
    """Zipformer and ASR-head settings read off a converted icefall state dict's tensor shapes.

    Returns (encoder settings, ASR model settings). Head sizes per stack assume icefall's
    ``pos_head_dim`` 4 (its default in every recipe); ``encoder_unmasked_dim`` only matters in
    training and is taken from the matching preset (else equal to the stack width).
    """
    from auden_kit.encoders.zipformer.encoder import PRESETS

    n = _count(state, "encoder.encoders.")
    if n == 0:
        raise UserError("the checkpoint has no 'encoder.encoders.N' weights: not an icefall Zipformer2")
    ds, layers, dims, ffs, heads, qd, vd, kernels = [], [], [], [], [], [], [], []
    pos_dim = 48
    causal = any(".causal_conv." in k for k in state)
    for i in range(n):
        b = state.get(f"encoder.encoders.{i}.downsample.bias")
        ds.append(int(b.numel()) if b is not None else 1)
        lp = f"encoder.encoders.{i}.encoder.layers." if b is not None else f"encoder.encoders.{i}.layers."
        layers.append(_count(state, lp))
        l0 = lp + "0."
        dims.append(int(state[l0 + "norm.bias"].numel()))
        ffs.append(int(state[l0 + "feed_forward2.in_proj.weight"].shape[0]))
        lin_pos = state[l0 + "self_attn_weights.linear_pos.weight"]
        pos_dim = int(lin_pos.shape[1])
        h = int(lin_pos.shape[0]) // 4
        heads.append(h)
        qd.append((int(state[l0 + "self_attn_weights.in_proj.weight"].shape[0]) // h - 4) // 2)
        vd.append(int(state[l0 + "self_attn1.in_proj.weight"].shape[0]) // h)
        conv = l0 + ("conv_module1.depthwise_conv.chunkwise_conv.weight" if causal else
                     "conv_module1.depthwise_conv.weight")
        kernels.append(int(state[conv].shape[-1]))
    c1 = int(state["encoder.encoder_embed.conv.0.weight"].shape[0])
    c2 = int(state["encoder.encoder_embed.conv.4.weight"].shape[0])
    c3 = int(state["encoder.encoder_embed.conv.7.weight"].shape[0])
    width = int(state["encoder.encoder_embed.out.weight"].shape[1]) // c3
    feature_dim = next((f for f in [80] + list(range(7, 1025)) if (((f - 1) // 2) - 1) // 2 == width), 80)
    enc = dict(feature_dim=feature_dim, embed_channels=(c1, c2, c3), downsampling_factor=tuple(ds),
               num_encoder_layers=tuple(layers), encoder_dim=tuple(dims), feedforward_dim=tuple(ffs),
               num_heads=tuple(heads), query_head_dim=tuple(qd), value_head_dim=tuple(vd), pos_head_dim=(4,),
               pos_dim=pos_dim, cnn_module_kernel=tuple(kernels), causal=causal, encoder_unmasked_dim=tuple(dims))
    for name, p in PRESETS.items():
        if tuple(p["encoder_dim"]) == tuple(dims) and tuple(p["num_encoder_layers"]) == tuple(layers) and \
                tuple(p["feedforward_dim"]) == tuple(ffs):
            enc["encoder_unmasked_dim"] = tuple(p["encoder_unmasked_dim"])
            enc["preset_name"] = name
    asr: dict = {"use_transducer": "joiner.output_linear.weight" in state,
                 "use_ctc": "ctc_output.1.weight" in state}
    if asr["use_transducer"]:
        emb = state["decoder.embedding.weight"]
        asr.update(vocab_size=int(emb.shape[0]), decoder_dim=int(emb.shape[1]),
                   joiner_dim=int(state["joiner.output_linear.weight"].shape[1]),
                   context_size=int(state["decoder.conv.weight"].shape[-1]) if "decoder.conv.weight" in state else 1)
    elif asr["use_ctc"]:
        asr["vocab_size"] = int(state["ctc_output.1.weight"].shape[0])
    if "attention_decoder.decoder.embed.weight" in state:
        p = "attention_decoder.decoder."
        emb = state[p + "embed.weight"]
        asr.update(use_attention_decoder=True, attention_decoder_layout="icefall",
                   attention_decoder_dim=int(emb.shape[1]), attention_decoder_layers=_count(state, p + "layers."),
                   attention_decoder_ff_dim=int(state[p + "layers.0.feed_forward.0.weight"].shape[0]),
                   attention_decoder_attention_dim=int(state[p + "layers.0.self_attn.linear_q.weight"].shape[0]))
        asr.setdefault("vocab_size", int(emb.shape[0]))
    return enc, asr
