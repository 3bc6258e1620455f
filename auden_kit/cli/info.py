"""``auden-kit info``: what this installation can do."""

from __future__ import annotations

import json
import os
import platform

import typer


def collect_info() -> dict:
    import torch

    import auden_kit

    out: dict = {
        "auden_kit": auden_kit.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "cpu_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
    }
    try:
        import torchaudio

        out["torchaudio"] = torchaudio.__version__
        from torchaudio.functional import rnnt_loss  # noqa: F401

        out["torchaudio_ops"] = True
    except Exception as e:  # noqa: BLE001 - report, do not fail
        out["torchaudio_ops"] = f"unavailable ({e.__class__.__name__})"
    try:
        import lhotse

        out["lhotse"] = lhotse.__version__
    except Exception:
        out["lhotse"] = None
    try:
        import k2  # noqa: F401

        out["k2"] = getattr(k2, "__version__", "present")
    except Exception:
        out["k2"] = None
    try:  # optional: Hugging Face teachers, text towers and LLM decoders from local folders
        import transformers

        out["transformers"] = transformers.__version__
    except Exception:
        out["transformers"] = None
    from auden_kit.runtime import tune_allocator

    out["cpu_allocator"] = "glibc, freed memory kept for reuse" if tune_allocator() else "system default"
    out["rnnt_loss_path"] = "pure PyTorch pruned RNN-T (auden_kit.losses)"
    try:
        from auden_kit.data.corpora.espeak import count_voices, get_synth

        out["espeak_sample_rate"] = get_synth().sample_rate
        out["espeak_voices"] = count_voices()
    except Exception as e:  # noqa: BLE001
        out["espeak_voices"] = f"unavailable ({e})"
    return out


def info(as_json: bool = typer.Option(False, "--json", help="Print one JSON object.")):
    """Print versions, device, CPU threads, k2 / transformers availability and espeak-ng voices."""
    data = collect_info()
    if as_json:
        typer.echo(json.dumps(data))
        return
    for k, v in data.items():
        if k == "k2":
            v = v or "not installed (optional; the pure-PyTorch path is used)"
        if k == "transformers":
            v = v or "not installed (optional: only Hugging Face teachers, text towers, LLM decoders need it)"
        typer.echo(f"{k:>18}: {v}")
