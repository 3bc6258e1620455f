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
        if k.startswith("encoder_embed."):
            out["encoder." + k] = v
        elif k.startswith("attention_decoder."):
            continue  # icefall's attention decoder has a different layout; not converted
        else:
            out[k] = v
    return out


def load_icefall_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"icefall checkpoint '{path}' does not exist")
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
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
