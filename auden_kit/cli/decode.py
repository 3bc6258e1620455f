"""``auden-kit decode``: audio files or a cut manifest, with a model folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from auden_kit.cli.common import setup_logging
from auden_kit.errors import UserError

EPILOG = ("Example: auden-kit decode --model exp/model-avg a.wav b.flac   |   "
          "auden-kit decode --model exp/streaming-model --streaming a.wav   |   "
          "auden-kit decode --model exp/model-avg --cuts data/fbank/cuts_test.jsonl.gz --out-dir exp/decode")


def decode(
    files: List[Path] = typer.Argument(None, help="Audio files (any rate, channels; wav/flac/ogg/mp3)."),
    model: Path = typer.Option(..., "--model", "-m", help="Model folder (from `auden-kit average`)."),
    cuts: Optional[Path] = typer.Option(None, help="Decode this cut manifest in batches instead of files."),
    out_dir: Optional[Path] = typer.Option(None, help="With --cuts: where recogs-/errs-/wer-summary- files go."),
    method: str = typer.Option("", help="greedy, modified_beam_search, ctc_greedy, ctc_prefix_beam, "
                                        "attention_rescoring (default: greedy, or ctc_greedy for CTC-only models)."),
    beam: int = typer.Option(4, help="Beam size for beam searches."),
    output: str = typer.Option("text", help="text (one line per file) or json (text, tokens, token times)."),
    max_duration: float = typer.Option(300.0, help="With --cuts: seconds of audio per batch."),
    name: str = typer.Option("", help="With --cuts: suffix of the result files (default: manifest name + method)."),
    device: str = typer.Option("cpu", help="cpu or cuda."),
    streaming: bool = typer.Option(False, help="Files only, causal models: feed the audio in pieces of "
                                               "--piece-ms through the streaming encoder (greedy search)."),
    piece_ms: int = typer.Option(320, help="With --streaming: audio per piece in milliseconds."),
):
    """Decode audio files (one line per file) or a manifest (recogs/errs/WER files)."""
    import torch

    from auden_kit.hub import load_pretrained

    setup_logging()
    if not files and cuts is None:
        raise UserError("give audio files to decode, or --cuts MANIFEST")
    if output not in ("text", "json"):
        raise UserError(f"--output must be text or json, got '{output}'")
    if streaming and method not in ("", "greedy"):
        raise UserError(f"--streaming uses greedy search; --method {method} is not available with it")
    lm = load_pretrained(model, device=device)
    method = method or lm.task.default_method(lm.model)
    if method not in lm.task.decode_methods:
        raise UserError(f"unknown --method '{method}' (choose from {', '.join(lm.task.decode_methods)})")
    if streaming and (cuts is not None or not hasattr(lm.task, "decode_streaming")):
        raise UserError("--streaming decodes audio files with an ASR model; use it without --cuts")
    if cuts is not None:
        _decode_cuts(lm, cuts, out_dir or Path("."), method, beam, max_duration, name, device)
        return
    from auden_kit.data.audio import load_audio
    from auden_kit.data.features import fbank_from_waveform

    failed = 0
    for f in files:
        try:
            wav = load_audio(f, lm.features.sample_rate)
        except UserError as e:
            typer.echo(f"error: {e}", err=True)
            failed += 1
            continue
        feats = fbank_from_waveform(wav, lm.features).unsqueeze(0).to(device)
        batch = {"inputs": feats, "input_lens": torch.tensor([feats.shape[1]], device=device),
                 "supervisions": {"cut_id": [str(f)]}}
        if feats.shape[1] < 9:
            typer.echo(f"error: audio file '{f}' is too short to decode ({wav.numel()} samples)", err=True)
            failed += 1
            continue
        if streaming:
            res = lm.task.decode_streaming(lm.model, feats, lm.tokenizer, piece_frames=max(1, piece_ms // 10),
                                           cut_id=str(f))
        else:
            res = lm.task.decode(lm.model, batch, lm.tokenizer, method=method, beam=beam)[0]
        if output == "json":
            typer.echo(json.dumps({"file": str(f), "text": res.text, "tokens": res.tokens, "times": res.times}))
        else:
            typer.echo(f"{f}\t{res.text}")
    if failed:
        raise typer.Exit(1)


def _decode_cuts(lm, cuts_path: Path, out_dir: Path, method: str, beam: int, max_duration: float, name: str,
                 device: str):
    import time

    from tqdm import tqdm

    from auden_kit.data.datamodule import DataConfig, make_loader
    from auden_kit.metrics.wer import write_results

    cfg = DataConfig(max_duration=max_duration, num_workers=0, spec_augment=False, fbank=lm.features,
                     min_cut_duration=0.0, max_cut_duration=1e9)
    from lhotse import CutSet

    first = next(iter(CutSet.from_file(cuts_path)), None) if cuts_path.is_file() else None
    cfg.on_the_fly_feats = first is not None and not first.has_features
    loader, _ = make_loader(cfg, [str(cuts_path)], train=False)
    results = []
    audio_s = 0.0
    t0 = time.time()
    for batch in tqdm(loader, desc="decoding", unit="batch"):
        batch["inputs"] = batch["inputs"].to(device)
        batch["input_lens"] = batch["input_lens"].to(device)
        audio_s += sum(c.duration for c in batch["cuts"])
        results += lm.task.decode(lm.model, batch, lm.tokenizer, method=method, beam=beam)
    elapsed = time.time() - t0
    name = name or f"{cuts_path.name.split('.')[0]}-{method}" + (f"-beam{beam}" if "beam" in method else "")
    triples = [(r.cut_id, r.ref or "", r.text) for r in results]
    stats = write_results(out_dir, name, triples)
    typer.echo(f"{name}: {stats.summary()}")
    typer.echo(f"RTF {elapsed / max(audio_s, 1e-9):.4f} ({audio_s:.1f} s of audio in {elapsed:.1f} s); "
               f"results in {out_dir}")
