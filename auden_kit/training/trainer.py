"""The task-agnostic trainer: one process or DDP under torchrun, AMP, exact resume,
checkpoints, running model average, validation, TensorBoard and a progress bar.

    auden-kit train --config conf/train.yaml trainer.num_epochs=30
    torchrun --nproc_per_node 4 -m auden_kit.cli.main train --config conf/train.yaml

Everything task-specific (model, loss, decoding, metrics) comes from the task plugin.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import random
import time
from pathlib import Path

import numpy as np
import torch

from auden_kit.config import dump_yaml, from_dict, to_dict
from auden_kit.data.datamodule import DataConfig, make_loader
from auden_kit.errors import UserError
from auden_kit.hub import get_task, save_pretrained
from auden_kit.io import atomic_write_text
from auden_kit.nn.scaling import set_batch_count
from auden_kit.training import checkpoint as ckpt
from auden_kit.training.optim import OptimConfig, build_optimizer

log = logging.getLogger(__name__)


@dataclasses.dataclass
class TrainerConfig:
    num_epochs: int = 30
    max_steps: int = 0  # stop after this many steps (0: no limit)
    seed: int = 42
    device: str = "auto"  # auto, cpu, cuda
    dtype: str = "float32"  # float32, bfloat16 (autocast), float16 (autocast + grad scaler, GPU)
    log_interval: int = 20
    valid_interval: int = 0  # steps between validations (0: at each epoch end only)
    valid_max_batches: int = 0  # 0: the whole validation set
    save_every_n: int = 0  # steps between checkpoints (0: epoch checkpoints only)
    keep_last_k: int = 5  # step checkpoints to keep
    average_period: int = 10  # steps between running-average updates
    schedule_speedup: float = 1.0  # advance regularizer schedules this much faster (short runs)
    num_threads: int = 0  # torch CPU threads per process (0: leave as is)
    progress: bool = True

    def validate(self):
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise UserError(f"config key 'trainer.dtype' must be float32, bfloat16 or float16, got '{self.dtype}'")
        if self.device not in ("auto", "cpu", "cuda"):
            raise UserError(f"config key 'trainer.device' must be auto, cpu or cuda, got '{self.device}'")


@dataclasses.dataclass
class TrainConfig:
    """The whole truth about a run; the CLI only overrides keys."""

    task: str = "asr"
    exp_dir: str = "exp"
    tokenizer: str = ""  # folder with tokenizer.yaml
    model: dict = dataclasses.field(default_factory=dict)  # validated by the task's model config
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    trainer: TrainerConfig = dataclasses.field(default_factory=TrainerConfig)


def resolve(cfg: TrainConfig):
    """Validate the task-specific model section; returns (task, model config)."""
    task = get_task(cfg.task)
    model_cfg = from_dict(task.model_config_cls, cfg.model, prefix="model.")
    return task, model_cfg


def _module_state(model: torch.nn.Module) -> dict:
    """Python-side state that modules change while training (Whiten's adaptive probability)."""
    from auden_kit.nn.scaling import Whiten

    return {n: m.prob for n, m in model.named_modules() if isinstance(m, Whiten)}


def _set_module_state(model: torch.nn.Module, state: dict) -> None:
    mods = dict(model.named_modules())
    for n, prob in state.items():
        if n in mods:
            mods[n].prob = prob


def _dist_info() -> tuple[int, int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return world, rank, local


class Trainer:
    def __init__(self, cfg: TrainConfig, resume: bool = True):
        self.cfg = cfg
        self.task, self.model_cfg = resolve(cfg)
        self.world, self.rank, local = _dist_info()
        tc = cfg.trainer
        if tc.num_threads > 0:
            torch.set_num_threads(tc.num_threads)
        use_cuda = tc.device == "cuda" or (tc.device == "auto" and torch.cuda.is_available())
        if tc.device == "cuda" and not torch.cuda.is_available():
            raise UserError("config key 'trainer.device' is cuda but no GPU is visible (use trainer.device=cpu)")
        self.device = torch.device(f"cuda:{local}" if use_cuda else "cpu")
        if self.world > 1 and not torch.distributed.is_initialized():
            torch.distributed.init_process_group(backend="nccl" if use_cuda else "gloo")
        if use_cuda:
            torch.cuda.set_device(self.device)
        self.exp_dir = Path(cfg.exp_dir)
        self.exp_dir.mkdir(parents=True, exist_ok=True)
        self._seed(tc.seed + self.rank)

        from auden_kit.tokenizers import load_tokenizer

        self.tokenizer = load_tokenizer(cfg.tokenizer) if self.task.needs_tokenizer else None
        self.model = self.task.build_model(self.model_cfg, self.tokenizer).to(self.device)
        if self.world > 1:  # same initial weights on every rank
            for p in self.model.state_dict().values():
                torch.distributed.broadcast(p, src=0)
        self.optimizer, self.scheduler = build_optimizer(self.model, cfg.optim)
        self.scaler = torch.amp.GradScaler("cuda", enabled=(tc.dtype == "float16" and use_cuda))
        if tc.dtype == "float16" and not use_cuda:
            raise UserError("trainer.dtype=float16 needs a GPU; use bfloat16 on CPU")
        self.amp_dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(tc.dtype)
        self.model_avg = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
        self.step = 0
        self.epoch = 1
        self._pending_rng = None
        self.train_loader, self.train_sampler = make_loader(cfg.data, cfg.data.train_cuts, train=True,
                                                            world_size=self.world, rank=self.rank)
        self.valid_loader = None
        if cfg.data.valid_cuts:
            self.valid_loader, _ = make_loader(cfg.data, cfg.data.valid_cuts, train=False)
        self.writer = None
        if self.rank == 0:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.exp_dir / "tensorboard"))
            atomic_write_text(self.exp_dir / "config.yaml", dump_yaml(cfg))
            n = sum(p.numel() for p in self.model.parameters())
            log.info("task %s, %s parameters, device %s, world size %d", cfg.task, f"{n:,}", self.device, self.world)
            log.info("TensorBoard: tensorboard --logdir %s", self.exp_dir / "tensorboard")
        if resume:
            last = ckpt.latest_checkpoint(self.exp_dir)
            if last is not None:
                self._restore(ckpt.load_checkpoint(last))
                if self.rank == 0:
                    log.info("resumed from %s (epoch %d, step %d)", last, self.epoch, self.step)

    # ------------------------------------------------------------------ state
    @staticmethod
    def _seed(seed: int):
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)

    def _state(self) -> dict:
        return {
            "step": self.step, "epoch": self.epoch, "model": self.model.state_dict(),
            "model_avg": self.model_avg, "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
            "sampler": self.train_sampler.state_dict(), "config": to_dict(self.cfg),
            "model_config": to_dict(self.model_cfg), "task": self.cfg.task,
            "rng": {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()},
            "module_state": _module_state(self.model),
        }

    def _restore(self, st: dict):
        self.model.load_state_dict(st["model"])
        self.model_avg = st["model_avg"]
        self.optimizer.load_state_dict(st["optimizer"])
        self.scheduler.load_state_dict(st["scheduler"])
        self.scaler.load_state_dict(st["scaler"])
        self.train_sampler.load_state_dict(st["sampler"])
        self.step, self.epoch = st["step"], st["epoch"]
        _set_module_state(self.model, st.get("module_state", {}))
        # applied once the data iterator exists: creating it draws from torch's RNG
        self._pending_rng = st["rng"]

    def save(self, name: str):
        if self.rank == 0:
            ckpt.save_checkpoint(self.exp_dir / name, self._state())

    # ------------------------------------------------------------------ loop
    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def _to_device(self, batch: dict) -> dict:
        batch["inputs"] = batch["inputs"].to(self.device, non_blocking=True)
        batch["input_lens"] = batch["input_lens"].to(self.device)
        return batch

    def _log(self, stats: dict, frames: int, grad_norm: float, elapsed: float, input_frames: int = 0,
             prefix: str = "train"):
        if self.writer is None:
            return
        for k, v in stats.items():
            self.writer.add_scalar(f"{prefix}/{k}", v / max(1, frames), self.step)
        self.writer.add_scalar("train/lr", self.scheduler.get_last_lr()[0], self.step)
        self.writer.add_scalar("train/grad_norm", grad_norm, self.step)
        self.writer.add_scalar("train/grad_scale", self.scaler.get_scale() if self.scaler.is_enabled() else 1.0,
                               self.step)
        if elapsed > 0:  # input (fbank) frames per second, as in icefall's logs
            self.writer.add_scalar("train/frames_per_s", input_frames / elapsed, self.step)

    def train(self) -> None:
        tc = self.cfg.trainer
        from tqdm import tqdm

        done = False
        while self.epoch <= tc.num_epochs and not done:
            self.train_sampler.set_epoch(self.epoch)
            self.scheduler.step_epoch(self.epoch - 1)
            self.model.train()
            bar = tqdm(total=self.train_sampler.estimated_batches(), initial=self.train_sampler.consumed,
                       desc=f"epoch {self.epoch}", unit="batch", dynamic_ncols=True,
                       disable=not (tc.progress and self.rank == 0))
            acc: dict = {}
            acc_frames = acc_input = 0
            t0 = time.time()
            batches = iter(self.train_loader)
            if self._pending_rng is not None:
                rng, self._pending_rng = self._pending_rng, None
                random.setstate(rng["python"])
                np.random.set_state(rng["numpy"])
                torch.set_rng_state(rng["torch"])
            for batch in batches:
                self.train_sampler.mark_consumed()
                self.step += 1
                set_batch_count(self.model, self.step * tc.schedule_speedup)
                batch = self._to_device(batch)
                with self._autocast():
                    loss, stats, frames = self.task.compute_loss(self.model, batch, self.tokenizer, self.step)
                if not torch.isfinite(loss):
                    cuts = ", ".join(batch["supervisions"]["cut_id"][:5])
                    raise UserError(f"non-finite loss at step {self.step} (cuts {cuts}); lower optim.base_lr "
                                    "or check these cuts with `auden-kit data validate`")
                self.optimizer.zero_grad(set_to_none=True)
                self.scaler.scale(loss / max(1, frames)).backward()
                self.scaler.unscale_(self.optimizer)
                if self.world > 1:
                    self._all_reduce_grads()
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.scheduler.step_batch(self.step)
                if self.step % tc.average_period == 0:
                    ckpt.update_running_average(self.model_avg, self.model, self.step, tc.average_period)
                for k, v in stats.items():
                    acc[k] = acc.get(k, 0.0) + v
                acc_frames += frames
                acc_input += int(batch["input_lens"].sum())
                bar.update(1)
                bar.set_postfix(loss=f"{stats['loss'] / max(1, frames):.3f}", lr=f"{self.scheduler.get_last_lr()[0]:.2e}")
                if self.step % tc.log_interval == 0:
                    self._log(acc, acc_frames, getattr(self.optimizer, "last_grad_norm", 0.0), time.time() - t0,
                              acc_input)
                    acc, acc_frames, acc_input, t0 = {}, 0, 0, time.time()
                if tc.valid_interval and self.step % tc.valid_interval == 0:
                    self.validate()
                if tc.save_every_n and self.step % tc.save_every_n == 0:
                    self.save(f"checkpoint-{self.step}.pt")
                    if self.rank == 0:
                        ckpt.remove_old(ckpt.step_checkpoints(self.exp_dir), tc.keep_last_k)
                if tc.max_steps and self.step >= tc.max_steps:
                    done = True
                    break
            if not done:  # the total was an estimate: end the bar at what the epoch really held
                bar.total = bar.n
                bar.refresh()
            bar.close()
            if done and tc.max_steps:
                self.save(f"checkpoint-{self.step}.pt")
                break
            self.validate()
            self.epoch += 1
            self.save(f"epoch-{self.epoch - 1}.pt")
        if self.writer is not None:
            self.writer.flush()
        if self.world > 1:
            torch.distributed.barrier()

    def _all_reduce_grads(self):
        """Average gradients over ranks (tasks call model methods, not one forward, so we
        synchronize explicitly instead of through DistributedDataParallel's hooks)."""
        for p in self.model.parameters():
            if not p.requires_grad:
                continue
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            torch.distributed.all_reduce(p.grad)
            p.grad /= self.world

    @torch.no_grad()
    def validate(self) -> dict:
        if self.valid_loader is None or self.rank != 0:
            return {}
        self.model.eval()
        tot: dict = {}
        frames = 0
        results = []
        for i, batch in enumerate(self.valid_loader):
            if self.cfg.trainer.valid_max_batches and i >= self.cfg.trainer.valid_max_batches:
                break
            batch = self._to_device(batch)
            with self._autocast():
                _, stats, f = self.task.compute_loss(self.model, batch, self.tokenizer, self.step)
                results += self.task.decode(self.model, batch, self.tokenizer)
            for k, v in stats.items():
                tot[k] = tot.get(k, 0.0) + v
            frames += f
        metrics = {f"valid/{k}": v / max(1, frames) for k, v in tot.items()}
        metrics.update({f"valid/{k}": v for k, v in self.task.evaluate(results).items()})
        for k, v in metrics.items():
            self.writer.add_scalar(k, v, self.step)
        log.info("step %d validation: %s", self.step, ", ".join(f"{k[6:]} {v:.4f}" for k, v in metrics.items()))
        self.model.train()
        return metrics


def export_model_folder(exp_dir: str | Path, out_dir: str | Path, epoch: int = 0, avg: int = 1,
                        use_averaged_model: bool = True, step_checkpoints: bool = False) -> Path:
    """Average checkpoints into a model folder.

    With ``use_averaged_model`` (icefall's default): the running average between the
    checkpoint ``avg`` before the end and the end (epoch ``epoch``, or the latest).
    Otherwise: the plain mean of the last ``avg`` checkpoints' weights.
    """
    exp_dir = Path(exp_dir)
    paths = ckpt.step_checkpoints(exp_dir) if step_checkpoints else ckpt.epoch_checkpoints(exp_dir)
    if not paths:
        kind = "checkpoint-*.pt" if step_checkpoints else "epoch-*.pt"
        raise UserError(f"no {kind} files in '{exp_dir}' (did training run?)")
    if epoch > 0:
        names = [p.name for p in paths]
        want = f"epoch-{epoch}.pt"
        if want not in names:
            raise UserError(f"'{exp_dir / want}' does not exist (have: {', '.join(names)})")
        end_i = names.index(want)
    else:
        end_i = len(paths) - 1
    end = ckpt.load_checkpoint(paths[end_i])
    if use_averaged_model:
        start_i = end_i - avg
        if start_i >= 0:
            state = ckpt.average_between(ckpt.load_checkpoint(paths[start_i]), end)
        else:  # average since the start of training
            state = end["model_avg"]
    else:
        chosen = paths[max(0, end_i - avg + 1): end_i + 1]
        state = ckpt.average_state_dicts([ckpt.load_checkpoint(p)["model"] for p in chosen])
    cfg = from_dict(TrainConfig, end["config"])
    task, model_cfg = resolve(cfg)
    from auden_kit.tokenizers import load_tokenizer

    tok = load_tokenizer(cfg.tokenizer) if task.needs_tokenizer else None
    model = task.build_model(model_cfg, tok)
    model.load_state_dict(state)
    return save_pretrained(out_dir, cfg.task, model_cfg, model, tok, cfg.data.fbank)
