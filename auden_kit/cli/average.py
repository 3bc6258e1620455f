"""``auden-kit average``: checkpoints -> a self-describing model folder."""

from __future__ import annotations

from pathlib import Path

import typer

from auden_kit.cli.common import setup_logging

EPILOG = ("Example: auden-kit average --exp-dir exp --epoch 30 --avg 9 --out exp/model-avg   |   "
          "auden-kit average --exp-dir exp --best --avg 3 --out exp/model-best")


def average(
    exp_dir: Path = typer.Option(Path("exp"), help="Training folder with epoch-N.pt / checkpoint-N.pt."),
    out: Path = typer.Option(..., help="Model folder to write."),
    epoch: int = typer.Option(0, help="Last epoch to include (0: the latest)."),
    avg: int = typer.Option(1, help="How many epochs (or step checkpoints) to average over."),
    use_averaged_model: bool = typer.Option(True, help="Use the running average (icefall's default) instead "
                                                       "of the plain mean of the checkpoints."),
    iters: bool = typer.Option(False, "--iters", help="Average step checkpoints (checkpoint-N.pt) instead of epochs."),
    best: bool = typer.Option(False, "--best", help="Average the --avg epochs with the best validation metric of "
                                                    "the task (WER for ASR, accuracy for classifiers, ...)."),
):
    """Average checkpoints into a model folder (config.yaml, model.safetensors, tokenizers, label maps)."""
    from auden_kit.training.trainer import export_model_folder

    setup_logging()
    d = export_model_folder(exp_dir, out, epoch=epoch, avg=avg, use_averaged_model=use_averaged_model,
                            step_checkpoints=iters, by_metric=best)
    typer.echo(f"model folder: {d}")
