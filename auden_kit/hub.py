"""Model folders and registries.

A trained model is a self-describing folder::

    config.yaml         {task, model: {...}, features: {...}}
    model.safetensors   the weights
    tokenizer/          tokenizer.yaml + its model file

``load_pretrained(dir)`` rebuilds the model from that folder and nothing else.
Tasks and encoders are found by name through registries of import paths, so a
plugin costs nothing until it is used.
"""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path

import torch
import yaml

from auden_kit.config import from_dict, to_dict
from auden_kit.errors import UserError
from auden_kit.io import atomic_path, atomic_write_text

TASKS: dict[str, str] = {
    "asr": "auden_kit.tasks.asr:AsrTask",
}
ENCODERS: dict[str, str] = {
    "zipformer": "auden_kit.encoders.zipformer:ZipformerEncoder",
}


def _load(path: str):
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


def get_task(name: str):
    if name not in TASKS:
        raise UserError(f"unknown task '{name}' (registered: {', '.join(sorted(TASKS))})")
    return _load(TASKS[name])()


def register_task(name: str, import_path: str) -> None:
    """Register a task plugin, e.g. ``register_task("st", "my_pkg.st:SpeechTranslationTask")``."""
    TASKS[name] = import_path


@dataclasses.dataclass
class LoadedModel:
    task: object
    model: torch.nn.Module
    model_cfg: object
    tokenizer: object
    features: object
    directory: Path


def save_pretrained(out_dir: str | Path, task_name: str, model_cfg, model: torch.nn.Module, tokenizer,
                    features) -> Path:
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = {"task": task_name, "model": to_dict(model_cfg), "features": to_dict(features)}
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(out / "model.safetensors") as tmp:
        save_file(state, str(tmp))
    if tokenizer is not None:
        tokenizer.save(out / "tokenizer")
    atomic_write_text(out / "config.yaml", yaml.safe_dump(cfg, sort_keys=False))
    return out


def load_pretrained(model_dir: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    from safetensors.torch import load_file

    from auden_kit.data.features import FbankSettings
    from auden_kit.tokenizers import load_tokenizer

    d = Path(model_dir)
    if not (d / "config.yaml").is_file() or not (d / "model.safetensors").is_file():
        raise UserError(f"'{d}' is not a model folder (needs config.yaml and model.safetensors; "
                        "make one with `auden-kit average`)")
    cfg = yaml.safe_load((d / "config.yaml").read_text())
    task = get_task(cfg.get("task", ""))
    tokenizer = load_tokenizer(d / "tokenizer") if (d / "tokenizer").is_dir() else None
    model_cfg = from_dict(task.model_config_cls, cfg.get("model", {}), prefix="model.")
    model = task.build_model(model_cfg, tokenizer)
    state = load_file(str(d / "model.safetensors"))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise UserError(f"'{d}/model.safetensors' does not fit its config.yaml "
                        f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    model.to(device).eval()
    features = from_dict(FbankSettings, cfg.get("features", {}), prefix="features.")
    return LoadedModel(task, model, model_cfg, tokenizer, features, d)
