"""The Python API: load a model folder, call it on audio. ``auden-kit decode`` is a thin layer
over it, so the CLI and Python give the same results.

    import auden_kit
    m = auden_kit.load("egs/mini_synth/exp/model-avg")
    text = m.transcribe("a.wav").text                      # a path
    for r in m.transcribe(["a.wav", "b.flac"]): ...        # several paths (batched by duration)
    r = m.transcribe(waveform, sample_rate=8000)           # a numpy/torch waveform
    s = m.stream(); s.accept(chunk, 16000); s.partial; s.finish()   # causal models

Audio of any length: inputs longer than ``max_segment`` seconds are cut into speech stretches at
pauses (:func:`speech_segments`: an energy detector; stretches merged up to the median length of
the model's training cuts, recorded in its folder; none longer than ``max_segment``), decoded in
batches, and the pieces' results stitched with global times, so memory stays bounded (a file
longer than ``block_seconds``, 10 minutes, is read and cut block by block, never whole). An input
of digital silence is not decoded: transcripts, translations and diarized ASR come back empty
(models read words into silence), embeddings and labels raise an error. An input whose speech is
far quieter or louder than the model's training audio is brought to its level first
(:mod:`auden_kit.data.level`; ``match_level=False`` to decode it as it is). Errors are
:class:`auden_kit.AudenKitError` (a :class:`~auden_kit.errors.UserError`) naming the file.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence, Union

import numpy as np
import torch

from auden_kit.data.audio import load_cut_audio
from auden_kit.data.features import PAD_VALUE
from auden_kit.data.level import has_level_stats, level_shift_db, shift_level, speech_level_db
from auden_kit.data.pauses import no_signal, speech_segments, split_at_pauses
from auden_kit.errors import UserError
from auden_kit.results import Result
from auden_kit.runtime import release_free_memory

log = logging.getLogger(__name__)

AudioLike = Union[str, Path, np.ndarray, torch.Tensor]


@dataclasses.dataclass
class AudioItem:
    """One input: an id and a loader of its mono waveform at the model's rate."""

    item_id: str
    load: object  # () -> 1-D float tensor
    path: Optional[str] = None  # a file, which a long input is read from block by block
    seconds: Optional[float] = None  # its duration, where known without reading it (progress bars)


def _items(audio, sample_rate: Optional[int], model_rate: int) -> list[AudioItem]:
    """Normalise the accepted input kinds into items."""
    from auden_kit.data.audio import check_waveform, float_samples, load_audio, resample

    if isinstance(audio, (str, Path)):
        return [AudioItem(str(audio), lambda p=audio: load_audio(p, model_rate), str(audio))]
    if isinstance(audio, (np.ndarray, torch.Tensor)):
        if sample_rate is None:
            raise UserError("a waveform needs its sample_rate (e.g. transcribe(wav, sample_rate=16000))")
        x = float_samples(audio)
        if x.ndim == 2:  # (channels, samples) or (samples, channels): average the shorter axis
            x = x.mean(0) if x.shape[0] < x.shape[1] else x.mean(1)
        if x.ndim != 1:
            raise UserError(f"a waveform must be 1-D (samples) or 2-D (channels x samples), got shape {tuple(x.shape)}")
        check_waveform(x, "waveform")
        return [AudioItem("waveform", lambda: resample(x, int(sample_rate), model_rate),
                          seconds=x.numel() / int(sample_rate))]
    try:
        from lhotse import CutSet

        if isinstance(audio, CutSet):
            return [AudioItem(c.id, lambda c=c: load_cut_audio(c, model_rate), seconds=c.duration) for c in audio]
    except ImportError:  # pragma: no cover
        pass
    if isinstance(audio, Iterable):
        return [item for a in audio for item in _items(a, sample_rate, model_rate)]
    raise UserError(f"cannot decode an object of type {type(audio).__name__}: give a path, a list of paths, "
                    "a waveform with its sample_rate, or a Lhotse CutSet")


def seconds_bar(total: float, desc: str):
    """A progress bar over seconds of audio with an ETA, so that one long recording shows its own
    progress (``update`` it with seconds done)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="s", dynamic_ncols=True,
                bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s audio [{elapsed}<{remaining}]")


class Model:
    """A loaded model folder; see the module docstring. ``task``, ``model`` (the nn.Module),
    ``assets`` and ``features`` are the parts, for code that needs them."""

    MIN_FRAMES = 9  # shorter inputs give no encoder output
    VERB_ING = {"voice": "embedding", "classify": "classifying"}  # the progress bar's label, else "decoding"
    LEVEL_NOTES = 3  # inputs moved to the training level that are named in the log, one line each

    def __init__(self, loaded, device: str = "cpu"):
        self.loaded = loaded
        self.task = loaded.task
        self.model = loaded.model
        self.assets = loaded.assets
        self.features = loaded.features
        self.device = torch.device(device)
        self._extractor = loaded.features.extractor()
        # pieces of long recordings are merged up to the median training-cut length (model folder)
        stats = getattr(loaded.assets, "data_stats", {}) or {}
        self.merge_up_to = float(stats.get("duration_p50", 10.0))

    # ------------------------------------------------------------------ generic inference
    def iter_results(self, audio, sample_rate: Optional[int] = None, max_segment: float = 30.0,
                     batch_duration: float = 200.0, progress: bool = False, match_level: bool = True,
                     block_seconds: float = 600.0, **options) -> Iterator[tuple[str, Union[Result, UserError]]]:
        """Yield (input id, result or the UserError that input raised), in input order. Inputs are
        decoded in batches of at most ``batch_duration`` seconds; long ones are split into pieces of
        at most ``max_segment`` seconds and stitched. ``match_level``: an input whose speech is far
        quieter or louder than the training audio is brought to its level (:meth:`level_shift`).
        A batch is at most ``batch_duration`` seconds padded: pieces are batched longest first, so
        inputs of mixed lengths are not padded to the longest."""
        if max_segment <= 0 or batch_duration <= 0 or block_seconds <= 0:
            raise UserError("max_segment, batch_duration and block_seconds must be positive")
        block_seconds = max(block_seconds, 4 * max_segment)  # a block holds several pieces
        items = _items(audio, sample_rate, self.features.sample_rate)
        self.task.check_method(self.model, options.get("method", ""))
        pending: list = []  # (item index, piece index, offset s, features)
        pending_s = 0.0
        # item index -> {"n": pieces (None while it is read), "results": {piece: (offset, result)}, "linked"}
        done: dict[int, dict] = {}
        errors: dict[int, UserError] = {}
        next_out = 0
        bar = self._progress_bar(items, self.VERB_ING.get(self.task.name, "decoding")) if progress else None
        counted: dict[int, float] = {}  # item index -> seconds of its pieces the bar has counted

        def flush():
            nonlocal pending, pending_s
            # longest first, cut so that a batch's padded size stays within batch_duration: turns or
            # files of mixed lengths are not all padded to the longest (memory and time)
            pool = sorted(pending, key=lambda p: -p[3].shape[0])
            pending, pending_s = [], 0.0
            limit = max(1, int(batch_duration / self.features.frame_shift))
            while pool:
                n = 1
                while n < len(pool) and (n + 1) * pool[0][3].shape[0] <= limit:
                    n += 1
                decode(pool[:n])
                pool = pool[n:]
                release_free_memory()  # else the heap grows batch after batch (auden_kit.runtime)

        def decode(group):
            feats = [f for _, _, _, f in group]
            lens = torch.tensor([f.shape[0] for f in feats])
            if len(feats) == 1:
                x = feats[0].unsqueeze(0)
            else:
                x = torch.full((len(feats), int(lens.max()), feats[0].shape[1]), PAD_VALUE)
                for i, f in enumerate(feats):
                    x[i, : f.shape[0]] = f
            batch = {"inputs": x.to(self.device), "input_lens": lens.to(self.device),
                     "cut_ids": [f"{i}:{j}" for i, j, _, _ in group],
                     "linked": [done[i]["linked"] for i, _, _, _ in group]}  # pieces that merge() links
            results = self.task.infer(self.model, batch, **options)
            for (i, j, off, f), r in zip(group, results):
                done[i]["results"][j] = (off, r)
                if bar is not None and bar.unit == "s":
                    sec = f.shape[0] * self.features.frame_shift
                    counted[i] = counted.get(i, 0.0) + sec
                    bar.update(max(0.0, min(sec, bar.total - bar.n)))  # never past the end (float sums)

        def ready():
            nonlocal next_out
            while next_out < len(items):
                i = next_out
                if i in errors:
                    yield items[i].item_id, errors.pop(i)
                elif i in done and len(done[i]["results"]) == done[i]["n"]:
                    d = done.pop(i)
                    pieces = [d["results"][j] for j in range(d["n"])]
                    yield items[i].item_id, self.task.merge(pieces, items[i].item_id)
                else:
                    return
                next_out += 1
                if bar is not None:  # the rest of the input (its pauses, or all of it) is done too
                    rest = items[i].seconds - counted.pop(i, 0.0) if bar.unit == "s" else 1
                    bar.update(max(0.0, min(rest, bar.total - bar.n)))

        level = {"moved": 0}  # inputs brought to the training level; the first LEVEL_NOTES are logged
        for i, item in enumerate(items):
            done[i] = {"n": None, "results": {}, "linked": False}
            n = 0
            try:
                for pieces, linked in self._piece_groups(item, max_segment, block_seconds, match_level, level):
                    done[i]["linked"] = linked
                    for off, f in pieces:
                        pending.append((i, n, off, f))
                        n += 1
                        pending_s += f.shape[0] * self.features.frame_shift
                        if pending_s >= batch_duration:
                            flush()
            except UserError as e:  # nothing of this input is decoded or kept
                pending = [p for p in pending if p[0] != i]
                pending_s = sum(p[3].shape[0] for p in pending) * self.features.frame_shift
                del done[i]
                errors[i] = e
                yield from ready()
                continue
            if n == 0:  # digital silence: the task's empty result, or an error
                try:
                    done[i] = {"n": 1, "results": {0: (0.0, self.task.silent_result(item.item_id))}}
                except UserError as e:
                    del done[i]
                    errors[i] = e
            else:
                done[i]["n"] = n
            yield from ready()
        flush()
        yield from ready()
        if bar is not None:
            bar.close()
        if level["moved"] > self.LEVEL_NOTES:
            log.info("%d of %d inputs in all were brought to the training audio's level (match_level=False keeps "
                     "them as they are)", level["moved"], len(items))

    @staticmethod
    def _progress_bar(items: list, desc: str):
        """A progress bar over seconds of audio when every input's duration is known from its
        header or manifest (so one long recording shows its progress and ETA), else over files."""
        from tqdm import tqdm

        from auden_kit.data.audio import audio_seconds

        for it in items:
            if it.seconds is None and it.path:
                it.seconds = audio_seconds(it.path)
        if all(it.seconds is not None for it in items):
            return seconds_bar(sum(it.seconds for it in items), desc)
        return tqdm(total=len(items), desc=desc, unit="file", dynamic_ncols=True)

    def _piece_groups(self, item: AudioItem, max_segment: float, block_seconds: float, match_level: bool,
                      level: dict) -> Iterator[tuple[list, bool]]:
        """The (offset s, features) pieces of one input, in groups, with whether the input is cut
        (its pieces' results are linked by ``task.merge``); none for digital silence. A file longer
        than ``block_seconds`` is read block by block (:func:`~auden_kit.data.audio.read_blocks`)
        and each block's speech cut into pieces while the next is unread, so memory does not grow
        with the recording; the speech that runs into a block's end waits for the next block."""
        from auden_kit.data.audio import audio_seconds

        if item.path and item.seconds is None:
            item.seconds = audio_seconds(item.path)
        if not item.path or item.seconds is None or item.seconds <= block_seconds:
            wav = item.load()
            ranges = self._speech_ranges(wav, max_segment, whole=True)
            pieces = self._pieces(wav, ranges, item.item_id)  # a too-short input fails here, silent or not
            if not pieces or no_signal(wav, self.features.sample_rate):  # digital silence: nothing to decode
                return
            if match_level:  # one gain for the whole input, from all its speech
                gain = self._level_gain(pieces, item.item_id, level)
                if gain != 1.0:  # on the waveform: quiet bins are not lost under the fbank's floor
                    wav = wav * gain
                    pieces = self._pieces(wav, ranges, item.item_id)
            yield pieces, len(pieces) > 1
            return
        from auden_kit.data.audio import read_blocks
        from auden_kit.data.pauses import stretches_by_block

        rate = self.features.sample_rate
        gain = None if match_level else 1.0  # one gain for the input, from its first block with speech
        for start, buf, ranges in stretches_by_block(read_blocks(item.path, rate, block_seconds),
                                                     lambda b, _: self._speech_ranges(b, max_segment)):
            pieces = self._pieces(buf, ranges, item.item_id, start)
            if gain is None and pieces:
                gain = self._level_gain(pieces, item.item_id, level)
            if gain not in (None, 1.0):
                pieces = self._pieces(buf * gain, ranges, item.item_id, start)
            yield pieces, True

    def _speech_ranges(self, wav: torch.Tensor, max_segment: float, whole: bool = False) -> list:
        """Sample ranges of ``wav`` to decode: all of it when it is the ``whole`` input and at most
        ``max_segment`` seconds; else speech stretches between pauses, merged up to what the model
        trained on and none longer than ``max_segment``; none in digital silence."""
        rate = self.features.sample_rate
        if whole and wav.numel() <= max_segment * rate:
            return [(0, wav.numel())]
        return speech_segments(wav, rate, max_segment, merge_up_to=self.merge_up_to)

    def _level_gain(self, pieces: list, item_id: str, level: dict) -> float:
        """The factor that brings one input's speech (its pieces' features) to the training level."""
        shift = self.level_shift(torch.cat([f for _, f in pieces]),
                                 item_id if level["moved"] < self.LEVEL_NOTES else None)
        level["moved"] += bool(shift)
        return 10 ** (shift / 20) if shift else 1.0

    def _pieces(self, wav: torch.Tensor, ranges, item_id: str, start: int = 0) -> list:
        """(offset s, features) of each range of samples of one input; slivers left out."""
        rate = self.features.sample_rate
        pieces = []
        for a, b in ranges:
            f = fbank_of(wav[a:b], self.features, self._extractor)
            if f.shape[0] < self.MIN_FRAMES:
                if len(ranges) == 1 and start == 0 and a == 0 and b == wav.numel():
                    raise UserError(f"audio '{item_id}' is too short to decode ({(b - a) / rate:.3f} s)")
                continue  # a sliver at the end of a long file
            pieces.append(((start + a) / rate, f))
        return pieces

    def level_shift(self, feats: torch.Tensor, item_id: Optional[str] = None) -> float:
        """dB by which one input with features (T, F) is moved: to the training audio's median level
        when it lies well outside the training range (:mod:`auden_kit.data.level`); 0 otherwise, or
        for a model folder without level statistics. Logged with ``item_id`` when given."""
        stats = self.assets.data_stats or {}
        level = speech_level_db(feats, self.features.num_mel_bins)
        shift = level_shift_db(level, stats)
        if shift and item_id is not None:
            log.info("'%s': speech level %.1f dB, far outside the training audio's %.1f..%.1f dB: moved by %+.1f dB",
                     item_id, level, stats["level_db_p5"], stats["level_db_p95"], shift)
        return shift

    def match_batch_levels(self, batch: dict) -> int:
        """:meth:`level_shift` for each cut of a padded batch (``inputs``, ``input_lens``), in place;
        returns how many were moved."""
        moved = 0
        for i, n in enumerate(batch["input_lens"].tolist()):
            shift = self.level_shift(batch["inputs"][i, :n])
            if shift:
                batch["inputs"][i, :n] = shift_level(batch["inputs"][i, :n], shift, self.features.num_mel_bins)
                moved += 1
        return moved

    def infer(self, audio, sample_rate: Optional[int] = None, **options):
        """Results for ``audio`` (one result for one input, else a list). The first failing
        input raises its UserError."""
        single = isinstance(audio, (str, Path, np.ndarray, torch.Tensor))
        out = []
        for _, r in self.iter_results(audio, sample_rate, **options):
            if isinstance(r, UserError):
                raise r
            out.append(r)
        return out[0] if single else out

    # ------------------------------------------------------------------ task verbs
    def require(self, *tasks: str, verb: str):
        if self.task.name not in tasks:
            want = " or ".join(f"'{t}'" for t in tasks)
            raise UserError(f"{verb} needs a model of task {want}; '{self.loaded.directory}' is a "
                            f"'{self.task.name}' model")

    def transcribe(self, audio, sample_rate: Optional[int] = None, method: str = "", beam: int = 4, **kw):
        """Text results (:class:`~auden_kit.results.TextResult`: text, tokens, times) for ``audio``."""
        self.require("asr", verb="transcribe()")
        return self.infer(audio, sample_rate, method=method, beam=beam, **kw)

    def classify(self, audio, sample_rate: Optional[int] = None, top_k: int = 5, **kw):
        """Labels with probabilities (:class:`~auden_kit.results.ClassificationResult`)."""
        self.require("classify", verb="classify()")
        return self.infer(audio, sample_rate, top_k=top_k, **kw)

    def embed(self, audio, sample_rate: Optional[int] = None, **kw):
        """Voice models: utterance embeddings with the heads' labels (:class:`~auden_kit.tasks.voice.VoiceResult`);
        long recordings are embedded piece by piece and averaged by duration."""
        self.require("voice", verb="embed()")
        return self.infer(audio, sample_rate, **kw)

    def stream(self, match_level: bool = True) -> "Stream":
        """A streaming decoder for one audio stream (causal ASR models). ``match_level``: the
        stream's level is measured on its first :attr:`Stream.LEVEL_SECONDS` of audio, which it
        holds back until then, and a stream far quieter or louder than the training audio is
        moved to its level from the start (:meth:`level_shift`)."""
        self.require("asr", verb="stream()")
        return Stream(self, match_level=match_level)


def fbank_of(wav: torch.Tensor, settings, extractor=None) -> torch.Tensor:
    from auden_kit.data.features import fbank_from_waveform

    if wav.numel() < int(settings.frame_length * settings.sample_rate):
        return torch.zeros(0, settings.num_features)
    return fbank_from_waveform(wav, settings, extractor)


class Stream:
    """Feed audio as it arrives; read the partial result; finish for the final one.

    ``accept(samples, sample_rate)`` takes any number of samples (resampled to the model's rate by a
    :class:`~auden_kit.data.audio.StreamResampler`, equal to resampling the whole stream); features
    are computed online (:class:`~auden_kit.data.features.OnlineFbank`, equal to the
    whole-file features) and encoded chunk by chunk by the causal encoder. Until the stream holds
    a signal (:func:`~auden_kit.data.pauses.no_signal`: digital silence so far), its result is the
    task's empty one, as offline decoding gives for a silent file. With ``match_level`` and a
    model folder that records its training level, the first ``LEVEL_SECONDS`` of audio (or up
    to ``HOLD_MAX_SECONDS`` until it holds speech) are held back to measure the stream's level;
    from then on every sample is decoded at the gain :meth:`Model.level_shift` gives (``shift_db``).
    """

    LEVEL_SECONDS = 2.0
    HOLD_MAX_SECONDS = 10.0

    def __init__(self, m: Model, cut_id: str = "stream", match_level: bool = True):
        from auden_kit.data.features import OnlineFbank

        self.m = m
        self.cut_id = cut_id
        self.decoder = m.task.streaming_decoder(m.model)
        self.fbank = OnlineFbank(m.features)
        self.resampler = None
        self.finished = False
        self.heard = False  # a signal has arrived (checked on each piece plus the last 0.25 s before it)
        self._tail = torch.zeros(0)
        self.gain = None if match_level and has_level_stats(m.assets.data_stats) else 1.0  # None: not known yet
        self.shift_db = 0.0
        self._held: list[torch.Tensor] = []  # model-rate samples held back until the gain is known

    def accept(self, samples, sample_rate: int) -> None:
        from auden_kit.data.audio import StreamResampler, check_waveform, float_samples

        if self.finished:
            raise UserError("this stream is finished; start a new one with stream()")
        x = float_samples(samples).flatten()  # int16 from a microphone or a WAV pipe: full scale
        check_waveform(x, self.cut_id)
        if self.resampler is None:
            self.resampler = StreamResampler(int(sample_rate), self.m.features.sample_rate)
        elif self.resampler.sr_in != int(sample_rate):
            raise UserError(f"stream '{self.cut_id}': the sample rate changed from {self.resampler.sr_in} to "
                            f"{sample_rate} Hz; start a new stream")
        if not self.heard and x.numel():
            from auden_kit.data.pauses import no_signal

            seen = torch.cat([self._tail, x])
            self.heard = not no_signal(seen, int(sample_rate))
            self._tail = seen[-max(1, int(sample_rate) // 4):]
        self._feed(self.resampler.accept(x))

    def _feed(self, x: torch.Tensor, last: bool = False) -> None:
        if self.gain is None:  # measuring the stream's level
            self._held.append(x)
            x = torch.cat(self._held)
            rate = self.m.features.sample_rate
            if x.numel() < self.LEVEL_SECONDS * rate and not last:
                return
            feats = fbank_of(x, self.m.features, self.m._extractor)
            if (speech_level_db(feats, self.m.features.num_mel_bins) is None
                    and x.numel() < self.HOLD_MAX_SECONDS * rate and not last):
                return  # no speech yet: hold on
            self.shift_db = self.m.level_shift(feats, self.cut_id)
            self.gain, self._held = 10 ** (self.shift_db / 20), []
        if self.gain != 1.0:
            x = x * self.gain
        feats = self.fbank.accept(x)
        if feats.shape[0]:
            self.decoder.accept(feats.unsqueeze(0))

    @property
    def partial(self):
        """The result so far (text, tokens, times)."""
        if not self.heard:
            return self.m.task.silent_result(self.cut_id)
        hyp = self.decoder.search.hyps[0]
        return self.m.task.streaming_result(self.m.model, hyp, self.cut_id)

    def finish(self):
        if not self.finished:
            if self.resampler is not None:
                self._feed(self.resampler.finish(), last=True)
            feats = self.fbank.finish()
            if feats.shape[0]:
                self.decoder.accept(feats.unsqueeze(0))
            self.decoder.finish()
            self.finished = True
        return self.partial


def load(model_dir: Union[str, Path], device: str = "cpu") -> Model:
    """Load a model folder (from ``auden-kit average``) for inference on ``device``."""
    from auden_kit.hub import load_pretrained

    try:
        torch.device(device)
    except (RuntimeError, TypeError):
        raise UserError(f"device '{device}' is not a torch device: use 'cpu', 'cuda' or 'cuda:N'") from None
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device '{device}' was asked for but no GPU is visible (use device='cpu')")
    return Model(load_pretrained(model_dir, device=device), device=device)


__all__ = ["Model", "Stream", "load", "speech_segments", "split_at_pauses"]
