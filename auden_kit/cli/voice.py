"""``auden-kit embed | score | verify``: voice-model embeddings, trial scoring, two-file verification."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from auden_kit.cli.common import setup_logging, stdin_audio
from auden_kit.errors import UserError

EMBED_EPILOG = ("Example: auden-kit embed --model exp/voice-avg --out exp/emb a.wav b.flac   |   "
                "auden-kit embed --model exp/voice-avg --cuts data/fbank/cuts_test.jsonl.gz --out exp/emb")
SCORE_EPILOG = ("Example: auden-kit score --model exp/voice-avg --trials data/trials.txt --embeddings exp/emb "
                "--as-norm exp/emb-train --save-threshold")
VERIFY_EPILOG = "Example: auden-kit verify --model exp/voice-avg enrol.wav test.wav"
THRESHOLD_FILE = "verification.yaml"


def _save_embeddings(out: Path, embs: dict):
    import numpy as np
    from safetensors.numpy import save_file

    from auden_kit.io import atomic_path, atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    keys = sorted(embs)
    mat = np.stack([np.asarray(embs[k], dtype=np.float32) for k in keys]) if keys else np.zeros((0, 0), np.float32)
    with atomic_path(out / "embeddings.safetensors") as tmp:
        save_file({"embeddings": mat}, str(tmp))
    atomic_write_text(out / "ids.txt", "".join(f"{k}\n" for k in keys))
    # Kaldi's text form (ivector.scp-like): <id>  [ v1 v2 ... ]
    atomic_write_text(out / "embeddings.txt", "".join(
        f"{k}  [ {' '.join(f'{v:.6g}' for v in embs[k])} ]\n" for k in keys))


def load_embeddings(folder: Path) -> dict:
    from safetensors.numpy import load_file

    folder = Path(folder)
    f, ids = folder / "embeddings.safetensors", folder / "ids.txt"
    if not f.is_file() or not ids.is_file():
        raise UserError(f"'{folder}' holds no embeddings (make them with `auden-kit embed --out {folder}`)")
    mat = load_file(str(f))["embeddings"]
    keys = ids.read_text().splitlines()
    return dict(zip(keys, mat))


def embed(
    files: List[Path] = typer.Argument(None, help="Audio files (any rate, channels, length); - reads the audio "
                                                "piped to stdin."),
    model: Path = typer.Option(..., "--model", "-m", help="Voice model folder."),
    cuts: Optional[Path] = typer.Option(None, help="Embed the cuts of this manifest (keys: utterance ids, i.e. "
                                                   "the supervision id of a one-supervision cut, else the cut id)."),
    out: Path = typer.Option(..., help="Folder for embeddings.safetensors, ids.txt and embeddings.txt."),
    device: str = typer.Option("cpu", help="cpu or cuda."),
    per_speaker: bool = typer.Option(False, help="With --cuts: one embedding per speaker (the mean of its "
                                                 "length-normalised utterance embeddings), keyed by speaker: an "
                                                 "AS-norm cohort or enrolment models."),
):
    """Utterance embeddings of a voice model, keyed by file path or cut id (or by speaker)."""
    from auden_kit.api import load

    setup_logging()
    if not files and cuts is None:
        raise UserError("give audio files to embed, or --cuts MANIFEST")
    if per_speaker and cuts is None:
        raise UserError("--per-speaker needs --cuts (the manifest names each cut's speaker)")
    m = load(model, device=device)
    m.require("voice", verb="auden-kit embed")
    keys: dict = {}
    if cuts is not None:
        from auden_kit.data.datamodule import load_cuts
        from auden_kit.metrics.verification import utterance_id

        inputs = load_cuts([str(cuts)])
        keys = {c.id: utterance_id(c) for c in inputs}
    embs, failed = {}, 0
    with stdin_audio(files if cuts is None else []) as (paths, shown):
        if cuts is None:
            inputs = [str(f) for f in paths]
        for item_id, res in m.iter_results(inputs, progress=sys.stderr.isatty()):
            if isinstance(res, UserError):
                typer.echo(f"error: {shown(res)}", err=True)
                failed += 1
                continue
            embs[keys.get(item_id, shown(item_id))] = res.embedding
    if per_speaker:
        embs = _speaker_means(embs, {keys[c.id]: c.supervisions[0].speaker if c.supervisions else None
                                     for c in inputs})
    _save_embeddings(out, embs)
    typer.echo(f"{len(embs)} embedding(s) in {out}")
    if failed:
        typer.echo(f"{failed} input(s) failed", err=True)
        raise typer.Exit(1)


def _speaker_means(embs: dict, speakers: dict) -> dict:
    import numpy as np

    from auden_kit.metrics.verification import normalize_embeddings

    groups: dict[str, list] = {}
    for k, e in embs.items():
        if not speakers.get(k):
            raise UserError(f"cut '{k}' has no speaker; --per-speaker needs one on every cut")
        groups.setdefault(speakers[k], []).append(e)
    return {s: normalize_embeddings(np.stack(v)).mean(0) for s, v in groups.items()}


def _mean(embs: dict):
    import numpy as np

    return np.mean(np.stack(list(embs.values())), axis=0)


def score(
    trials: Path = typer.Option(..., help="Trial list: '1 enrol test' (VoxCeleb) or 'enrol test target' (Kaldi)."),
    embeddings: Path = typer.Option(..., help="Folder from `auden-kit embed` covering every trial's files."),
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="The voice model (where --save-threshold "
                                                                     "writes)."),
    as_norm: Optional[Path] = typer.Option(None, "--as-norm", help="Cohort embeddings (e.g. of training "
                                                                   "speakers) for adaptive score normalisation."),
    top_n: int = typer.Option(300, help="AS-norm: cohort scores kept per side."),
    save_threshold: bool = typer.Option(False, help="Store the EER threshold in the model folder for `verify`."),
    out: Optional[Path] = typer.Option(None, help="Also write the figures as JSON to this file."),
):
    """EER and minDCF (p_target 0.01 and 0.05) of a trial list, cosine scoring with mean subtraction."""
    import numpy as np

    from auden_kit.metrics.verification import as_norm as asn
    from auden_kit.metrics.verification import cosine_scores, eer, min_dcf, read_trials

    setup_logging()
    t = read_trials(trials)
    embs = load_embeddings(embeddings)
    missing = sorted({x for a, b, _ in t for x in (a, b) if x not in embs})
    if missing:
        raise UserError(f"{len(missing)} file(s) of '{trials}' have no embedding in '{embeddings}', e.g. "
                        f"'{missing[0]}' (embed them, keyed as the trial list names them)")
    cohort = load_embeddings(as_norm) if as_norm else None
    mean = _mean(cohort) if cohort else _mean(embs)
    a = np.stack([embs[x] for x, _, _ in t])
    b = np.stack([embs[y] for _, y, _ in t])
    labels = np.array([lab for _, _, lab in t])
    scores = cosine_scores(a, b, mean)
    name = "cosine"
    if cohort:
        scores = asn(scores, a, b, np.stack(list(cohort.values())), top_n=top_n, mean=mean)
        name = f"cosine + AS-norm (top {top_n} of {len(cohort)})"
    e, thr = eer(scores, labels)
    d1, _ = min_dcf(scores, labels, 0.01)
    d5, _ = min_dcf(scores, labels, 0.05)
    typer.echo(f"{name}: EER {100 * e:.2f} %  minDCF(0.01) {d1:.4f}  minDCF(0.05) {d5:.4f}  "
               f"({int(labels.sum())} target / {int((1 - labels).sum())} non-target trials)")
    if out is not None:
        import json

        from auden_kit.io import atomic_write_text

        atomic_write_text(out, json.dumps({"scoring": name, "eer": 100 * e, "min_dcf_0.01": d1, "min_dcf_0.05": d5,
                                           "threshold": thr, "targets": int(labels.sum()),
                                           "nontargets": int((1 - labels).sum())}, indent=1) + "\n")
    if save_threshold:
        if model is None:
            raise UserError("--save-threshold needs --model (the folder to store it in)")
        import yaml

        from auden_kit.io import atomic_write_text

        if as_norm:
            raise UserError("--save-threshold stores a cosine threshold; run it without --as-norm")
        atomic_write_text(model / THRESHOLD_FILE, yaml.safe_dump(
            {"threshold": float(thr), "eer": float(e), "trials": str(trials), "mean": [float(v) for v in mean]}))
        typer.echo(f"threshold {thr:.4f} (EER point) stored in {model / THRESHOLD_FILE}")


def verify(
    enrol: Path = typer.Argument(..., help="Enrolment audio (- reads the audio piped to stdin)."),
    test: Path = typer.Argument(..., help="Test audio (- reads the audio piped to stdin)."),
    model: Path = typer.Option(..., "--model", "-m", help="Voice model folder."),
    threshold: Optional[float] = typer.Option(None, help="Decision threshold (default: the one `auden-kit score "
                                                         "--save-threshold` stored)."),
):
    """Same speaker or not: cosine score of two files and the decision at the threshold."""
    import numpy as np
    import yaml

    from auden_kit.api import load
    from auden_kit.metrics.verification import cosine_scores

    setup_logging()
    m = load(model)
    m.require("voice", verb="auden-kit verify")
    stored = yaml.safe_load((model / THRESHOLD_FILE).read_text()) if (model / THRESHOLD_FILE).is_file() else {}
    if threshold is None:
        if "threshold" not in stored:
            raise UserError(f"no threshold: pass --threshold, or calibrate one with `auden-kit score --model {model} "
                            "--trials T --embeddings E --save-threshold`")
        threshold = float(stored["threshold"])
    with stdin_audio([enrol, test]) as (paths, shown):
        try:
            a, b = m.embed([str(p) for p in paths])
        except UserError as e:
            raise UserError(shown(e)) from None
    mean = np.array(stored["mean"]) if "mean" in stored else None
    s = float(cosine_scores(np.array([a.embedding]), np.array([b.embedding]), mean)[0])
    same = s >= threshold
    typer.echo(f"score {s:.4f} threshold {threshold:.4f}: {'same speaker' if same else 'different speakers'}")
