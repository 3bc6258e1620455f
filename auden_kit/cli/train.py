"""``auden-kit train``: validated config, resume by default."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from auden_kit.cli.common import setup_logging

EPILOG = ("Example: auden-kit train --config conf/train.yaml trainer.num_epochs=10 optim.base_lr=0.04   "
          "(multi-GPU: torchrun --nproc_per_node 4 -m auden_kit.cli.main train --config conf/train.yaml)")


def train(
    overrides: List[str] = typer.Argument(None, help="key=value overrides, e.g. trainer.num_epochs=10."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML config (the whole truth about a run)."),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="Continue from the latest checkpoint in exp_dir."),
    print_config: bool = typer.Option(False, "--print-config", help="Print the validated config and exit."),
):
    """Train a model; checkpoints, TensorBoard logs and the config go to exp_dir."""
    from auden_kit.config import load_config
    from auden_kit.training.trainer import TrainConfig, Trainer, resolve

    setup_logging()
    if config is None and not overrides:
        from auden_kit.errors import UserError

        raise UserError("give a config: auden-kit train --config conf/train.yaml (see egs/*/conf/)")
    cfg = load_config(TrainConfig, config, overrides or [])
    _, model_cfg = resolve(cfg)  # validate the task's model section before anything heavy
    if print_config:
        from auden_kit.config import to_dict

        d = to_dict(cfg)
        d["model"] = to_dict(model_cfg)
        import yaml

        typer.echo(yaml.safe_dump(d, sort_keys=False))
        return
    Trainer(cfg, resume=resume).train()
