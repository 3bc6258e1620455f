"""``auden-kit import-icefall``: an icefall Zipformer transducer checkpoint -> our model folder."""

from __future__ import annotations

from pathlib import Path

import typer

from auden_kit.cli.common import setup_logging

EPILOG = ("Example: auden-kit import-icefall --checkpoint exp/pretrained.pt --preset zipformer-m "
          "--tokenizer data/lang_bpe_500 --out exp/icefall-zipformer-m")


def import_icefall(
    checkpoint: Path = typer.Option(..., help="icefall pretrained.pt or epoch-N.pt."),
    tokenizer: Path = typer.Option(..., help="Folder with tokenizer.yaml (e.g. `auden-kit data tokenizer` on "
                                             "icefall's bpe.model: copy bpe.model there with a tokenizer.yaml)."),
    out: Path = typer.Option(..., help="Model folder to write."),
    preset: str = typer.Option("zipformer-m", help="zipformer-s, zipformer-m or zipformer-l (as trained)."),
    causal: bool = typer.Option(False, help="The checkpoint is a streaming (causal) model."),
    use_ctc: bool = typer.Option(False, help="The checkpoint has a CTC head (icefall --use-ctc 1)."),
):
    """Convert an icefall Zipformer2 transducer checkpoint into a model folder."""
    from auden_kit.data.features import FbankSettings
    from auden_kit.encoders.zipformer import ZipformerConfig
    from auden_kit.encoders.zipformer.icefall import apply_icefall_state, load_icefall_checkpoint
    from auden_kit.hub import get_task, save_pretrained
    from auden_kit.tasks.asr import AsrModelConfig
    from auden_kit.tokenizers import load_tokenizer

    setup_logging()
    tok = load_tokenizer(tokenizer)
    cfg = AsrModelConfig(encoder=ZipformerConfig(preset=preset, causal=causal), use_ctc=use_ctc)
    model = get_task("asr").build_model(cfg, tok)
    apply_icefall_state(model, load_icefall_checkpoint(checkpoint))
    save_pretrained(out, "asr", cfg, model, tok, FbankSettings())
    typer.echo(f"model folder: {out}")
