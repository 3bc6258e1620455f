"""``auden-kit probe``: how well a frozen encoder's representations predict a label (kNN, linear,
MLP probes; clip or frame level; last layer, SUPERB's weighted sum of layers, or every layer)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List

import typer

from auden_kit.cli.common import setup_logging
from auden_kit.errors import UserError

EPILOG = ("Example: auden-kit probe --model exp/ssl/model-avg --train-cuts data/fbank/kw_train.jsonl.gz "
          "--test-cuts data/fbank/kw_test.jsonl.gz --label custom.keyword --label speaker --layers weighted   |   "
          "add --random-init for the untrained baseline of the same architecture   |   a label on its own split: "
          "--label custom.keyword --train-cuts kw_tr --test-cuts kw_te --label speaker --train-cuts spk_tr --test-cuts spk_te"
          "   |   frame-level phones (SUPERB): --label alignment.phone --train-cuts dev.jsonl.gz "
          "--test-cuts test.jsonl.gz --frame-stride 1")


def probe(
    model: Path = typer.Option(..., help="Model folder whose encoder is probed (any task)."),
    train_cuts: List[str] = typer.Option(..., help="Cuts the probes are fitted on (features or audio); once for "
                                                   "every label, or once per --label (paired in order)."),
    test_cuts: List[str] = typer.Option(..., help="Cuts they are scored on (once, or once per --label)."),
    label: List[str] = typer.Option(["speaker"], help="Label(s): a supervision field (speaker, gender, text, "
                                                      "language), custom.<key>, or alignment.<kind> "
                                                      "(always per frame; alignment.phone: SUPERB's "
                                                      "phone probe); repeat for several."),
    methods: str = typer.Option("knn,linear", help="Comma-separated: knn, linear, mlp."),
    level: str = typer.Option("clip", help="clip (mean-pooled cut) or frame (every --frame-stride-th frame)."),
    layers: str = typer.Option("last", help="last, weighted (SUPERB learned sum of layers) or all."),
    random_init: bool = typer.Option(False, help="Probe a freshly initialised encoder of the same architecture "
                                                 "(the baseline)."),
    k: int = typer.Option(10, help="kNN neighbours."),
    temperature: float = typer.Option(0.07, help="kNN vote temperature."),
    epochs: int = typer.Option(100, help="Linear/MLP probe epochs."),
    frame_stride: int = typer.Option(4, help="Frame level: keep every n-th encoder frame."),
    seed: int = typer.Option(0, help="Seed of the probes (and of --random-init)."),
    threads: int = typer.Option(2, help="CPU threads."),
    out: Path = typer.Option(None, help="Also write the rows as JSON here."),
):
    """Probe a frozen encoder: accuracy of kNN / linear / MLP probes for each label."""
    import torch

    from auden_kit.io import atomic_write_text
    from auden_kit.probe import extract, load_encoder, run_probes

    setup_logging()
    torch.set_num_threads(threads)
    if level not in ("clip", "frame"):
        raise UserError(f"--level must be clip or frame, got '{level}'")
    for opt, given in (("--train-cuts", train_cuts), ("--test-cuts", test_cuts)):
        if len(given) not in (1, len(label)):
            raise UserError(f"{opt} is given {len(given)} times for {len(label)} --label: give it once (the same "
                            "cuts for every label) or once per label")
        for p in given:
            if "://" not in p and not Path(p).is_file():
                raise UserError(f"manifest '{p}' does not exist")
    ms = [m.strip() for m in methods.split(",") if m.strip()]
    enc, lm = load_encoder(str(model), random_init=random_init, seed=seed)
    rows = []
    for i, lab in enumerate(label):
        tr = extract(enc, lm, train_cuts[min(i, len(train_cuts) - 1)], lab, level=level, frame_stride=frame_stride)
        te = extract(enc, lm, test_cuts[min(i, len(test_cuts) - 1)], lab, level=level, frame_stride=frame_stride)
        for r in run_probes(tr, te, ms, layers=layers, k=k, temperature=temperature, epochs=epochs, seed=seed):
            rows.append({"label": lab, "level": "frame" if lab.startswith("alignment.") else level,
                         "encoder": "random-init" if random_init else "trained", **r})
    typer.echo(f"{'label':<16} {'method':<7} {'layer':<9} {'accuracy':>8}  classes  train/test")
    for r in rows:
        typer.echo(f"{r['label']:<16} {r['method']:<7} {r['layer']:<9} {r['accuracy']:8.2f}  {r['classes']:7d}  "
                   f"{r['train']}/{r['test']}" + (f"  weights {r['layer_weights']}" if "layer_weights" in r else ""))
    if out:
        atomic_write_text(out, json.dumps({"model": str(model), "rows": rows}, indent=1) + "\n")
        typer.echo(f"wrote {out}")
