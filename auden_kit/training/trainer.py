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
    accum_grad: int = 1  # batches per optimizer step (gradient accumulation)
    log_interval: int = 20
    valid_interval: int = 0  # steps between validations (0: at each epoch end only)
    valid_max_batches: int = 0  # 0: the whole validation set
    # epochs between validations that decode (WER, BLEU, cpWER...: inference over the validation
    # batches); the others compute the losses only. The last epoch always decodes. 0: never decode
    valid_decode_every: int = 1
    save_every_n: int = 0  # steps between checkpoints (0: epoch checkpoints only)
    keep_last_k: int = 5  # step checkpoints to keep
    average_period: int = 10  # steps between running-average updates
    # advance regularizer schedules this much faster (short runs); 0: from the run's length (the
    # schedules are tuned for ~30k steps: speed-up = 30000 / expected steps, at least 1)
    schedule_speedup: float = 1.0
    # torch CPU threads per process (0: leave as is). A running training follows a number written to
    # EXP_DIR/num_threads (checked every log_interval steps): e.g. give it the cores another job freed
    num_threads: int = 0
    progress: bool = True
    # start from pretrained weights: a model folder or a checkpoint (.pt), loaded once at the start
    init_from: str = ""
    # which weights to take: {prefix in the source: prefix in this model}; empty: all that fit
    init_prefix_map: dict = dataclasses.field(default_factory=dict)
    # parameter-name globs kept fixed (not optimized), e.g. ["encoder.*"]
    freeze: list[str] = dataclasses.field(default_factory=list)
    freeze_steps: int = 0  # unfreeze after this many steps (0: frozen for the whole run)
    record_cuts: bool = False  # write the ids of the cuts each rank trained on, per epoch (audits sharding)

    def validate(self):
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise UserError(f"config key 'trainer.dtype' must be float32, bfloat16 or float16, got '{self.dtype}'")
        if self.device not in ("auto", "cpu", "cuda"):
            raise UserError(f"config key 'trainer.device' must be auto, cpu or cuda, got '{self.device}'")
        for key in ("num_epochs", "accum_grad", "log_interval", "average_period"):
            if getattr(self, key) < 1:
                raise UserError(f"config key 'trainer.{key}' must be at least 1, got {getattr(self, key)}")
        for key in ("max_steps", "valid_interval", "valid_max_batches", "valid_decode_every", "save_every_n",
                    "keep_last_k", "num_threads", "freeze_steps"):
            if getattr(self, key) < 0:
                raise UserError(f"config key 'trainer.{key}' must be >= 0, got {getattr(self, key)}")
        if self.schedule_speedup < 0:
            raise UserError(f"config key 'trainer.schedule_speedup' must be positive (0: automatic), got "
                            f"{self.schedule_speedup}")
        if self.init_prefix_map and not self.init_from:
            raise UserError("config key 'trainer.init_prefix_map' is set but 'trainer.init_from' is empty")


@dataclasses.dataclass
class TrainConfig:
    """The whole truth about a run; the CLI only overrides keys."""

    task: str = "asr"
    exp_dir: str = "exp"
    tokenizer: str = ""  # folder with tokenizer.yaml: the model's "text" tokenizer
    tokenizers: dict = dataclasses.field(default_factory=dict)  # more named tokenizers {name: folder}
    model: dict = dataclasses.field(default_factory=dict)  # validated by the task's model config
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    trainer: TrainerConfig = dataclasses.field(default_factory=TrainerConfig)

    def all_tokenizers(self) -> dict[str, str]:
        out = {"text": self.tokenizer} if self.tokenizer else {}
        out.update(self.tokenizers)
        return out

    def validate(self):
        if self.tokenizer and "text" in self.tokenizers:
            raise UserError("config keys 'tokenizer' and 'tokenizers.text' both name the text tokenizer; keep one")


def resolve(cfg: TrainConfig):
    """Validate the task-specific model section; returns (task, model config)."""
    task = get_task(cfg.task)
    model_cfg = from_dict(task.model_config_cls, cfg.model, prefix="model.")
    # an encoder reads what data.fbank gives (e.g. 84 rows with pitch) unless its width is set
    # (a model config's ``encoder_rows(fbank)`` may keep some rows for itself, e.g. pitch for prosody)
    enc, fb = getattr(model_cfg, "encoder", None), cfg.data.fbank
    if isinstance(getattr(enc, "feature_dim", None), int):
        rows = model_cfg.encoder_rows(fb) if hasattr(model_cfg, "encoder_rows") else fb.num_features
        given = (cfg.model or {}).get("encoder")
        if not (isinstance(given, dict) and "feature_dim" in given):
            enc.feature_dim = rows
        elif enc.feature_dim != rows:
            raise UserError(f"config key 'model.encoder.feature_dim' is {enc.feature_dim} but data.fbank gives "
                            f"{fb.describe()}, of which the encoder reads {rows}; set model.encoder.feature_dim={rows} "
                            "or change data.fbank")
    return task, model_cfg


def training_state(model: torch.nn.Module) -> dict:
    """Python-side state that modules change while training and that is not in their state_dict
    (e.g. Whiten's adaptive probability): any module with ``training_state()`` contributes."""
    return {n: m.training_state() for n, m in model.named_modules() if hasattr(m, "training_state")}


def load_training_state(model: torch.nn.Module, state: dict) -> None:
    mods = dict(model.named_modules())
    for n, st in state.items():
        if n in mods and hasattr(mods[n], "load_training_state"):
            mods[n].load_training_state(st)


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
        if tc.dtype == "float16" and not use_cuda:
            raise UserError("config key 'trainer.dtype' is float16, which needs a GPU; use bfloat16 on CPU")
        if use_cuda and local >= torch.cuda.device_count():
            # (seen on a 1-GPU machine under torchrun --nproc_per_node 2: "invalid device ordinal")
            raise UserError(f"this is process {local} on this machine but only {torch.cuda.device_count()} GPU(s) "
                            "are visible: start at most one process per GPU (torchrun --nproc_per_node), or train "
                            "on the CPU with trainer.device=cpu")
        self.device = torch.device(f"cuda:{local}" if use_cuda else "cpu")
        if self.world > 1 and not torch.distributed.is_initialized():
            torch.distributed.init_process_group(backend="nccl" if use_cuda else "gloo")
        if use_cuda:
            torch.cuda.set_device(self.device)
        self.exp_dir = Path(cfg.exp_dir)
        self.exp_dir.mkdir(parents=True, exist_ok=True)
        self._seed(tc.seed + self.rank)

        last = ckpt.latest_checkpoint(self.exp_dir) if resume else None
        self.task.setup(self.model_cfg, self._assets(cfg, resuming=last is not None))
        self.model = self.task.build_model().to(self.device)
        if tc.init_from and last is None:
            report = init_from(self.model, tc.init_from, tc.init_prefix_map)
            if self.rank == 0:
                log.info("initialised from %s: %s", tc.init_from, report)
        if self.world > 1:  # same initial weights on every rank
            for p in self.model.state_dict().values():
                torch.distributed.broadcast(p, src=0)
        self.frozen = self._apply_freeze(frozen=True)
        self.optimizer, self.scheduler = build_optimizer(self.model, cfg.optim, include_frozen=bool(tc.freeze_steps))
        self.scaler = torch.amp.GradScaler("cuda", enabled=(tc.dtype == "float16" and use_cuda))
        self.amp_dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(tc.dtype)
        self.model_avg = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
        self.step = 0
        self.epoch = 1
        self.history: list[dict] = []  # validation metrics per epoch
        self._pending_rng = None
        self._derive_settings(cfg)
        self.train_loader, self.train_sampler = make_loader(cfg.data, cfg.data.train_cuts, train=True,
                                                            world_size=self.world, rank=self.rank, task=self.task)
        self.valid_loader = None
        if cfg.data.valid_cuts:
            self.valid_loader, _ = make_loader(cfg.data, cfg.data.valid_cuts, train=False, task=self.task)
        self.writer = None
        if self.rank == 0:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.exp_dir / "tensorboard"))
            atomic_write_text(self.exp_dir / "config.yaml", dump_yaml(cfg))
            n = sum(p.numel() for p in self.model.parameters())
            n_train = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
            log.info("task %s, %s parameters (%s trained), device %s, world size %d", cfg.task, f"{n:,}",
                     f"{n_train:,}", self.device, self.world)
            log.info("TensorBoard: tensorboard --logdir %s", self.exp_dir / "tensorboard")
        if last is not None:
            self._restore(ckpt.load_checkpoint(last))
            if self.rank == 0:
                log.info("resumed from %s (epoch %d, step %d)", last, self.epoch, self.step)

    # ------------------------------------------------------------------ set-up
    def _derive_settings(self, cfg: TrainConfig) -> None:
        """Settings left to the data (``trainer.schedule_speedup: 0``, ``data.warmup_batches: -1``),
        from the training set's size: deterministic, so a resumed run derives the same values."""
        tc, d = cfg.trainer, cfg.data
        if tc.schedule_speedup > 0 and d.warmup_batches >= 0:
            return
        stats = self.task.assets.data_stats
        if not stats:
            from auden_kit.data.datamodule import load_cuts

            stats = duration_stats(load_cuts(d.train_cuts, cuts_only=True))
        seconds = stats["hours"] * 3600
        per_epoch = max(1.0, seconds / (d.max_duration * self.world * tc.accum_grad))
        steps = per_epoch * tc.num_epochs
        if tc.max_steps:
            steps = min(steps, tc.max_steps)
        chosen = []
        if d.warmup_batches < 0:
            # small batches until the model leaves its blank-only phase (a number of updates, not of
            # seconds of audio): a sixth of max_duration, for up to half of the first epoch's audio
            d.warmup_max_duration = d.warmup_max_duration or max(d.max_duration / 6, stats["duration_p95"])
            d.warmup_batches = int(min(500, 0.5 * seconds / (d.warmup_max_duration * self.world)))
            steps += d.warmup_batches * (1 - d.warmup_max_duration / d.max_duration)
            chosen.append(f"data.warmup_batches={d.warmup_batches} of <= {d.warmup_max_duration:.1f} s")
        if tc.schedule_speedup == 0:
            tc.schedule_speedup = round(max(1.0, 30000.0 / steps), 1)
            chosen.append(f"trainer.schedule_speedup={tc.schedule_speedup}")
        if self.rank == 0:
            log.info("derived from the data (%.2f h, ~%d steps): %s", seconds / 3600, steps, ", ".join(chosen))

    def _assets(self, cfg: TrainConfig, resuming: bool):
        """Tokenizers and label maps of this run, kept in exp_dir/assets so that a resumed run and
        `auden-kit average` use exactly what training started with."""
        from auden_kit.hub import load_assets, save_assets

        adir = self.exp_dir / "assets"
        if resuming and (adir / "assets.yaml").is_file():
            import yaml

            return load_assets(adir, yaml.safe_load((adir / "assets.yaml").read_text()))
        from auden_kit.data.datamodule import load_cuts

        train_cuts = load_cuts(cfg.data.train_cuts, cuts_only=True)
        first = next(iter(train_cuts), None)
        fb = cfg.data.fbank
        if first is not None and first.has_features and not cfg.data.on_the_fly_feats and \
                first.num_features != fb.num_features:
            raise UserError(f"cut '{first.id}' of {', '.join(cfg.data.train_cuts)} has {first.num_features}-dim "
                            f"features but data.fbank describes {fb.describe()}; set data.fbank to what the fbank "
                            "stage computed (e.g. data.fbank.pitch=true after `auden-kit data fbank --pitch`)")
        assets = self.task.build_assets(cfg, self.model_cfg, train_cuts)
        from auden_kit.data.level import level_stats

        durations = duration_stats(train_cuts)
        levels = level_stats(train_cuts, fb, durations["num_cuts"])  # inference matches inputs to these
        assets.data_stats = {**durations, **levels, **assets.data_stats}  # the task's facts kept
        if self.rank == 0:
            log.info("training cuts: %s", ", ".join(f"{k} {v}" for k, v in assets.data_stats.items()
                                                    if not isinstance(v, (list, dict))))
        d = cfg.data
        if d.drop_last and assets.data_stats["hours"] * 3600 < d.max_duration * self.world:
            raise UserError(
                f"the training cuts ({', '.join(d.train_cuts)}) hold {assets.data_stats['hours'] * 3600:.1f} s of audio, "
                f"less than one batch (data.max_duration={d.max_duration} s x {self.world} rank(s)) with "
                "data.drop_last=true: no training batch would be made; lower data.max_duration or set "
                "data.drop_last=false")
        if self.rank == 0:
            import yaml

            names = save_assets(adir, assets)
            atomic_write_text(adir / "assets.yaml", yaml.safe_dump({"format_version": 2, **names}))
        return assets

    def _synced(self, batches):
        """The epoch's batches; with ranks that read their own shards (Shar), every rank stops when
        the first one runs out (they may hold a different number of batches). With
        ``trainer.record_cuts`` the ids of every batch's cuts go to ``cuts-epoch<E>-rank<R>.txt``."""
        sync = self.world > 1 and getattr(self.train_sampler, "pre_sharded", False)
        record = None
        if self.cfg.trainer.record_cuts:
            record = open(self.exp_dir / f"cuts-epoch{self.epoch}-rank{self.rank}.txt", "a")
        try:
            while True:
                batch = next(batches, None)
                if sync:
                    flag = torch.tensor([0 if batch is None else 1], device=self.device)
                    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
                    if int(flag) == 0:
                        if batch is not None:
                            log.info("rank %d: epoch %d ends with the other ranks' data", self.rank, self.epoch)
                        return
                if batch is None:
                    return
                if record is not None and "cut_ids" in batch:
                    record.write("".join(f"{c}\n" for c in batch["cut_ids"]))
                yield batch
        finally:
            if record is not None:
                record.close()

    def _apply_freeze(self, frozen: bool) -> list[str]:
        """Set requires_grad for parameters matching ``trainer.freeze``; return their names."""
        import fnmatch

        pats = self.cfg.trainer.freeze
        if not pats:
            return []
        names = []
        for n, p in self.model.named_parameters():
            if any(fnmatch.fnmatchcase(n, pat) for pat in pats):
                p.requires_grad_(not frozen)
                names.append(n)
        if not names:
            raise UserError(f"config key 'trainer.freeze': {pats} matches no parameter (names look like "
                            f"'{next(iter(dict(self.model.named_parameters())))}')")
        if self.rank == 0:
            log.info("%s %d parameter tensors matching %s", "froze" if frozen else "unfroze", len(names), pats)
        return names

    # ------------------------------------------------------------------ state
    @staticmethod
    def _seed(seed: int):
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)

    def _rng_states(self) -> list:
        """Every rank's RNG state (gathered on rank 0): each rank resumes with its own."""
        mine = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            mine["cuda"] = torch.cuda.get_rng_state(self.device)
        if self.world == 1:
            return [mine]
        out = [None] * self.world
        torch.distributed.all_gather_object(out, mine)
        return out

    def _state(self) -> dict:
        return {
            "step": self.step, "epoch": self.epoch, "model": self.model.state_dict(),
            "model_avg": self.model_avg, "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
            "sampler": self.train_sampler.state_dict(), "config": to_dict(self.cfg),
            "model_config": to_dict(self.model_cfg), "task": self.cfg.task,
            "rng": self._rng_states(), "module_state": training_state(self.model),
            "history": self.history,
        }

    def _restore(self, st: dict):
        self.model.load_state_dict(st["model"])
        self.model_avg = st["model_avg"]
        self.optimizer.load_state_dict(st["optimizer"])
        self.scheduler.load_state_dict(st["scheduler"])
        self.scaler.load_state_dict(st["scaler"])
        self.train_sampler.load_state_dict(st["sampler"])
        self.step, self.epoch = st["step"], st["epoch"]
        self.history = st.get("history", [])
        load_training_state(self.model, st.get("module_state", {}))
        rng = st["rng"]
        if isinstance(rng, list):
            if len(rng) != self.world:
                log.warning("checkpoint has random states of %d ranks, this run has %d: ranks reuse them",
                            len(rng), self.world)
            rng = rng[self.rank % len(rng)]
        # applied once the data iterator exists: creating it draws from torch's RNG
        self._pending_rng = rng
        if self.cfg.trainer.freeze and self.cfg.trainer.freeze_steps and self.step >= self.cfg.trainer.freeze_steps:
            self._apply_freeze(frozen=False)

    def save(self, name: str):
        state = self._state()  # every rank takes part in gathering the RNG states
        if self.rank == 0:
            ckpt.save_checkpoint(self.exp_dir / name, state)

    # ------------------------------------------------------------------ loop
    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def _to_device(self, batch: dict) -> dict:
        if "error" in batch:  # a worker could not build the batch: name the cut, no traceback
            raise UserError(batch["error"])
        return _move(batch, self.device)

    def _follow_thread_file(self) -> None:
        """Take the torch thread count written to ``EXP_DIR/num_threads``, when it changed since the
        last look (a bad value is logged and ignored)."""
        p = self.exp_dir / "num_threads"
        try:
            mtime = p.stat().st_mtime
        except OSError:
            return
        if mtime == getattr(self, "_threads_mtime", None):
            return
        self._threads_mtime = mtime
        try:
            n = int(p.read_text().strip())
        except (OSError, ValueError):
            log.warning("%s: expected a number of threads; ignored", p)
            return
        if n > 0 and n != torch.get_num_threads():
            torch.set_num_threads(n)
            log.info("torch threads: %d (from %s)", n, p)

    def _log(self, stats: dict, count: float, grad_norm: float, elapsed: float, input_frames: int = 0):
        if self.writer is None:
            return
        for k, v in stats.items():
            self.writer.add_scalar(f"train/{k}", v / max(count, 1e-9), self.step)
        self.writer.add_scalar("train/lr", self.scheduler.get_last_lr()[0], self.step)
        self.writer.add_scalar("train/grad_norm", grad_norm, self.step)
        self.writer.add_scalar("train/grad_scale", self.scaler.get_scale() if self.scaler.is_enabled() else 1.0,
                               self.step)
        if elapsed > 0:  # input (fbank) frames per second, as in icefall's logs
            self.writer.add_scalar("train/frames_per_s", input_frames / elapsed, self.step)

    def _forward_backward(self, batches: list[dict]) -> tuple[dict, float]:
        """Loss of ``batches`` (one optimizer step), normalised by their total count; backward."""
        outs = []
        for batch in batches:
            with self._autocast():
                loss, stats, count = self.task.compute_loss(self.model, batch, self.step)
            if not torch.isfinite(loss):
                cuts = ", ".join(batch["cut_ids"][:5])
                raise UserError(f"non-finite loss at step {self.step} (cuts {cuts}); lower optim.base_lr "
                                "or check these cuts with `auden-kit data validate`")
            outs.append((loss, stats, float(count)))
        total = sum(c for _, _, c in outs)
        if self.world > 1:  # normalise by the count over all ranks, as one big batch would be
            t = torch.tensor([total], dtype=torch.float64, device=self.device)
            torch.distributed.all_reduce(t)
            total = float(t) / self.world
        acc: dict = {}
        for loss, stats, _ in outs:
            self.scaler.scale(loss / max(total, 1e-9)).backward()
            for k, v in stats.items():
                acc[k] = acc.get(k, 0.0) + v
        return acc, sum(c for _, _, c in outs)

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
            acc_count = 0.0
            acc_input = 0
            t0 = time.time()
            batches = iter(self.train_loader)
            if self._pending_rng is not None:
                rng, self._pending_rng = self._pending_rng, None
                random.setstate(rng["python"])
                np.random.set_state(rng["numpy"])
                torch.set_rng_state(rng["torch"])
                if "cuda" in rng and self.device.type == "cuda":
                    torch.cuda.set_rng_state(rng["cuda"], self.device)
            seen = self.train_sampler.consumed
            group: list[dict] = []
            for batch in self._synced(batches):
                self.train_sampler.mark_consumed()
                seen += 1
                group.append(self._to_device(batch))
                bar.update(1)
                if len(group) < tc.accum_grad:
                    continue
                self.step += 1
                set_batch_count(self.model, self.step * tc.schedule_speedup)
                if self.frozen and tc.freeze_steps and self.step == tc.freeze_steps + 1:
                    self._apply_freeze(frozen=False)
                self.optimizer.zero_grad(set_to_none=True)
                stats, count = self._forward_backward(group)
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
                acc_count += count
                acc_input += sum(int(b["input_lens"].sum()) for b in group)
                group = []
                bar.set_postfix(loss=f"{stats['loss'] / max(count, 1e-9):.3f}",
                                lr=f"{self.scheduler.get_last_lr()[0]:.2e}")
                if self.step % tc.log_interval == 0:
                    self._log(acc, acc_count, getattr(self.optimizer, "last_grad_norm", 0.0), time.time() - t0,
                              acc_input)
                    acc, acc_count, acc_input, t0 = {}, 0.0, 0, time.time()
                    self._follow_thread_file()
                if tc.valid_interval and self.step % tc.valid_interval == 0:
                    self.validate()
                if tc.save_every_n and self.step % tc.save_every_n == 0:
                    self.save(f"checkpoint-{self.step}.pt")
                    if self.rank == 0:
                        ckpt.remove_old(ckpt.step_checkpoints(self.exp_dir), tc.keep_last_k)
                if tc.max_steps and self.step >= tc.max_steps:
                    done = True
                    break
            bar.close()
            if seen == 0:
                raise UserError(
                    f"epoch {self.epoch} had no training batch: the training cuts ({', '.join(self.cfg.data.train_cuts)}) "
                    f"hold less than one batch (data.max_duration={self.cfg.data.max_duration} s, "
                    f"data.drop_last={self.cfg.data.drop_last}, cuts kept between data.min_cut_duration and "
                    "data.max_cut_duration); lower data.max_duration or set data.drop_last=false")
            if done and tc.max_steps:
                self.save(f"checkpoint-{self.step}.pt")
                break
            every = tc.valid_decode_every
            metrics = self.validate(decode=every > 0 and (self.epoch % every == 0 or self.epoch == tc.num_epochs))
            self.history.append({"epoch": self.epoch, "step": self.step, **metrics})
            self.epoch += 1
            self.save(f"epoch-{self.epoch - 1}.pt")
        if self.writer is not None:
            self.writer.flush()
        if self.world > 1:
            torch.distributed.barrier()
            # ranks must hold the same weights after every step: say so in the log (DDP check)
            total = sum(float(p.detach().double().sum()) for p in self.model.parameters())
            log.info("rank %d: step %d, weights checksum %.12g", self.rank, self.step, total)

    def _all_reduce_grads(self):
        """Average gradients over ranks (tasks call model methods, not one forward, so we
        synchronize explicitly instead of through DistributedDataParallel's hooks). Each rank
        normalised its loss by the mean count over ranks, so the average is the global mean."""
        for p in self.model.parameters():
            if not p.requires_grad:
                continue
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            torch.distributed.all_reduce(p.grad)
            p.grad /= self.world

    @torch.no_grad()
    def validate(self, decode: bool = True) -> dict:
        """Validation losses, and with ``decode`` the task's metrics from inference."""
        if self.valid_loader is None or self.rank != 0:
            return {}
        self.model.eval()
        limit = self.cfg.trainer.valid_max_batches

        def batches():
            for i, batch in enumerate(self.valid_loader):
                if limit and i >= limit:
                    break
                yield self._to_device(batch)

        with self._autocast():
            metrics = self.task.validate(self.model, batches(), self.step, decode=decode)
        for k, v in metrics.items():
            self.writer.add_scalar(f"valid/{k}", v, self.step)
        log.info("step %d validation: %s", self.step, ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        self.model.train()
        return metrics


def duration_stats(cuts) -> dict:
    """Count and length percentiles of the training cuts (one pass over the manifest)."""
    d = np.array([c.duration for c in cuts], dtype=np.float64)
    if d.size == 0:
        raise UserError("the training manifests (config key 'data.train_cuts') hold no cuts")
    return {"num_cuts": int(d.size), "hours": round(float(d.sum()) / 3600, 3),
            "duration_p50": round(float(np.percentile(d, 50)), 2),
            "duration_p95": round(float(np.percentile(d, 95)), 2), "duration_max": round(float(d.max()), 2)}


def _move(obj, device):
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, dict):
        return {k: _move(v, device) for k, v in obj.items()}
    if isinstance(obj, list) and obj and isinstance(obj[0], torch.Tensor):
        return [_move(v, device) for v in obj]
    return obj


def init_from(model: torch.nn.Module, source: str | Path, prefix_map: dict | None = None) -> str:
    """Load weights from a model folder or a training checkpoint into ``model``.

    ``prefix_map`` {source prefix: destination prefix} selects and renames weights, e.g.
    ``{"encoder.": "encoder."}`` takes only an ASR model's encoder. Without it every weight whose
    name and shape match is taken. Shape mismatches among the selected weights are errors.
    Returns a one-line report.
    """
    from auden_kit.hub import load_state

    src = Path(source)
    if src.is_dir():
        if not (src / "model.safetensors").is_file():
            raise UserError(f"config key 'trainer.init_from': '{src}' is not a model folder (no model.safetensors)")
        state = load_state(src / "model.safetensors")
    elif src.is_file():
        st = ckpt.load_checkpoint(src)
        state = st.get("model", st) if isinstance(st, dict) else None
        if not isinstance(state, dict):
            raise UserError(f"config key 'trainer.init_from': '{src}' holds no model weights")
    else:
        raise UserError(f"config key 'trainer.init_from': '{src}' does not exist")
    if prefix_map:
        mapped = {}
        for k, v in state.items():
            for a, b in prefix_map.items():
                if k.startswith(a):
                    mapped[b + k[len(a):]] = v
                    break
        if not mapped:
            raise UserError(f"config key 'trainer.init_prefix_map': no weight of '{src}' starts with "
                            f"{list(prefix_map)} (its names look like '{next(iter(state), '')}')")
    else:
        mapped = state
    own = model.state_dict()
    unknown = [k for k in mapped if k not in own]
    if prefix_map and unknown:
        raise UserError(f"config key 'trainer.init_prefix_map' maps weights to names this model lacks, "
                        f"e.g. '{unknown[0]}'")
    take = {k: v for k, v in mapped.items() if k in own}
    bad = [k for k, v in take.items() if v.shape != own[k].shape]
    if bad and prefix_map:
        k = bad[0]
        raise UserError(f"config key 'trainer.init_from': weight '{k}' has shape {tuple(take[k].shape)} in "
                        f"'{src}' but {tuple(own[k].shape)} here (the models' sizes differ)")
    take = {k: v for k, v in take.items() if k not in bad}
    if not take:
        raise UserError(f"config key 'trainer.init_from': no weight of '{src}' fits this model")
    model.load_state_dict(take, strict=False)
    return (f"{len(take)} of {len(own)} tensors loaded" + (f", {len(bad)} skipped (shape)" if bad else "")
            + (f", {len(unknown)} not in this model" if unknown else ""))


def select_checkpoints(exp_dir: Path, avg: int, metric: str, lower_is_better: bool) -> list[Path]:
    """The ``avg`` epoch checkpoints with the best validation ``metric`` (from the last one's history)."""
    paths = ckpt.epoch_checkpoints(exp_dir)
    if not paths:
        raise UserError(f"no epoch-*.pt files in '{exp_dir}' (did training run?)")
    history = ckpt.load_checkpoint(paths[-1]).get("history", [])
    scored = [(h[metric], h["epoch"]) for h in history if metric in h]
    if not scored:
        raise UserError(f"the checkpoints in '{exp_dir}' record no validation '{metric}' (was there a "
                        "validation set?); average by epoch instead")
    scored.sort(key=lambda x: x[0] if lower_is_better else -x[0])
    by_epoch = {int(p.stem.split("-")[1]): p for p in paths}
    chosen = [by_epoch[e] for _, e in scored if e in by_epoch][:avg]
    if len(chosen) < avg:
        log.warning("only %d epoch(s) record a validation '%s' (trainer.valid_decode_every skips it at the "
                    "others): averaging those, not %d", len(chosen), metric, avg)
    log.info("best %d epochs by %s: %s", len(chosen), metric, ", ".join(p.name for p in chosen))
    return chosen


def export_model_folder(exp_dir: str | Path, out_dir: str | Path, epoch: int = 0, avg: int = 1,
                        use_averaged_model: bool = True, step_checkpoints: bool = False,
                        by_metric: bool = False) -> Path:
    """Average checkpoints into a model folder.

    With ``use_averaged_model`` (icefall's default): the running average between the
    checkpoint ``avg`` before the end and the end (epoch ``epoch``, or the latest).
    Otherwise: the plain mean of the last ``avg`` checkpoints' weights. With ``by_metric``: the
    plain mean of the ``avg`` epochs with the best validation metric of the task.
    """
    exp_dir = Path(exp_dir)
    paths = ckpt.step_checkpoints(exp_dir) if step_checkpoints else ckpt.epoch_checkpoints(exp_dir)
    if not paths and not step_checkpoints and epoch == 0 and ckpt.step_checkpoints(exp_dir):
        # a run stopped by trainer.max_steps (or within its first epoch) leaves step checkpoints only
        paths = ckpt.step_checkpoints(exp_dir)
        log.warning("no epoch-*.pt in '%s' (a run stopped by trainer.max_steps?): averaging its step checkpoints "
                    "(%s)", exp_dir, ", ".join(p.name for p in paths[-avg - 1:]))
    if not paths:
        kind = "checkpoint-*.pt" if step_checkpoints else "epoch-*.pt"
        raise UserError(f"no {kind} files in '{exp_dir}' (did training run?)")
    if avg < 1:
        raise UserError(f"--avg must be at least 1, got {avg}")
    if epoch > 0:
        names = [p.name for p in paths]
        want = f"epoch-{epoch}.pt"
        if want not in names:
            raise UserError(f"'{exp_dir / want}' does not exist (have: {', '.join(names)})")
        end_i = names.index(want)
    else:
        end_i = len(paths) - 1
    end = ckpt.load_checkpoint(paths[end_i])
    cfg = from_dict(TrainConfig, end["config"])
    task, model_cfg = resolve(cfg)
    if by_metric:
        chosen = select_checkpoints(exp_dir, avg, task.metric, task.metric_lower_is_better)
        state = ckpt.average_state_dicts([ckpt.load_checkpoint(p)["model"] for p in chosen])
    elif use_averaged_model:
        start_i = end_i - avg
        if start_i >= 0:
            state = ckpt.average_between(ckpt.load_checkpoint(paths[start_i]), end)
        else:  # average since the start of training
            state = end["model_avg"]
    else:
        chosen = paths[max(0, end_i - avg + 1): end_i + 1]
        state = ckpt.average_state_dicts([ckpt.load_checkpoint(p)["model"] for p in chosen])
    from auden_kit.hub import load_assets

    adir = exp_dir / "assets"
    if (adir / "assets.yaml").is_file():
        import yaml

        assets = load_assets(adir, yaml.safe_load((adir / "assets.yaml").read_text()))
    else:  # a run from before assets were kept in exp_dir
        from auden_kit.tasks.base import ModelAssets
        from auden_kit.tokenizers import load_tokenizer

        assets = ModelAssets(tokenizers={k: load_tokenizer(v) for k, v in cfg.all_tokenizers().items()})
        if all(Path(p).is_file() for p in cfg.data.train_cuts):
            from auden_kit.data.datamodule import load_cuts

            assets.data_stats = duration_stats(load_cuts(cfg.data.train_cuts, cuts_only=True))
    task.setup(model_cfg, assets)
    model = task.build_model()
    model.load_state_dict(state)
    return save_pretrained(out_dir, cfg.task, model_cfg, model, assets, cfg.data.fbank)
