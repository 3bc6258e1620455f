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
    p.add_argument("--attention-decoder", action="store_true",
                   help="also compare icefall's attention decoder (512/6 layers/8 heads/2048) with ours")
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
    if a.attention_decoder:
        out.update(attention_decoder_parity(a.icefall))
    print(json.dumps(out))


def attention_decoder_parity(folder: str) -> dict:
    """icefall's attention decoder with perturbed random weights, loaded into ours by name: logits
    of a padded batch of token sequences over a padded encoder output."""
    from icefall_ref import build_icefall_attention_decoder

    from auden_kit.heads.attention_decoder import IcefallAttentionDecoder

    V, D, L, H, F, M = 500, 512, 6, 8, 2048, 384
    torch.manual_seed(0)
    ref = build_icefall_attention_decoder(folder, V, D, L, H, F, D, M).eval()
    with torch.no_grad():
        for t in ref.parameters():
            t.mul_(1 + 0.1 * torch.randn_like(t)).add_(0.01 * torch.randn_like(t))
    ours = IcefallAttentionDecoder(V, M, D, L, H, F, D).eval()
    ours.load_state_dict({k: v for k, v in ref.state_dict().items() if k.startswith("decoder.")}, strict=True)
    enc, enc_lens = torch.randn(2, 60, M), torch.tensor([60, 41])
    toks = [[5, 6, 7, 8, 9], [10, 11]]
    ys_in, _, pad = ours._inputs(toks, enc.device)
    with torch.no_grad():
        ys_lens = torch.tensor([len(t) + 1 for t in toks])
        y_ref = ref.decoder(x=ys_in, x_lens=ys_lens, memory=enc, memory_lens=enc_lens)
        y = ours.logits(enc, enc_lens, ys_in, pad)
    valid = ~pad
    diff = (y - y_ref).abs()[valid]
    return {"attention_decoder.params": sum(t.numel() for t in ours.parameters()),
            "attention_decoder.max_abs_diff": float(diff.max()),
            "attention_decoder.logit_rms": float(y_ref[valid].pow(2).mean().sqrt())}


if __name__ == "__main__":
    main()
