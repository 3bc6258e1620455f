"""ScaledAdam and the Eden schedule (Zipformer paper, section 3.6-3.7).

ScaledAdam makes the update of each parameter tensor proportional to that
tensor's RMS (so relative change per step is what the learning rate sets), and
also learns the tensor's overall scale explicitly. Scalars get plain Adam with a
smaller rate. Gradients are clipped by a running median of recent gradient norms.

Eden::

    lr = base_lr * ((step^2 + B^2) / B^2) ^ -0.25 * ((epoch^2 + E^2) / E^2) ^ -0.25 * warmup(step)

with ``warmup`` rising linearly from 0.5 to 1 over ``warmup_batches``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections import deque
from typing import Iterable

import torch
from torch import Tensor

log = logging.getLogger(__name__)


class ScaledAdam(torch.optim.Optimizer):
    def __init__(self, params: Iterable, lr: float = 0.045, clipping_scale: float | None = 2.0,
                 betas: tuple[float, float] = (0.9, 0.98), scalar_lr_scale: float = 0.1, eps: float = 1e-8,
                 param_min_rms: float = 1e-5, param_max_rms: float = 3.0, scalar_max: float = 10.0,
                 size_update_period: int = 4, clipping_update_period: int = 100):
        defaults = dict(lr=lr, clipping_scale=clipping_scale, betas=betas, scalar_lr_scale=scalar_lr_scale, eps=eps,
                        param_min_rms=param_min_rms, param_max_rms=param_max_rms, scalar_max=scalar_max,
                        size_update_period=size_update_period, clipping_update_period=clipping_update_period)
        super().__init__(params, defaults)
        self.last_grad_norm = 0.0
        self.last_clip_scale = 1.0
        self._norm_history: deque = deque(maxlen=clipping_update_period)
        self._threshold: float | None = None

    def __setstate__(self, state):
        super().__setstate__(state)

    def state_dict(self):
        sd = super().state_dict()
        sd["clipping"] = {"history": list(self._norm_history), "threshold": self._threshold}
        return sd

    def load_state_dict(self, state_dict):
        clip = state_dict.pop("clipping", None) if isinstance(state_dict, dict) else None
        super().load_state_dict(state_dict)
        if clip:
            self._norm_history = deque(clip["history"], maxlen=self.defaults["clipping_update_period"])
            self._threshold = clip["threshold"]

    def _clip_scale(self) -> float:
        """Scale <= 1 for the gradients: norm measured relative to each tensor's RMS."""
        grads, weights = [], []
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grads.append(p.grad)
                if p.numel() == 1:
                    weights.append(p.new_ones(()))
                else:
                    rms = self.state[p].get("param_rms")
                    weights.append(rms if rms is not None else (p.detach() ** 2).mean().sqrt().clamp(min=1e-5))
        if not grads:
            return 1.0
        # one host sync for the whole model instead of one per tensor
        norms = torch.stack(torch._foreach_norm(grads)).float() * torch.stack(weights).float()
        norm = float(norms.pow(2).sum().sqrt())
        self.last_grad_norm = norm
        scale_cfg = self.param_groups[0]["clipping_scale"]
        if scale_cfg is None or not math.isfinite(norm):
            return 1.0 if scale_cfg is None else 0.0
        self._norm_history.append(norm)
        period = self.defaults["clipping_update_period"]
        if self._threshold is None or len(self._norm_history) % period == 0 or len(self._norm_history) < 10:
            hist = sorted(self._norm_history)
            self._threshold = scale_cfg * hist[len(hist) // 2]
        if norm > self._threshold > 0:
            return self._threshold / norm
        return 1.0

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        clip = self._clip_scale()
        self.last_clip_scale = clip
        if clip == 0.0:
            log.warning("ScaledAdam: non-finite gradient norm; skipping this step")
            return loss
        for group in self.param_groups:
            lr = group["lr"]
            # tensors that have taken the same number of steps are updated together (foreach ops:
            # one kernel launch per operation for the whole group instead of one per tensor)
            buckets: dict[int, list] = {}
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("ScaledAdam does not support sparse gradients")
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                    if p.numel() > 1:
                        state["param_rms"] = (p ** 2).mean().sqrt().clamp(min=group["param_min_rms"])
                        state["scale_grads"] = torch.zeros(group["size_update_period"], dtype=p.dtype,
                                                           device=p.device)
                        state["scale_exp_avg_sq"] = torch.zeros((), dtype=p.dtype, device=p.device)
                state["step"] += 1
                if p.numel() == 1:
                    grad = p.grad * clip if clip != 1.0 else p.grad
                    self._scalar_step(group, p, grad, state, lr * group["scalar_lr_scale"])
                    continue
                buckets.setdefault(state["step"], []).append(p)
            for step, params in buckets.items():
                self._tensor_steps(group, params, step, clip, lr)
        return loss

    def _tensor_steps(self, group, params: list, step: int, clip: float, lr: float):
        beta1, beta2 = group["betas"]
        period = group["size_update_period"]
        states = [self.state[p] for p in params]
        grads = [p.grad for p in params]
        if clip != 1.0:
            grads = torch._foreach_mul(grads, clip)
        # --- learn each tensor's scale: d loss / d log(scale) = sum(p * grad)
        for st, prod in zip(states, torch._foreach_mul(params, grads)):
            st["scale_grads"][(step - 1) % period] = prod.sum()
        if step % period == 0:
            for p, st in zip(params, states):
                self._size_step(group, p, st, lr)
        # --- direction: Adam, scaled by each tensor's RMS
        exp_avg = [st["exp_avg"] for st in states]
        exp_avg_sq = [st["exp_avg_sq"] for st in states]
        torch._foreach_mul_(exp_avg, beta1)
        torch._foreach_add_(exp_avg, grads, alpha=1 - beta1)
        torch._foreach_mul_(exp_avg_sq, beta2)
        torch._foreach_addcmul_(exp_avg_sq, grads, grads, value=1 - beta2)
        denom = torch._foreach_div(exp_avg_sq, 1 - beta2 ** step)
        torch._foreach_sqrt_(denom)
        torch._foreach_add_(denom, group["eps"])
        update = torch._foreach_div(exp_avg, denom)
        # exp_avg is not bias-corrected for beta1, as in the paper's formulation (momentum warms up)
        torch._foreach_mul_(update, [st["param_rms"] for st in states])
        torch._foreach_add_(params, update, alpha=-lr)
        if step % period == 0:
            for p, st, n in zip(params, states, torch._foreach_norm(params)):
                st["param_rms"] = (n / math.sqrt(p.numel())).clamp(min=group["param_min_rms"])

    def _scalar_step(self, group, p: Tensor, grad: Tensor, state: dict, lr: float):
        beta1, beta2 = group["betas"]
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        bias2 = 1 - beta2 ** state["step"]
        denom = (exp_avg_sq / bias2).sqrt() + group["eps"]
        p.add_(exp_avg / denom, alpha=-lr)
        p.clamp_(min=-group["scalar_max"], max=group["scalar_max"])

    def _size_step(self, group, p: Tensor, state: dict, lr: float):
        """Change the tensor's overall scale (multiplicatively) with Adam on log-scale."""
        beta1, beta2 = group["betas"]
        period = group["size_update_period"]
        scale_grad = state["scale_grads"].sum()
        b2 = beta2 ** period
        state["scale_exp_avg_sq"].mul_(b2).add_((1 - b2) * scale_grad ** 2)
        n_updates = state["step"] // period
        bias2 = 1 - b2 ** n_updates
        denom = (state["scale_exp_avg_sq"] / bias2).sqrt() + group["eps"]
        scale_step = -group["scalar_lr_scale"] * lr * (scale_grad / denom) * period * (1 - beta1)
        rms = state["param_rms"]
        # do not let the RMS leave [param_min_rms, param_max_rms]
        if rms <= group["param_min_rms"]:
            scale_step = scale_step.clamp(min=0)
        elif rms >= group["param_max_rms"]:
            scale_step = scale_step.clamp(max=0)
        p.mul_(1 + scale_step)


@dataclasses.dataclass
class OptimConfig:
    """Optimizer and schedule. ``optimizer``: scaled_adam (default) or adamw."""

    optimizer: str = "scaled_adam"
    base_lr: float = 0.045
    lr_batches: float = 7500.0
    lr_epochs: float = 3.5
    warmup_batches: float = 500.0
    warmup_start: float = 0.5
    weight_decay: float = 0.0  # adamw only
    clipping_scale: float = 2.0
    # learning-rate factors by parameter-name glob, first match wins, e.g. {"encoder.*": 0.5} to move
    # a pretrained encoder more slowly than the new heads while fine-tuning (layer-wise rates)
    lr_scale: dict = dataclasses.field(default_factory=dict)

    def validate(self):
        from auden_kit.errors import UserError

        if self.optimizer not in ("scaled_adam", "adamw"):
            raise UserError(f"config key 'optim.optimizer' must be scaled_adam or adamw, got '{self.optimizer}'")
        for key in ("base_lr", "lr_batches", "lr_epochs"):
            if getattr(self, key) <= 0:
                raise UserError(f"config key 'optim.{key}' must be positive, got {getattr(self, key)}")
        if self.warmup_batches < 0 or not 0 < self.warmup_start <= 1:
            raise UserError("config keys 'optim.warmup_batches' (>= 0) / 'optim.warmup_start' (in (0, 1]): got "
                            f"{self.warmup_batches} / {self.warmup_start}")
        if self.clipping_scale <= 0:
            raise UserError(f"config key 'optim.clipping_scale' must be positive, got {self.clipping_scale}")
        for pat, f in self.lr_scale.items():
            if not isinstance(f, (int, float)) or isinstance(f, bool) or f <= 0:
                raise UserError(f"config key 'optim.lr_scale.{pat}' must be a positive number, got {f!r} "
                                "(to keep parameters fixed use 'trainer.freeze')")


class Eden:
    """Learning-rate schedule depending on both batch and (fractional) epoch."""

    def __init__(self, optimizer: torch.optim.Optimizer, lr_batches: float, lr_epochs: float,
                 warmup_batches: float = 500.0, warmup_start: float = 0.5):
        self.optimizer = optimizer
        self.lr_batches, self.lr_epochs = lr_batches, lr_epochs
        self.warmup_batches, self.warmup_start = warmup_batches, warmup_start
        self.base_lrs = [g.get("initial_lr", g["lr"]) for g in optimizer.param_groups]
        for g, lr in zip(optimizer.param_groups, self.base_lrs):
            g["initial_lr"] = lr
        self.batch = 0
        self.epoch = 0.0
        self._apply()

    def factor(self, batch: float, epoch: float) -> float:
        f = ((batch ** 2 + self.lr_batches ** 2) / self.lr_batches ** 2) ** -0.25
        f *= ((epoch ** 2 + self.lr_epochs ** 2) / self.lr_epochs ** 2) ** -0.25
        if batch < self.warmup_batches:
            f *= self.warmup_start + (1.0 - self.warmup_start) * batch / self.warmup_batches
        return f

    def _apply(self):
        f = self.factor(self.batch, self.epoch)
        for g, lr in zip(self.optimizer.param_groups, self.base_lrs):
            g["lr"] = lr * f

    def step_batch(self, batch: int):
        self.batch = batch
        self._apply()

    def step_epoch(self, epoch: float):
        self.epoch = epoch
        self._apply()

    def get_last_lr(self) -> list[float]:
        return [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self) -> dict:
        return {"batch": self.batch, "epoch": self.epoch, "base_lrs": self.base_lrs}

    def load_state_dict(self, sd: dict):
        self.batch, self.epoch, self.base_lrs = sd["batch"], sd["epoch"], sd["base_lrs"]
        self._apply()


def build_optimizer(model: torch.nn.Module, cfg: OptimConfig, include_frozen: bool = False):
    """Optimizer + Eden schedule. Parameters with ``requires_grad=False`` are left out unless
    ``include_frozen`` (they are unfrozen later; until then they have no gradient and no update)."""
    from auden_kit.errors import UserError

    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad or include_frozen]
    if not named:
        raise UserError("every parameter is frozen (config key 'trainer.freeze'): nothing to train")
    params = _lr_groups(named, cfg) if cfg.lr_scale else [p for _, p in named]
    if cfg.optimizer == "scaled_adam":
        opt = ScaledAdam(params, lr=cfg.base_lr, clipping_scale=cfg.clipping_scale)
    else:
        opt = torch.optim.AdamW(params, lr=cfg.base_lr, weight_decay=cfg.weight_decay)
    return opt, Eden(opt, cfg.lr_batches, cfg.lr_epochs, cfg.warmup_batches, cfg.warmup_start)


def _lr_groups(named: list, cfg: OptimConfig) -> list[dict]:
    """Parameter groups for ``optim.lr_scale``: each parameter in the group of the first glob that
    matches its name; the rest at the base rate."""
    import fnmatch

    from auden_kit.errors import UserError

    pats = list(cfg.lr_scale)
    members: dict[int, list] = {i: [] for i in range(len(pats) + 1)}
    for n, p in named:
        i = next((i for i, pat in enumerate(pats) if fnmatch.fnmatchcase(n, pat)), len(pats))
        members[i].append(p)
    unused = [pats[i] for i in range(len(pats)) if not members[i]]
    if unused:
        raise UserError(f"config key 'optim.lr_scale': {unused} match no trained parameter (names look like "
                        f"'{named[0][0]}')")
    scales = [float(cfg.lr_scale[p]) for p in pats] + [1.0]
    return [{"params": members[i], "lr": cfg.base_lr * scales[i]} for i in members if members[i]]
