"""The data module: cut manifests -> batches of features, for every task.

Task-agnostic by design: a batch carries features and the cuts; the task plugin turns the cuts
into its targets (``Task.batch_targets``, run in the data workers) and may add cut transforms
(e.g. random crops). Augmentation is a list of small callables in Lhotse's style
(``cut_transforms`` act on cuts before features are read, ``input_transforms`` on the feature
tensor). The full batch contract is in :mod:`auden_kit.tasks.base`.

Randomness is a function of (seed, epoch, batch index, rank): every batch re-seeds the random
generators its transforms use, so augmentation does not depend on how many workers prefetch
and a resumed run sees exactly the batches, and augmented features, of an uninterrupted one.

Batch (shape legend: B batch, T frames, F feature bins)::

    {
      "inputs":       float (B, T, F) log-mel features, zero-padded on the right (augmented in training),
      "input_lens":   long  (B,) valid frames of each row,
      "clean_inputs": float (B, T, F) before input augmentation (only if the task needs them),
      "cut_ids":      [str] * B,
      "cuts":         the CutSet of the batch, in row order,
      "targets":      dict from the task (empty without a task),
    }
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
from pathlib import Path
from typing import Callable, NamedTuple, Optional, Sequence

import torch

from auden_kit.data.features import FbankSettings
from auden_kit.errors import UserError

log = logging.getLogger(__name__)


@dataclasses.dataclass
class DataConfig:
    """Where the data is and how it is batched and augmented."""

    train_cuts: list[str] = dataclasses.field(default_factory=list)
    valid_cuts: list[str] = dataclasses.field(default_factory=list)
    max_duration: float = 200.0  # seconds of audio per batch
    # Batch-size warm-up: the first `warmup_batches` batches of the first epoch hold at most
    # `warmup_max_duration` seconds; the rest of that epoch's cuts follow at `max_duration`.
    # Early training (the blank-only phase of a transducer) takes a number of *updates* rather
    # than of seconds of audio, so small batches get through it for less compute.
    warmup_max_duration: float = 0.0
    warmup_batches: int = 0  # -1: derived from the training set's size (logged)
    num_buckets: int = 30
    shuffle: bool = True
    drop_last: bool = True
    num_workers: int = 1
    min_cut_duration: float = 0.3
    max_cut_duration: float = 30.0
    on_the_fly_feats: bool = False
    fbank: FbankSettings = dataclasses.field(default_factory=FbankSettings)
    spec_augment: bool = True
    time_warp_factor: int = 80
    num_frame_masks: int = 10
    frames_mask_size: int = 100
    num_feature_masks: int = 2
    features_mask_size: int = 27
    # Lhotse's cap on the time masks: at most this fraction of a cut's frames, whatever
    # num_frame_masks says (a 2.5 s cut at 0.15 gets at most 2 masks of 20 frames)
    max_frames_mask_fraction: float = 0.15
    speed_perturb: list[float] = dataclasses.field(default_factory=list)  # on-the-fly only, e.g. [0.9, 1.1]
    noise_cuts: Optional[str] = None
    noise_prob: float = 0.5
    noise_snr: list[float] = dataclasses.field(default_factory=lambda: [10.0, 20.0])
    # reverberation: this share of training cuts convolved with a room impulse response, drawn from
    # `rir_recordings` (a Lhotse recording manifest, e.g. RIRS_NOISES) or, without one, from
    # Lhotse's simulated rooms (offline); applied before noise
    reverb_prob: float = 0.0
    rir_recordings: Optional[str] = None
    # level: each training cut at a random gain, uniform in [low, high] dB (e.g. [-20, 10]), made on
    # the log-mel features (exact above the fbank's floor; :mod:`auden_kit.data.level`) before
    # SpecAugment. A model then reads speech by its content, not by how loud its recording was
    # (the mini_synth voice model's embeddings of one utterance 10 dB quieter: cosine 0.73 without)
    gain_db: list[float] = dataclasses.field(default_factory=list)
    seed: int = 42

    def validate(self):
        if self.max_duration <= 0:
            raise UserError(f"config key 'data.max_duration' must be positive, got {self.max_duration}")
        if self.warmup_batches < -1 or (self.warmup_batches > 0 and not 0 < self.warmup_max_duration):
            raise UserError("config keys 'data.warmup_batches' / 'data.warmup_max_duration': give a positive "
                            f"duration with warm-up batches (got {self.warmup_batches} batches of "
                            f"{self.warmup_max_duration} s)")
        if self.speed_perturb and not self.on_the_fly_feats:
            raise UserError("config key 'data.speed_perturb' needs data.on_the_fly_feats=true "
                            "(with precomputed features, perturb at the fbank stage instead)")
        if self.num_workers < 0 or self.num_buckets < 0:
            raise UserError(f"config keys 'data.num_workers' / 'data.num_buckets' must be >= 0, got "
                            f"{self.num_workers} / {self.num_buckets}")
        if not 0 <= self.min_cut_duration < self.max_cut_duration:
            raise UserError(f"config keys 'data.min_cut_duration' ({self.min_cut_duration}) / "
                            f"'data.max_cut_duration' ({self.max_cut_duration}): need 0 <= min < max")
        if not 0 <= self.reverb_prob <= 1:
            raise UserError(f"config key 'data.reverb_prob' must be in [0, 1], got {self.reverb_prob}")
        if self.rir_recordings and not Path(self.rir_recordings).is_file():
            raise UserError(f"config key 'data.rir_recordings': '{self.rir_recordings}' does not exist")
        if not 0 <= self.noise_prob <= 1 or len(self.noise_snr) != 2:
            raise UserError("config keys 'data.noise_prob' (in [0, 1]) / 'data.noise_snr' ([low, high] dB): got "
                            f"{self.noise_prob} / {self.noise_snr}")
        for key in ("num_frame_masks", "frames_mask_size", "num_feature_masks", "features_mask_size",
                    "time_warp_factor"):
            if getattr(self, key) < 0:
                raise UserError(f"config key 'data.{key}' must be >= 0, got {getattr(self, key)}")
        if self.gain_db and (len(self.gain_db) != 2 or self.gain_db[0] > self.gain_db[1]):
            raise UserError(f"config key 'data.gain_db' is [low, high] in dB with low <= high (e.g. [-20, 10]), "
                            f"got {self.gain_db}")
        if not 0 <= self.max_frames_mask_fraction <= 1:
            raise UserError("config key 'data.max_frames_mask_fraction' is a fraction of a cut's frames in [0, 1], "
                            f"got {self.max_frames_mask_fraction}")


def _require_cuts(path) -> None:
    """A recording or supervision manifest where cuts are wanted is an error saying how to make
    cuts (its first line tells what it holds)."""
    import gzip
    import json

    try:
        with (gzip.open(path, "rt") if str(path).endswith(".gz") else open(path)) as f:
            first = json.loads(next((line for line in f if line.strip()), "{}"))
    except (OSError, ValueError, UnicodeDecodeError):
        return  # not JSON lines: the manifest reader says what is wrong
    if not isinstance(first, dict) or "type" in first:
        return
    kind = "recording" if "sources" in first else "supervision" if "recording_id" in first else ""
    if kind:
        raise UserError(f"'{path}' is a {kind} manifest, not a cut manifest: make cuts from the recordings and "
                        "supervisions with `auden-kit data fbank RECORDINGS SUPERVISIONS --out CUTS` (features), "
                        "then give CUTS")


def load_cuts(paths: Sequence[str] | str, rank: int = 0, world: int = 1, cuts_only: bool = False):
    """Open one or more cut manifests or Shar sources (:mod:`auden_kit.data.shar`) lazily; errors
    name the missing file. With ``world`` > 1, Shar sources give only rank ``rank``'s shards;
    ``cuts_only`` skips their tar fields (for statistics)."""
    from lhotse import CutSet
    from lhotse.lazy import LazyManifestIterator

    from auden_kit.data.shar import is_shar, open_shar

    if isinstance(paths, (str, Path)):
        paths = [paths]
    if not paths:
        raise UserError("no cut manifest given (config key data.train_cuts / data.valid_cuts, or --cuts)")
    shar = [p for p in paths if is_shar(p)]
    if shar and len(shar) != len(paths) and world > 1:
        raise UserError("data.train_cuts mixes Shar sources and manifests: with several ranks give only Shar "
                        f"sources (export the manifests with `auden-kit data shar`); got {list(paths)}")
    sets = [open_shar(shar, rank, world, cuts_only)] if shar else []
    for p in paths:
        if p in shar:
            continue
        if not Path(p).is_file():
            raise UserError(f"cut manifest '{p}' does not exist (did the fbank stage run?)")
        _require_cuts(p)
        sets.append(CutSet(LazyManifestIterator(p)))
    if len(sets) == 1:
        return sets[0]
    from lhotse import combine

    return combine(*sets)


class SampledBatch(NamedTuple):
    """What the sampler hands the dataset: the cuts and where they sit (for seeding)."""

    cuts: object
    epoch: int
    index: int
    rank: int


def batch_seed(seed: int, epoch: int, index: int, rank: int) -> int:
    return (seed * 1_000_003 + epoch * 10_007 + index * 101 + rank) % (2 ** 31)


class SpeechDataset(torch.utils.data.Dataset):
    """Map-style dataset whose "index" is a :class:`SampledBatch` (or a plain CutSet).

    A :class:`~auden_kit.errors.UserError` raised while building a batch (a cut the task cannot
    use) is returned as ``{"error": message}`` so that the trainer can report it in one line
    instead of a worker traceback.
    """

    def __init__(self, input_strategy: Callable, cut_transforms: Sequence[Callable] = (),
                 input_transforms: Sequence[Callable] = (), task=None, train: bool = False,
                 rng: Optional[random.Random] = None, seed: int = 0, gain: Optional[Callable] = None):
        self.input_strategy = input_strategy
        self.gain = gain  # a recording condition, before the clean inputs are kept
        self.cut_transforms = list(cut_transforms)
        self.input_transforms = list(input_transforms)
        self.task = task
        self.train = train
        self.rng = rng or random.Random(seed)  # shared by transforms that take a generator
        self.seed = seed

    def _reseed(self, item) -> None:
        if isinstance(item, SampledBatch):
            s = batch_seed(self.seed, item.epoch, item.index, item.rank)
            random.seed(s)
            self.rng.seed(s)
            torch.manual_seed(s)
            import numpy as np

            np.random.seed(s)

    def __getitem__(self, item) -> dict:
        from auden_kit.errors import UserError

        self._reseed(item)
        cuts = item.cuts if isinstance(item, SampledBatch) else item
        try:
            return self._batch(cuts)
        except UserError as e:
            return {"error": str(e)}
        except Exception:  # noqa: BLE001 - an unreadable cut: name it, else the error as it is
            bad = unreadable_cut(cuts)
            if bad is None:
                raise
            return {"error": bad}

    def _batch(self, cuts) -> dict:
        cuts = cuts.sort_by_duration(ascending=False)
        for t in self.cut_transforms:
            cuts = t(cuts)
        inputs, input_lens = self.input_strategy(cuts)
        batch = {"input_lens": input_lens.to(torch.long), "cut_ids": [c.id for c in cuts], "cuts": cuts}
        if self.gain is not None:
            inputs = self.gain(inputs, self.rng)
        if self.task is not None and self.task.needs_clean_inputs:
            batch["clean_inputs"] = inputs.clone() if self.input_transforms else inputs
        for t in self.input_transforms:
            inputs = t(inputs)
        batch["inputs"] = inputs
        batch["targets"] = self.task.batch_targets(cuts, self.train) if self.task is not None else {}
        return batch


def unreadable_cut(cuts) -> Optional[str]:
    """What is wrong with the first cut of ``cuts`` whose features or audio cannot be read (its id,
    the file and the reason), or None when they all read."""
    import os

    for c in cuts:
        what = "features" if c.has_features else "audio"
        try:
            c.load_features() if c.has_features else c.load_audio()
        except Exception as e:  # noqa: BLE001 - reported, with the cut
            rec = getattr(c, "recording", None)  # None for a mixture
            if c.has_features:
                path, is_file = str(c.features.storage_path), True
            elif rec is not None:
                path, is_file = str(rec.sources[0].source), rec.sources[0].type == "file"
            else:
                path, is_file = "", False
            if is_file and not os.path.exists(path):
                why = "no such file"
                if not os.path.isabs(path):
                    why += (f" (relative paths are read from the working directory, {os.getcwd()}: run from the "
                            "folder the manifest was made in)")
            else:
                why = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:300]}"
            return f"cut '{c.id}': cannot read its {what}{f' (' + repr(path) + ')' if path else ''}: {why}"
    return None


class ResumableSampler:
    """A DynamicBucketingSampler whose position can be saved and restored exactly.

    State is (epoch, batches consumed). Restoring recreates the sampler for that
    epoch and skips the consumed batches (cheap: no audio is read), so a resumed
    run sees exactly the batches an uninterrupted run would have seen; counting
    consumed batches rather than the sampler's internal position keeps this right
    when DataLoader workers prefetch ahead.
    """

    def __init__(self, cuts, cfg: DataConfig, train: bool, world_size: int = 1, rank: int = 0,
                 seed_rank: Optional[int] = None):
        self.cuts = cuts
        self.seed_rank = rank if seed_rank is None else seed_rank  # per-batch seeds differ between ranks
        self.pre_sharded = False  # the cuts are already this rank's share (Shar): set by make_loader
        self.duration_cuts = None  # the same cuts without their data (to count durations cheaply)
        self.cfg = cfg
        self.train = train
        self.world_size = world_size
        self.rank = rank
        self.epoch = 0
        self.consumed = 0
        self._skip = 0
        self._total_duration: Optional[float] = None

    def estimated_batches(self) -> int:
        """This rank's batches in the current epoch, estimated from the total duration (one pass over
        the manifest, cached): what the progress bar's ETA is based on. Batches are filled close to
        ``max_duration``, so the estimate is a few percent low at worst."""
        if self._total_duration is None:
            self._total_duration = float(sum(c.duration for c in (self.duration_cuts or self.cuts)))
        cfg, total, n = self.cfg, self._total_duration, 0.0
        if self.train and self.epoch <= 1 and cfg.warmup_batches > 0:
            warm = min(cfg.warmup_batches * self.world_size, total / cfg.warmup_max_duration)
            n, total = warm, total - warm * cfg.warmup_max_duration
        n += max(0.0, total) / cfg.max_duration
        return max(1, math.ceil(n / self.world_size))

    def _make(self, cuts=None, max_duration: float = 0.0, shard: bool = True):
        from lhotse.dataset import DynamicBucketingSampler, DynamicCutSampler

        cuts = self.cuts if cuts is None else cuts
        max_duration = max_duration or self.cfg.max_duration
        world_size, rank = (self.world_size, self.rank) if shard else (1, 0)
        if self.cfg.num_buckets <= 1 or not self.train:  # no bucketing: evaluation keeps manifest order
            s = DynamicCutSampler(cuts, max_duration=max_duration,
                                  shuffle=self.cfg.shuffle and self.train,
                                  drop_last=self.cfg.drop_last and self.train, world_size=world_size,
                                  rank=rank, seed=self.cfg.seed)
            s.set_epoch(self.epoch)
            return s
        try:
            s = DynamicBucketingSampler(
                cuts, max_duration=max_duration, num_buckets=self.cfg.num_buckets,
                shuffle=self.cfg.shuffle and self.train, drop_last=self.cfg.drop_last and self.train,
                world_size=world_size, rank=rank, seed=self.cfg.seed,
                buffer_size=20000,
            )
        except AssertionError as e:  # Lhotse checks its arguments with asserts
            raise UserError(f"cannot batch the cuts: {e} (config keys data.num_buckets / data.max_duration)") from None
        s.set_epoch(self.epoch)
        return s

    def _epoch_batches(self):
        """All batches of the current epoch, in order (deterministic for a given epoch)."""
        cfg = self.cfg
        if not (self.train and self.epoch <= 1 and cfg.warmup_batches > 0):
            yield from self._make()
            return
        # Every rank walks the whole warm-up sequence (same seed) and keeps its share, so all
        # ranks agree on which cuts are left for the rest of the epoch.
        seen = set()
        warm = iter(self._make(max_duration=cfg.warmup_max_duration, shard=False))
        for i in range(cfg.warmup_batches * self.world_size):
            batch = next(warm, None)
            if batch is None:
                break
            seen.update(c.id for c in batch)
            if i % self.world_size == self.rank:
                yield batch
        yield from self._make(cuts=self.cuts.filter(lambda c: c.id not in seen))

    def set_epoch(self, epoch: int):
        if epoch != self.epoch:
            self.epoch = epoch
            self.consumed = 0
            self._skip = 0

    def __iter__(self):
        it = self._epoch_batches()
        for _ in range(self._skip):
            next(it, None)
        self.consumed = self._skip
        index, self._skip = self._skip, 0
        for cuts in it:
            yield SampledBatch(cuts, self.epoch, index, self.seed_rank)
            index += 1

    def mark_consumed(self):
        self.consumed += 1

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "consumed": self.consumed}

    def load_state_dict(self, state: dict):
        self.epoch = int(state["epoch"])
        self.consumed = int(state["consumed"])
        self._skip = self.consumed


def _duration_ok(cut, lo: float, hi: float) -> bool:
    return lo <= cut.duration <= hi


def _filter(cuts, cfg: DataConfig, task=None, train: bool = False):
    import functools

    cuts = cuts.filter(functools.partial(_duration_ok, lo=cfg.min_cut_duration, hi=cfg.max_cut_duration))
    if train and task is not None:
        cuts = cuts.filter(task.keep_training_cut)
    return cuts


def build_dataset(cfg: DataConfig, train: bool, task=None) -> SpeechDataset:
    from lhotse.dataset import CutMix, PerturbSpeed, SpecAugment
    from lhotse.dataset.input_strategies import OnTheFlyFeatures, PrecomputedFeatures

    rng = random.Random(cfg.seed)  # re-seeded per batch by the dataset
    cut_transforms: list[Callable] = []
    input_transforms: list[Callable] = []
    if train and cfg.speed_perturb:
        cut_transforms.append(PerturbSpeed(factors=cfg.speed_perturb, p=2 / 3, randgen=rng))
    if train and cfg.reverb_prob > 0:
        from lhotse import RecordingSet
        from lhotse.dataset import ReverbWithImpulseResponse

        rirs = RecordingSet.from_file(cfg.rir_recordings) if cfg.rir_recordings else None
        cut_transforms.append(ReverbWithImpulseResponse(rir_recordings=rirs, p=cfg.reverb_prob, randgen=rng,
                                                            preserve_id=True))
    if train and cfg.noise_cuts:
        noise = load_cuts(cfg.noise_cuts)
        cut_transforms.append(CutMix(cuts=noise, p=cfg.noise_prob, snr=tuple(cfg.noise_snr), seed=rng))
    if task is not None:
        cut_transforms += task.cut_transforms(cfg, train)
    if train and cfg.spec_augment:
        input_transforms.append(SpecAugment(
            time_warp_factor=cfg.time_warp_factor, num_frame_masks=cfg.num_frame_masks,
            frames_mask_size=cfg.frames_mask_size, num_feature_masks=cfg.num_feature_masks,
            features_mask_size=cfg.features_mask_size, max_frames_mask_fraction=cfg.max_frames_mask_fraction,
        ))
    if cfg.on_the_fly_feats or (train and (cfg.speed_perturb or cfg.noise_cuts or cfg.reverb_prob > 0)):
        if cfg.on_the_fly_feats:
            cut_transforms.insert(0, _Resample(cfg.fbank.sample_rate))
        strategy = OnTheFlyFeatures(cfg.fbank.extractor())
    else:
        strategy = PrecomputedFeatures()
    gain = RandomGain(cfg.gain_db, cfg.fbank.num_mel_bins) if train and cfg.gain_db else None
    return SpeechDataset(strategy, cut_transforms, input_transforms, task=task, train=train, rng=rng, seed=cfg.seed,
                         gain=gain)


class RandomGain:
    """Each row of a (B, T, F) log-mel batch at its own gain, uniform in [low, high] dB
    (``data.gain_db``); padding and digital silence stay at their values."""

    def __init__(self, gain_db: Sequence[float], num_mel_bins: int):
        self.low, self.high = float(gain_db[0]), float(gain_db[1])
        self.num_mel_bins = num_mel_bins

    def __call__(self, inputs: torch.Tensor, rng: random.Random) -> torch.Tensor:
        from auden_kit.data.level import shift_level

        shifts = torch.tensor([rng.uniform(self.low, self.high) for _ in range(inputs.shape[0])])
        return shift_level(inputs, shifts.view(-1, 1, 1), self.num_mel_bins)


class _Resample:
    def __init__(self, sample_rate: int):
        self.sample_rate = sample_rate

    def __call__(self, cuts):
        return cuts.resample(self.sample_rate)


def make_loader(cfg: DataConfig, paths: Sequence[str], train: bool, world_size: int = 1, rank: int = 0, task=None):
    """Return (DataLoader, ResumableSampler) for the manifests in ``paths``; ``task`` builds targets."""
    from auden_kit.data.shar import is_shar

    pre_sharded = train and world_size > 1 and any(is_shar(p) for p in paths)
    if pre_sharded:  # each rank reads its own shards; the sampler must not split them again
        cuts = _filter(load_cuts(paths, rank, world_size), cfg, task, train)
        sampler = ResumableSampler(cuts, cfg, train=train, world_size=1, rank=0, seed_rank=rank)
        sampler.duration_cuts = load_cuts(paths, rank, world_size, cuts_only=True)
    else:
        cuts = _filter(load_cuts(paths), cfg, task, train)
        sampler = ResumableSampler(cuts, cfg, train=train, world_size=world_size, rank=rank)
    sampler.pre_sharded = pre_sharded
    dataset = build_dataset(cfg, train, task=task)
    loader = torch.utils.data.DataLoader(
        dataset, sampler=sampler, batch_size=None, num_workers=cfg.num_workers,
        persistent_workers=False,
    )
    return loader, sampler
