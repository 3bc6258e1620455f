"""``auden-kit export``: a model folder -> TorchScript or ONNX files for deployment."""

from __future__ import annotations

from pathlib import Path

import typer

from auden_kit.cli.common import setup_logging
from auden_kit.errors import UserError

EPILOG = ("Example: auden-kit export --model exp/model-avg --out exp/jit   |   "
          "auden-kit export --model exp/model-avg --out exp/onnx --format onnx")


def export(
    model: Path = typer.Option(..., "--model", "-m", help="Model folder (from `auden-kit average`)."),
    out: Path = typer.Option(..., help="Folder for encoder/decoder/joiner(/ctc) files, tokenizer and config."),
    format: str = typer.Option("torchscript", "--format", help="torchscript (.pt) or onnx (.onnx, needs onnx)."),
):
    """Export encoder, decoder, joiner and CTC head as separate TorchScript or ONNX files."""
    from auden_kit.export import export_onnx, export_torchscript
    from auden_kit.hub import load_pretrained

    setup_logging()
    if format not in ("torchscript", "onnx"):
        raise UserError(f"--format must be torchscript or onnx, got '{format}'")
    lm = load_pretrained(model)
    files = export_torchscript(lm, out) if format == "torchscript" else export_onnx(lm, out)
    for f in files:
        typer.echo(str(f))
