"""Checkpoints (atomic, keep-last-k, resume) and icefall-style model averaging."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch

from auden_kit.errors import UserError
from auden_kit.io import atomic_path

log = logging.getLogger(__name__)

_STEP = re.compile(r"checkpoint-(\d+)\.pt$")
_EPOCH = re.compile(r"epoch-(\d+)\.pt$")


def save_checkpoint(path: Path, state: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint '{path}' does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - a torn or foreign file
        raise UserError(f"checkpoint '{path}' cannot be read ({e}); delete it to resume from an earlier one") from None


def step_checkpoints(exp_dir: Path) -> list[Path]:
    return sorted(exp_dir.glob("checkpoint-*.pt"), key=lambda p: int(_STEP.search(p.name).group(1)))


def epoch_checkpoints(exp_dir: Path) -> list[Path]:
    return sorted(exp_dir.glob("epoch-*.pt"), key=lambda p: int(_EPOCH.search(p.name).group(1)))


def latest_checkpoint(exp_dir: Path) -> Path | None:
    """The checkpoint with the most training steps (step or epoch checkpoints)."""
    best, best_step = None, -1
    for p in list(step_checkpoints(exp_dir)) + list(epoch_checkpoints(exp_dir)):
        try:
            step = int(torch.load(p, map_location="cpu", weights_only=False)["step"])
        except Exception:  # noqa: BLE001 - skip unreadable files
            log.warning("skipping unreadable checkpoint %s", p)
            continue
        if step > best_step:
            best, best_step = p, step
    return best


def remove_old(paths: list[Path], keep: int) -> None:
    if keep <= 0:
        return
    for p in paths[:-keep]:
        p.unlink(missing_ok=True)


@torch.no_grad()
def update_running_average(avg: dict, model: torch.nn.Module, step: int, period: int) -> None:
    """avg <- avg * (1 - period/step) + model * period/step: the mean of the model over all
    steps so far, sampled every ``period`` steps (icefall's ``model_avg``). Tensors that have not
    changed (frozen buffers such as BEST-RQ's codebooks, frozen parameters) are copied, so they
    stay bit-exact through averaging (here and in the two functions below)."""
    w = period / step
    for k, v in model.state_dict().items():
        if v.dtype.is_floating_point and not torch.equal(avg[k], v.detach().cpu()):
            avg[k].mul_(1 - w).add_(v.detach().cpu(), alpha=w)
        else:
            avg[k] = v.detach().cpu().clone()


def average_state_dicts(states: list[dict]) -> dict:
    out = {}
    for k in states[0]:
        if states[0][k].dtype.is_floating_point and not all(torch.equal(s[k], states[0][k]) for s in states[1:]):
            out[k] = sum(s[k].double() for s in states) / len(states)
            out[k] = out[k].to(states[0][k].dtype)
        else:
            out[k] = states[-1][k]
    return out


def average_between(start: dict, end: dict) -> dict:
    """Average of the model over the steps between two checkpoints, from their running
    averages: (avg_end * n_end - avg_start * n_start) / (n_end - n_start)."""
    n0, n1 = start["step"], end["step"]
    if n1 <= n0:
        raise UserError(f"cannot average from step {n0} to step {n1}: the end must be later")
    a0, a1 = start["model_avg"], end["model_avg"]
    out = {}
    for k in a1:
        if a1[k].dtype.is_floating_point and not torch.equal(a1[k], a0[k]):
            out[k] = ((a1[k].double() * n1 - a0[k].double() * n0) / (n1 - n0)).to(a1[k].dtype)
        else:
            out[k] = a1[k]
    return out
