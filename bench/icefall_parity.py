#!/usr/bin/env python3
"""Our Zipformer loaded with icefall's weights gives icefall's outputs.

Builds icefall's Zipformer2 (from a checkout of k2-fsa/icefall) with a preset's sizes and random
weights, writes them as an icefall checkpoint (``{"model": state_dict}``, icefall's names), loads
that file with ``auden_kit.encoders.zipformer.icefall`` (what ``auden-kit import-icefall`` uses)
into our encoder, and compares eval-mode outputs on random fbank of unequal lengths. With
``--causal`` the streaming variant is compared (chunk-masked forward, first chunk size / left
context). Prints one JSON line with the largest absolute and relative differences.

    python bench/icefall_parity.py --icefall ~/icefall/egs/librispeech/ASR/zipformer [--causal]
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

from icefall_ref import build_icefall_encoder, icefall_state_dict


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--icefall", required=True, metavar="DIR", help="icefall's egs/librispeech/ASR/zipformer folder")
    p.add_argument("--presets", default="zipformer-s,zipformer-m")
    p.add_argument("--causal", action="store_true", help="compare the streaming (causal) variant")
    p.add_argument("--frames", type=int, default=600, help="longest input, 100 Hz fbank frames")
    a = p.parse_args()
    torch.set_num_threads(2)
    from auden_kit.encoders.zipformer import ZipformerConfig, ZipformerEncoder
    from auden_kit.encoders.zipformer.icefall import load_icefall_checkpoint

    out = {"causal": a.causal}
    for preset in a.presets.split(","):
        cfg = ZipformerConfig(preset=preset, causal=a.causal)
        torch.manual_seed(0)
        ref, run_ref = build_icefall_encoder(cfg, a.icefall, decoding=True)
        ref.eval()
        # icefall's weights are mostly freshly initialised; perturb them so every parameter (biases
        # and scales that start at 0 or 1 included) matters in the comparison
        with torch.no_grad():
            for t in ref.parameters():
                t.mul_(1 + 0.1 * torch.randn_like(t)).add_(0.01 * torch.randn_like(t))
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = Path(tmp) / "pretrained.pt"
            torch.save({"model": icefall_state_dict(ref)}, ckpt)
            state = load_icefall_checkpoint(ckpt)
        ours = ZipformerEncoder(cfg)
        enc_state = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
        ours.load_state_dict(enc_state, strict=True)  # raises naming any missing/unexpected weight
        ours.eval()
        x = torch.randn(3, a.frames, 80)
        lens = torch.tensor([a.frames, a.frames * 2 // 3, a.frames // 3])
        with torch.no_grad():
            y_ref = run_ref(x, lens)
            y, y_lens = ours(x, lens)
        if y.shape != y_ref.shape:
            sys.exit(f"{preset}: output shapes differ: ours {tuple(y.shape)}, icefall {tuple(y_ref.shape)}")
        valid = torch.arange(y.shape[1]).unsqueeze(0) < y_lens.unsqueeze(1)
        diff = (y - y_ref).abs()[valid]
        out[f"{preset}.params"] = sum(t.numel() for t in ours.parameters())
        out[f"{preset}.max_abs_diff"] = float(diff.max())
        out[f"{preset}.max_rel_diff"] = float(diff.max() / y_ref.abs()[valid].max())
        out[f"{preset}.output_rms"] = float(y_ref[valid].pow(2).mean().sqrt())
    print(json.dumps(out))


if __name__ == "__main__":
    main()
