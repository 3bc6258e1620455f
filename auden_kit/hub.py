"""Model folders and the task/encoder registries.

A trained model is a self-describing folder (format version 2)::

    config.yaml           {format_version: 2, task, model: {...}, features: {...},
                           tokenizers: [names], label_maps: [names], data_stats: {...}}
    model.safetensors     the weights (frozen teachers are never in it)
    tokenizers/<name>/    tokenizer.yaml + its model file, one folder per named tokenizer
    labels/<name>.txt     one label per line; line i is class i

Version-1 folders (``tokenizer/`` beside ``config.yaml``, no ``format_version``) still load:
their tokenizer is named ``text``. ``load_pretrained(dir)`` rebuilds the model from the folder
and nothing else.

Registries map names to ``module:attr`` import paths, so a plugin costs nothing until used.
Built-in entries are below; installed packages add theirs through the entry-point groups
``auden_kit.tasks`` and ``auden_kit.encoders``::

    [project.entry-points."auden_kit.tasks"]
    mytask = "my_package.task:MyTask"
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
from pathlib import Path

import torch
import yaml

from auden_kit.config import from_dict, to_dict
from auden_kit.errors import UserError
from auden_kit.io import atomic_path, atomic_write_text

log = logging.getLogger(__name__)

FORMAT_VERSION = 2

TASKS: dict[str, str] = {
    "asr": "auden_kit.tasks.asr:AsrTask",
    "classify": "auden_kit.tasks.classify:ClassificationTask",
    "voice": "auden_kit.tasks.voice:VoiceTask",
    "st": "auden_kit.tasks.st:StTask",
    "ssl": "auden_kit.tasks.ssl:SslTask",
    "distill": "auden_kit.tasks.distill:DistillTask",
    "tagspeech": "auden_kit.tasks.tagspeech:TagSpeechTask",
}
ENCODERS: dict[str, str] = {
    "zipformer": "auden_kit.encoders.zipformer:ZipformerEncoder",
}
_GROUPS = {"tasks": TASKS, "encoders": ENCODERS}
_discovered: set[str] = set()


def _discover(kind: str) -> dict[str, str]:
    """Registry ``kind`` with entries from installed packages' entry points added (once)."""
    reg = _GROUPS[kind]
    if kind not in _discovered:
        _discovered.add(kind)
        from importlib.metadata import entry_points

        for ep in entry_points(group=f"auden_kit.{kind}"):
            reg.setdefault(ep.name, ep.value)
    return reg


def _load(path: str, what: str):
    module, _, attr = path.partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise UserError(f"{what} is registered as '{path}' but cannot be imported: {e}") from None


def get_task(name: str):
    """A fresh task object for ``name`` (built-in or from an installed plugin)."""
    reg = _discover("tasks")
    if name not in reg:
        raise UserError(f"unknown task '{name}' (registered: {', '.join(sorted(reg))}; plugins register "
                        "through the 'auden_kit.tasks' entry-point group)")
    return _load(reg[name], f"task '{name}'")()


def register_task(name: str, import_path: str) -> None:
    """Register a task in this process, e.g. ``register_task("st", "my_pkg.st:SpeechTranslationTask")``.
    To make it visible to ``auden-kit`` commands, declare an entry point instead (see above)."""
    _discover("tasks")[name] = import_path


def get_encoder_class(name: str):
    reg = _discover("encoders")
    if name not in reg:
        raise UserError(f"unknown encoder '{name}' (config key 'model.encoder_type'; registered: "
                        f"{', '.join(sorted(reg))})")
    return _load(reg[name], f"encoder '{name}'")


def register_encoder(name: str, import_path: str) -> None:
    _discover("encoders")[name] = import_path


def encoder_config(name: str, value, prefix: str = "model.encoder."):
    """The typed config of encoder ``name`` from a dict (checked key by key) or a config object."""
    cls = get_encoder_class(name).config_cls
    if isinstance(value, cls):
        return value
    if dataclasses.is_dataclass(value):
        value = to_dict(value)
    return from_dict(cls, value or {}, prefix=prefix)


def build_encoder(name: str, cfg):
    """Encoder module ``name`` built from its config (dict or object). Every encoder provides
    ``forward(x (N, T, F), x_lens) -> (out (N, T', C), out_lens)``, ``output_dim`` and
    ``frame_shift`` (seconds per output frame)."""
    return get_encoder_class(name)(encoder_config(name, cfg))


# ---------------------------------------------------------------------------- model folders


@dataclasses.dataclass
class LoadedModel:
    task: object  # set up with the model config and assets
    model: torch.nn.Module
    model_cfg: object
    assets: object
    features: object
    directory: Path

    @property
    def tokenizer(self):
        """The ``text`` tokenizer (None when the model has none)."""
        return self.assets.tokenizers.get("text")


def save_assets(out: Path, assets) -> dict:
    """Write tokenizers and label maps under ``out``; return their names for config.yaml."""
    for name, tok in assets.tokenizers.items():
        tok.save(out / "tokenizers" / name)
    for name, labels in assets.label_maps.items():
        bad = [lab for lab in labels if "\n" in lab]
        if bad:
            raise UserError(f"label map '{name}': label {bad[0]!r} contains a line break")
        atomic_write_text(out / "labels" / f"{name}.txt", "".join(f"{lab}\n" for lab in labels))
    out = {"tokenizers": sorted(assets.tokenizers), "label_maps": sorted(assets.label_maps)}
    if assets.data_stats:
        out["data_stats"] = dict(assets.data_stats)
    return out


def load_assets(d: Path, cfg: dict):
    from auden_kit.tasks.base import ModelAssets
    from auden_kit.tokenizers import load_tokenizer

    assets = ModelAssets()
    if cfg.get("format_version", 1) < 2:
        if (d / "tokenizer").is_dir():
            assets.tokenizers["text"] = load_tokenizer(d / "tokenizer")
        return assets
    assets.data_stats = dict(cfg.get("data_stats") or {})
    for name in cfg.get("tokenizers", []):
        assets.tokenizers[name] = load_tokenizer(d / "tokenizers" / name)
    for name in cfg.get("label_maps", []):
        f = d / "labels" / f"{name}.txt"
        if not f.is_file():
            raise UserError(f"model folder '{d}' lacks its label map '{f}'")
        assets.label_maps[name] = f.read_text().splitlines()
    return assets


def save_pretrained(out_dir: str | Path, task_name: str, model_cfg, model: torch.nn.Module, assets,
                    features) -> Path:
    """Write a version-2 model folder (weights last-but-one, config.yaml last: a folder with a
    config.yaml is complete)."""
    from safetensors.torch import save_file

    from auden_kit.tasks.base import ModelAssets

    if assets is None or not isinstance(assets, ModelAssets):  # a bare tokenizer (older callers)
        assets = ModelAssets(tokenizers={"text": assets} if assets is not None else {})
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = save_assets(out, assets)
    cfg = {"format_version": FORMAT_VERSION, "task": task_name, "model": to_dict(model_cfg),
           "features": to_dict(features), **names}
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(out / "model.safetensors") as tmp:
        save_file(state, str(tmp))
    atomic_write_text(out / "config.yaml", yaml.safe_dump(cfg, sort_keys=False))
    return out


def _model_folder_hint(d: Path) -> str:
    """What the user probably meant, when ``d`` is not a model folder: the folder of a file inside
    one, a model folder inside it or beside the file (a training or recipe folder), or how to make
    one from training checkpoints."""
    if not d.exists():
        return f": '{d}' does not exist"
    if d.is_file():
        if d.parent.joinpath("model.safetensors").is_file():
            return f"; give the folder: --model {d.parent}"
        d = d.parent
    found = sorted(p.parent for p in d.glob("*/model.safetensors")) + \
        sorted(p.parent for p in d.glob("*/*/model.safetensors"))
    if found:
        return "; model folders here: " + ", ".join(str(p) for p in found[:4])
    if any(d.glob("epoch-*.pt")) or any(d.glob("checkpoint-*.pt")):
        return f"; '{d}' holds training checkpoints: make a model folder with `auden-kit average --exp-dir {d} --out {d}/model-avg`"
    return "; make one with `auden-kit average`"


def read_model_config(model_dir: str | Path) -> dict:
    d = Path(model_dir)
    if not (d / "config.yaml").is_file() or not (d / "model.safetensors").is_file():
        raise UserError(f"'{d}' is not a model folder (needs config.yaml and model.safetensors){_model_folder_hint(d)}")
    try:
        cfg = yaml.safe_load((d / "config.yaml").read_text()) or {}
    except yaml.YAMLError as e:
        raise UserError(f"'{d / 'config.yaml'}' is not valid YAML: {e}") from None
    if cfg.get("format_version", 1) > FORMAT_VERSION:
        raise UserError(f"'{d}' is a version-{cfg['format_version']} model folder; this auden-kit reads up to "
                        f"version {FORMAT_VERSION} (upgrade auden-kit)")
    return cfg


def load_state(path: Path) -> dict:
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as e:  # noqa: BLE001 - a torn or foreign file
        raise UserError(f"cannot read weights '{path}' ({e}); re-create the model folder") from None


def load_pretrained(model_dir: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    from auden_kit.data.features import FbankSettings

    d = Path(model_dir)
    cfg = read_model_config(d)
    task = get_task(cfg.get("task", ""))
    assets = load_assets(d, cfg)
    model_cfg = task.inference_config(from_dict(task.model_config_cls, cfg.get("model", {}), prefix="model."))
    task.setup(model_cfg, assets)
    model = task.build_model()
    state = load_state(d / "model.safetensors")
    if task.training_only:
        state = {k: v for k, v in state.items() if not k.startswith(task.training_only)}
    own = model.state_dict()
    bad = [k for k in state if k in own and own[k].shape != state[k].shape]
    missing, unexpected = model.load_state_dict({k: v for k, v in state.items() if k not in bad}, strict=False)
    if missing or unexpected or bad:
        raise UserError(f"'{d}/model.safetensors' does not fit its config.yaml (missing {missing[:3]}, "
                        f"unexpected {unexpected[:3]}, wrong shape {bad[:3]})")
    model.to(device).eval()
    features = from_dict(FbankSettings, cfg.get("features", {}), prefix="features.")
    return LoadedModel(task, model, model_cfg, assets, features, d)
