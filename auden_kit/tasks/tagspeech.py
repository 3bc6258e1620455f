"""Diarized multi-speaker ASR, TagSpeech-style: who spoke what and when, from one model.

Two encoders read the same fbank: a *semantic* one (the encoder of an ASR model folder) and a
*voice* one (the encoder of a voice model folder); both are frozen by default. Their frames are
fused (``fusion``: ``concat`` = one projection of both, ``add`` = a projection of each, summed,
``semantic`` = the voice stream left out, an ablation) and carry **time anchors**: a fixed
sinusoid of each frame's time, in the same units and basis as the decoder's time tokens, so
cross-attention can find "the frames at 3.2 s" by matching (TagSpeech inserts numeric anchor
tokens every 1.28 s into both streams for the same purpose).

An attention decoder writes one sequence per window over one vocabulary::

    [ text pieces (the tokenizer's) | time tokens, one per time_bin seconds | speaker tokens ]

one segment at a time, ordered by start: ``<t_start> <spk_k> words... <t_end>``. Speakers are
numbered by order of first appearance in the window. Decoding is **grammar-constrained**: a
logit mask allows only time -> speaker -> words -> time, starts that never go back, ends after
their start, a new speaker only as the next number, times inside the window; a length cap
closes the last segment. Every output therefore parses into segments (fail rate 0 by
construction); :func:`parse_tokens` still accepts any token sequence (an unconstrained or
foreign decoder's) and never raises.

Long recordings are decoded in windows (:mod:`auden_kit.api` splits at pauses); each window's
speakers carry a voice embedding (``link_embedding``: the voice model's utterance embeddings of
their segments, or the voice stream averaged over them), and
:meth:`TagSpeechTask.merge` links them across windows (:func:`auden_kit.clustering.agglomerate`:
agglomerative clustering of all windows' speakers on cosine similarity down to
``link_threshold``, two speakers of one window never joined), so speaker labels are global.

Results: :class:`~auden_kit.results.SegmentsResult`; metrics (cpWER, tcpWER, DER, speaker
counting): :mod:`auden_kit.metrics.diarization`; file formats: :mod:`auden_kit.data.segments`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from auden_kit.clustering import agglomerate
from auden_kit.data.features import PAD_VALUE
from auden_kit.data.pauses import feature_log_energy, speech_frames
from auden_kit.data.segments import SegmentFilter, cut_segments
from auden_kit.decoding import Hypothesis
from auden_kit.decoding.ctc import ctc_greedy
from auden_kit.decoding.transducer import greedy_search
from auden_kit.errors import UserError
from auden_kit.heads.attention_decoder import AttentionDecoder
from auden_kit.heads.transducer import Joiner, StatelessDecoder
from auden_kit.hub import build_encoder, encoder_config
from auden_kit.results import Segment, SegmentsResult, shift_segments
from auden_kit.tasks.base import ModelAssets, Task
from auden_kit.tokenizers import SPACE

log = logging.getLogger(__name__)

FUSIONS = ("concat", "add", "semantic")
MIN_REREAD_FRAMES = 20  # words_from=asr: stretches of speech shorter than 0.2 s are not read
REGROUP_ROUNDS = 10  # voice_regroup: at most this many rounds of moving pieces (it stops when none moves)
WORD_SOURCES = ("decoder", "ctc", "transducer", "asr")
GENDERS = ("m", "f", "")  # gender tokens: male, female, unknown


@dataclasses.dataclass
class TagSpeechModelConfig:
    """``semantic_model`` / ``voice_model``: model folders whose encoders (weights and settings)
    start the model; their settings are copied into ``semantic_encoder*`` / ``voice_encoder*`` on
    first use, so a saved tagspeech folder stands alone."""

    semantic_model: str = ""
    voice_model: str = ""
    semantic_encoder_type: str = ""
    semantic_encoder: Any = dataclasses.field(default_factory=dict)
    voice_encoder_type: str = ""
    voice_encoder: Any = dataclasses.field(default_factory=dict)
    # the semantic model's CTC head (when it has one) turns its frames into token posteriors that
    # join the semantic stream: the words are then spikes to copy rather than features to learn
    # to read. Measured on mini_synth_meeting (RESULTS.md). Set from the folder on first use
    semantic_ctc: bool = True
    semantic_vocab: int = 0
    freeze_semantic: bool = True
    freeze_voice: bool = True
    fusion: str = "concat"
    time_anchors: bool = True
    d_model: int = 256
    decoder_layers: int = 4
    decoder_heads: int = 4
    decoder_ff_dim: int = 1024
    dropout: float = 0.1
    # dropout on the decoder's attention weights over the encoder frames (ESPnet's decoders default
    # to 0 too): over minute-long windows the costliest op of a training step. mini_synth_meeting:
    # 0.1 -> 0 made training 711 -> 600 s, test cpWER 34.19 -> 31.75 (same seed, RESULTS.md)
    cross_attention_dropout: float = 0.0
    time_bin: float = 0.08  # seconds per time token
    max_window: float = 60.0  # longest window (seconds) the time tokens cover
    max_speakers: int = 8  # speaker tokens per window
    label_smoothing: float = 0.1
    # guided attention: the last decoder layer's cross-attention (mean over heads) of every token
    # of a segment is pulled into that segment's time span (+- align_margin s) by
    # align_loss_scale * -log(attention mass inside); 0: off. Measured on mini_synth_meeting
    # (RESULTS.md): it decides whether the decoder learns to attend within a CPU budget
    align_loss_scale: float = 1.0
    align_margin: float = 0.2
    # time tokens are predicted by pointing at memory frames (logit of a time bin = query of the
    # decoder state . key of the frames in that bin) instead of from a softmax row per bin: a
    # time is *where* the decoder looks, not a class to memorise. Measured on mini_synth_meeting
    # (RESULTS.md): with a softmax row per bin the start/end times stayed ~1 s off
    time_pointer: bool = True
    # word tokens copy from the semantic stream's CTC posteriors: a pointer over memory frames
    # (its own query/key) reads the attended frames' CTC distribution, whose log is added to the
    # text-token logits (needs semantic_ctc and the ASR model's tokenizer, which tagspeech uses)
    word_pointer: bool = True
    # speaker tokens compare voices: at a speaker token, each speaker already in the output gets
    # scale * cosine(voice of the new segment's first speaker_window seconds, that speaker's
    # voice over its earlier segments), the next new number scale * a learned threshold (both
    # learned; the voice frames pass a learned identity-initialised projection), added to the
    # decoder's own speaker logits: clustering inside the decoder instead of learning voices
    # behind arbitrary speaker numbers
    speaker_pointer: bool = True
    speaker_window: float = 1.5
    max_tokens_per_second: float = 15.0  # output length cap while decoding
    # decoding never repeats an n-gram of text pieces within one segment (0: off): a young or
    # unsure decoder's loops ("and the king and the king ...") end at their first repeat
    no_repeat_ngram: int = 4
    # decoding bounds a segment's length by what it says: its end at most segment_base_seconds +
    # seconds_per_piece x its text pieces after its start (0: off), so one bad end time cannot
    # swallow the rest of the window (measured on mini_synth_meeting: RESULTS.md)
    seconds_per_piece: float = 1.0
    segment_base_seconds: float = 2.0
    # where a decoded segment's words come from: "decoder" (its own text tokens), or the semantic
    # ASR model's own greedy search over the semantic stream, "ctc" or "transducer" (its
    # prediction network and joiner are then part of this model, frozen): its tokens whose time
    # falls in the segment (the decoder gives who and when; a token in several segments goes to
    # the one that started last, a token in none to the nearest; a segment that gets no token
    # keeps the decoder's words). "asr": the ASR model reads each stretch of speech between pauses
    # of the window again on its own, as it was trained (utterances, not windows of overlapping
    # chunks), with its transducer (its CTC head when it has none), and its timed tokens go to
    # the segments the same way (measured on mini_synth_meeting: RESULTS.md)
    words_from: str = "decoder"
    reread_max_seconds: float = 30.0  # words_from=asr: longer stretches of speech are cut at their quietest frame
    # decoding may end the output only once a segment ends within cover_speech seconds of the end
    # of the window's last stretch of speech (the features' energy; 0: off). The decoder ended
    # early on 7 of 40 mini_synth_meeting test windows (28 s of speech after its last segment):
    # test cpWER 38.37 -> 37.57, DER 24.55 -> 23.43; dev 42.96 -> 41.85 (RESULTS.md)
    cover_speech: float = 1.0
    # after decoding, cut each segment at the pauses inside it (and into regroup_chunk pieces), add
    # the speech no segment covers (regroup_fill), and give every piece to the speaker whose voice
    # (the speaker pointer's projected voice frames, averaged) is closest to its own, until none
    # moves (`regroup_by_voice`); needs words from the ASR (words_from other than decoder) and the
    # speaker pointer. mini_synth_meeting test cpWER 37.57 -> 27.78, DER 23.43 -> 11.66 (RESULTS.md)
    voice_regroup: bool = False
    # voice_regroup: pieces at least twice this long are cut into chunks of about this many seconds
    # first (0: pieces are whole stretches); chosen on mini_synth_meeting's dev meetings (1.0 / 1.25 /
    # 1.5 / 1.75 / 2.0 s: cpWER 36.22 / 34.84 / 35.79 / 36.17 / 36.86; whole stretches 37.60)
    regroup_chunk: float = 1.25
    # voice_regroup: speech in no decoded segment (at least this many seconds of a stretch) joins the
    # closest speaker too (0: off; the decoder left 47 of 1,026 s of test speech in no segment)
    regroup_fill: float = 0.3
    # a decoded speaker with less speech than this (seconds, in one window) is taken for a piece of
    # another: its segments join the remaining speaker whose voice is closest (0: off;
    # `absorb_short_speakers`). Diarization's minimum-speaker-duration rule; depends on how much
    # a speaker says in a window of the data, so chosen per recipe on dev meetings
    min_speaker_seconds: float = 0.0
    # after that: a speaker whose segments fall into two or more voices by the voice model's own
    # utterance embeddings (its pooling and embedding layers, copied from the voice folder into this
    # model) is split (`split_by_voice`): its segments of at least 0.8 s are clustered (average
    # linkage, stopping below this cosine); each group holding at least split_min_seconds is a voice,
    # smaller groups join the closest voice, and every voice but the longest becomes a new speaker
    # (0: off). The decoder's speaker pointer merges voices that the voice model tells apart
    # (mini_synth_meeting: 6 of 9 merged test speakers; RESULTS.md); chosen per recipe on dev meetings
    split_voices: float = 0.0
    split_min_seconds: float = 4.0
    # a frame classifier on the two streams (nobody / one / two or more talking; `OverlapHead`),
    # trained with the decoder on the reference segments (its cross-entropy per frame, times
    # overlap_loss_scale, added to the per-token loss). Decoding then gives every stretch it finds
    # overlapped (probability of two or more above overlap_threshold, at least overlap_min_seconds)
    # to a second speaker: the window's speaker other than the one already there whose voice is
    # closest (`add_overlap_talkers`). Off: decoding never writes two talkers at once
    overlap_head: bool = False
    overlap_loss_scale: float = 1.0
    overlap_threshold: float = 0.5
    overlap_min_seconds: float = 0.2
    # the voice folder's pooling and embedding settings (copied at set-up when split_voices > 0)
    voice_embedding: dict = dataclasses.field(default_factory=dict)
    # the semantic ASR model's transducer settings (copied from its folder for words_from=transducer)
    semantic_transducer: dict = dataclasses.field(default_factory=dict)
    # long recordings: average cosine similarity above which speakers of different windows are one
    # (`clustering.agglomerate`, each window's speakers kept apart); chosen on a 12-minute
    # recording of mini_synth_meeting's dev meetings (28 speakers), with link_embedding voice
    # (0.7 / 0.75 / 0.8 / 0.85 / 0.9: cpWER 58.66 / 56.22 / 51.68 / 49.30 / 56.33; frames at 0.8: 56.76)
    link_threshold: float = 0.85
    # what links them: "voice" (each speaker's segments read alone by the voice model: its
    # utterance embeddings, duration-weighted; needs the voice folder's embedding, which
    # split_voices > 0 loads) or "frames" (the mean of the speaker's voice-stream frames). The
    # 10-minute test recording (24 speakers), two trainings: cpWER 57.67 / 59.18 with frames at 0.8,
    # 49.25 / 50.63 with voice at 0.85
    link_embedding: str = "voice"
    # the encoders read windows in overlapping chunks of this many seconds (0: whole windows):
    # attention cost grows with the square of the length, and the encoders were trained on
    # utterances, not minutes (measured: 60 s windows cost 10 s per 200 s of audio whole)
    encoder_chunk: float = 8.0
    encoder_context: float = 0.5  # seconds of context on each side of a chunk, dropped from its output
    # train on the frozen encoders' outputs stored with the cuts (`auden-kit data stream-cache`):
    # each epoch then costs the decoder only; decoding new audio runs the encoders as usual
    cached_streams: bool = False
    # TagSpeech's training-data filter (its values: min_segment 0.5, max_segment 30,
    # max_chars_per_second 30, max_segments 10); every bound 0 = off. Training windows only.
    train_filter: SegmentFilter = dataclasses.field(default_factory=SegmentFilter)
    # a gender token after each speaker token (male, female, unknown; from the supervisions'
    # gender): `<t_start> <spk_k> <gender> words <t_end>`; decoding keeps a speaker's first gender
    gender_tokens: bool = False
    # the decoder: a Hugging Face causal LM from a local folder instead of the small decoder trained
    # from scratch (empty: the small one). TagSpeech's layout: the fused frames, llm_stack at a time,
    # pass a Linear-ReLU-Linear projector into the LM as a prefix with a time-anchor token every
    # llm_anchor_every seconds; the output tokens follow. The LM stays frozen ("frozen") or gets
    # LoRA adapters on the linear layers named in llm_lora_targets ("lora"); its own weights are
    # never saved: the model folder names llm_path, which decoding loads again
    llm_path: str = ""
    llm_train: str = "lora"
    llm_lora_rank: int = 8
    llm_lora_alpha: float = 16.0
    llm_lora_targets: list = dataclasses.field(default_factory=lambda: ["q_proj", "v_proj"])
    llm_stack: int = 4
    llm_anchor_every: float = 1.28
    llm_dtype: str = "float32"

    def validate(self):
        if not (self.semantic_model or self.semantic_encoder_type):
            raise UserError("config key 'model.semantic_model': give an ASR model folder (its encoder is the "
                            "semantic stream)")
        if self.fusion != "semantic" and not (self.voice_model or self.voice_encoder_type):
            raise UserError("config key 'model.voice_model': give a voice model folder (its encoder is the voice "
                            "stream), or model.fusion=semantic to leave the voice stream out")
        if self.fusion not in FUSIONS:
            raise UserError(f"config key 'model.fusion' must be one of {', '.join(FUSIONS)}, got '{self.fusion}'")
        if self.d_model % max(1, self.decoder_heads):
            raise UserError(f"config key 'model.d_model' ({self.d_model}) must be divisible by "
                            f"model.decoder_heads ({self.decoder_heads})")
        for k in ("time_bin", "max_window", "max_tokens_per_second", "speaker_window"):
            if getattr(self, k) <= 0:
                raise UserError(f"config key 'model.{k}' must be positive, got {getattr(self, k)}")
        if self.cached_streams and not (self.freeze_semantic and self.freeze_voice):
            raise UserError("config key 'model.cached_streams' needs frozen encoders (model.freeze_semantic and "
                            "model.freeze_voice true): a cache holds fixed outputs")
        if self.encoder_chunk < 0 or self.encoder_context < 0:
            raise UserError("config keys 'model.encoder_chunk' / 'model.encoder_context' must be >= 0")
        if self.align_loss_scale < 0 or self.align_margin < 0:
            raise UserError("config keys 'model.align_loss_scale' / 'model.align_margin' must be >= 0")
        if self.seconds_per_piece < 0 or self.segment_base_seconds < 0:
            raise UserError("config keys 'model.seconds_per_piece' / 'model.segment_base_seconds' must be >= 0 "
                            "(seconds_per_piece 0: no bound)")
        if self.words_from not in WORD_SOURCES:
            raise UserError(f"config key 'model.words_from' must be one of {', '.join(WORD_SOURCES)}, got "
                            f"'{self.words_from}'")
        if self.voice_regroup and self.words_from == "decoder":
            raise UserError("config key 'model.voice_regroup' cuts segments at pauses, which splits the decoder's "
                            "own words: set model.words_from (asr, ctc or transducer) or voice_regroup: false")
        if not 0 <= self.split_voices < 1:
            raise UserError(f"config key 'model.split_voices' must be a cosine in [0, 1) (0: off), got "
                            f"{self.split_voices}")
        if self.split_voices > 0 and self.fusion == "semantic":
            raise UserError("config key 'model.split_voices' needs the voice stream (model.fusion is semantic)")
        for k in ("regroup_chunk", "regroup_fill", "min_speaker_seconds", "split_min_seconds"):
            if getattr(self, k) < 0:
                raise UserError(f"config key 'model.{k}' must be >= 0 (0: off), got {getattr(self, k)}")
        if not 0 < self.overlap_threshold < 1:
            raise UserError(f"config key 'model.overlap_threshold' must be a probability in (0, 1), got "
                            f"{self.overlap_threshold}")
        if self.overlap_min_seconds < 0:
            raise UserError(f"config key 'model.overlap_min_seconds' must be >= 0, got {self.overlap_min_seconds}")
        if self.overlap_head and self.overlap_loss_scale <= 0:
            raise UserError(f"config key 'model.overlap_loss_scale' must be positive with model.overlap_head, got "
                            f"{self.overlap_loss_scale}")
        if self.cover_speech < 0:
            raise UserError(f"config key 'model.cover_speech' must be >= 0 (0: off), got {self.cover_speech}")
        if self.reread_max_seconds <= 0:
            raise UserError(f"config key 'model.reread_max_seconds' must be positive, got {self.reread_max_seconds}")
        if self.words_from == "ctc" and not self.semantic_ctc:
            raise UserError("config key 'model.words_from' is ctc but the semantic stream has no CTC head "
                            "(model.semantic_ctc with an ASR model folder that has one)")
        if self.no_repeat_ngram < 0:
            raise UserError(f"config key 'model.no_repeat_ngram' must be >= 0 (0: off), got {self.no_repeat_ngram}")
        if self.max_speakers < 1 or self.decoder_layers < 1:
            raise UserError("config keys 'model.max_speakers' / 'model.decoder_layers' must be >= 1")
        self.train_filter.check("model.train_filter")
        if self.llm_path and (self.llm_stack < 1 or self.llm_anchor_every <= 0):
            raise UserError("config keys 'model.llm_stack' / 'model.llm_anchor_every' must be positive")
        if self.link_embedding not in ("voice", "frames"):
            raise UserError(f"config key 'model.link_embedding' must be voice or frames, got '{self.link_embedding}'")
        if not -1 <= self.link_threshold <= 1:
            raise UserError(f"config key 'model.link_threshold' is a cosine similarity in [-1, 1], got "
                            f"{self.link_threshold}")

    @property
    def num_time_tokens(self) -> int:
        return int(round(self.max_window / self.time_bin)) + 1


# ---------------------------------------------------------------------------- vocabulary
@dataclasses.dataclass
class TagVocab:
    """Ids of the joint vocabulary: text pieces [0, text), then times, then speakers, then (when
    ``genders``) the gender tokens of :data:`GENDERS`."""

    text: int
    times: int
    speakers: int
    time_bin: float
    sos: int = 1
    eos: int = 1
    blank: int = 0
    unk: int = 2
    genders: int = 0

    @property
    def size(self) -> int:
        return self.text + self.times + self.speakers + self.genders

    def gender_id(self, g: str) -> int:
        return self.text + self.times + self.speakers + GENDERS.index(g if g in GENDERS else "")

    def gender_of(self, i: int) -> str:
        return GENDERS[i - self.text - self.times - self.speakers]

    def time_id(self, t: float) -> int:
        return self.text + min(max(int(round(t / self.time_bin)), 0), self.times - 1)

    def spk_id(self, k: int) -> int:
        return self.text + self.times + k

    def kind(self, i: int) -> str:
        if i < self.text:
            return "eos" if i == self.eos else ("word" if i not in (self.blank, self.unk, self.sos) else "other")
        if i < self.text + self.times:
            return "time"
        if i < self.text + self.times + self.speakers:
            return "spk"
        return "gender" if i < self.size else "other"

    def time_of(self, i: int) -> float:
        return (i - self.text) * self.time_bin

    def spk_of(self, i: int) -> int:
        return i - self.text - self.times


def segment_tokens(segs: list[Segment], vocab: TagVocab, tokenizer, cut_id: str = "",
                   spans: list | None = None) -> list[int]:
    """``<t_start> <spk_k> words <t_end>`` per segment with words, ordered by start; speakers
    numbered by first appearance; with gender tokens ``<t_start> <spk_k> <gender> words <t_end>``,
    a speaker's gender the first one its segments give (a speaker has one). ``spans`` (a list)
    receives each token's segment (start, end)."""
    order: dict[str, int] = {}
    out: list[int] = []
    gender: dict[str, str] = {}
    for s in segs:
        gender[s.speaker] = gender.get(s.speaker) or s.gender
    for s in sorted(segs, key=lambda s: (s.start, s.end)):
        words = tokenizer.encode(s.text) if s.text else []
        if not words:
            continue
        if s.speaker not in order:
            if len(order) >= vocab.speakers:
                raise UserError(f"cut '{cut_id}' has more than {vocab.speakers} speakers; raise config key "
                                "'model.max_speakers' or cut the recordings into shorter windows")
            order[s.speaker] = len(order)
        g = [vocab.gender_id(gender[s.speaker])] if vocab.genders else []
        toks = [vocab.time_id(s.start), vocab.spk_id(order[s.speaker]), *g, *words, vocab.time_id(s.end)]
        out += toks
        if spans is not None:
            spans += [(s.start, s.end)] * len(toks)
    return out


def absorb_short_speakers(segs: list[Segment], emb: dict, least: float) -> list[Segment]:
    """Speakers with less than ``least`` seconds of segments give them to the remaining speaker
    whose voice embedding (``emb``: {speaker: vector}) is most similar (cosine); the speakers left
    are renumbered spk1.. by first appearance. Nothing changes when no speaker, or every speaker,
    is that short (a window with one short utterance keeps it)."""
    dur: dict[str, float] = {}
    for sg in segs:
        dur[sg.speaker] = dur.get(sg.speaker, 0.0) + sg.end - sg.start
    keep = [k for k in dur if dur[k] >= least and k in emb]
    if not keep or len(keep) == len(dur):
        return segs
    unit = {k: np.asarray(v, dtype=np.float64) / (np.linalg.norm(v) + 1e-9) for k, v in emb.items()}
    to = {k: k if k in keep or k not in unit else max(keep, key=lambda q: float(unit[k] @ unit[q])) for k in dur}
    return renumber_speakers([dataclasses.replace(sg, speaker=to[sg.speaker]) for sg in segs])


def parse_tokens(ids: list[int], vocab: TagVocab, tokenizer, duration: float | None = None) -> list[Segment]:
    """Segments from any token sequence; never raises. Text before a start time or speaker is
    dropped; a segment without an end ends at the next start (or the window end); a segment
    without words is dropped; end < start is swapped."""
    segs: list[Segment] = []
    cur: dict | None = None
    limit = duration if duration is not None else (vocab.times - 1) * vocab.time_bin

    def close(end: float | None):
        nonlocal cur
        if cur and cur["words"] and cur.get("spk") is not None:
            a, b = cur["start"], end if end is not None else limit
            a, b = min(a, b), max(a, b)
            if b <= a:
                b = a + vocab.time_bin
            segs.append(Segment(round(a, 3), round(b, 3), f"spk{cur['spk'] + 1}",
                                tokenizer.decode(cur["words"]).strip(), cur.get("gender", "")))
        cur = None

    for i in ids:
        k = vocab.kind(int(i))
        if k == "eos":
            break
        if k == "time":
            t = vocab.time_of(int(i))
            if cur is None:
                cur = {"start": t, "spk": None, "words": []}
            elif cur["spk"] is None or not cur["words"]:
                cur["start"] = t  # two times in a row: the later one starts the segment
            else:
                close(t)
        elif k == "spk":
            if cur is not None and cur["words"]:
                close(None)
            if cur is None:
                cur = {"start": segs[-1].end if segs else 0.0, "spk": None, "words": []}
            cur["spk"] = vocab.spk_of(int(i))
        elif k == "gender" and cur is not None and cur.get("spk") is not None and not cur["words"]:
            cur["gender"] = vocab.gender_of(int(i))
        elif k == "word" and cur is not None and cur.get("spk") is not None:
            cur["words"].append(int(i))
    close(None)
    return segs


def timed_words(segs: list[Segment], hyp, frame_shift: float, tokenizer) -> list[Segment]:
    """Segments whose words are an ASR hypothesis's tokens (``hyp.tokens`` at output frames
    ``hyp.frames``, timed at the frame's centre) that fall in their time span, a word at a time
    (a piece without SentencePiece's word mark stays with the word before it, so no word is cut
    between segments; a word's time is its first piece's): a word inside several segments goes to
    the one that started last (an overlapping talker interrupts), a word inside none to the
    nearest segment; a segment that gets no word has none (keeping the decoder's own words there
    cost 4.6 to 4.8 cpWER points on mini_synth_meeting's dev meetings)."""
    if not segs:
        return segs
    piece = getattr(tokenizer, "id_to_piece", None)
    got: list[list[int]] = [[] for _ in segs]
    k = -1
    for tok, f in zip(hyp.tokens, hyp.frames):
        if k < 0 or piece is None or piece(int(tok)).startswith(SPACE):  # a new word: where does it go
            t = (f + 0.5) * frame_shift
            inside = [j for j, sg in enumerate(segs) if sg.start <= t <= sg.end]
            if inside:
                k = max(inside, key=lambda j: segs[j].start)
            else:
                k = min(range(len(segs)), key=lambda j: min(abs(segs[j].start - t), abs(segs[j].end - t)))
        got[k].append(tok)
    return [dataclasses.replace(sg, text=tokenizer.decode(g)) for sg, g in zip(segs, got)]


def regroup_by_voice(segs: list[Segment], stretches: list[tuple[float, float]], frames: Tensor,
                     frame_shift: float, chunk: float = 0.0, fill: float = 0.0) -> list[Segment]:
    """Decoded segments cut at the pauses inside them and each piece given to the speaker whose
    voice is closest to its own. ``stretches``: (start, end) seconds of speech between pauses;
    ``frames``: the window's voice frames (T, C), L2-normalised. A segment over several stretches
    becomes one piece per stretch (the first and last keep the segment's own edges), and with
    ``chunk`` > 0 a piece at least twice that long is cut into equal chunks of about ``chunk``
    seconds (talkers also change without a pause), and with ``fill`` > 0 speech that no segment
    covers (a stretch's part at least ``fill`` seconds long) becomes a piece too, first given to
    the speaker of the segment nearest in time. A piece's voice is the mean of its frames, a
    speaker's the length-weighted mean of its pieces' voices (normalised); a piece moves when
    another speaker's voice is closer than its own speaker's, and the speakers' voices are
    computed again until no piece moves (k-means started from the decoder's speakers). Pieces of
    one speaker that touch are joined. Text stays with the unsplit segments only (words come from
    the ASR afterwards); speakers are numbered again by first appearance."""
    pieces: list[Segment] = []
    for sg in segs:
        parts = [(max(sg.start, a), min(sg.end, b)) for a, b in stretches if min(sg.end, b) - max(sg.start, a) > 0.05]
        if len(parts) <= 1:
            pieces.append(sg)
            continue
        parts[0], parts[-1] = (sg.start, parts[0][1]), (parts[-1][0], sg.end)
        pieces += [dataclasses.replace(sg, start=round(a, 3), end=round(b, 3), text="") for a, b in parts]
    if fill > 0 and pieces:  # speech in no segment: a piece of the speaker nearest in time, to start with
        decoded = list(pieces)
        for a, b in uncovered(stretches, sorted((p.start, p.end) for p in decoded), fill):
            mid = (a + b) / 2
            near = min(decoded, key=lambda q: min(abs(q.start - mid), abs(q.end - mid)))
            pieces.append(dataclasses.replace(near, start=round(a, 3), end=round(b, 3), text=""))
        pieces.sort(key=lambda q: (q.start, q.end))
    if chunk > 0:
        fine = []
        for p in pieces:
            k = int((p.end - p.start) / chunk + 1e-6)  # whole chunks (times are rounded to ms)
            if k < 2:
                fine.append(p)
                continue
            w = (p.end - p.start) / k
            fine += [dataclasses.replace(p, start=round(p.start + j * w, 3), end=round(p.start + (j + 1) * w, 3),
                                         text="") for j in range(k)]
        pieces = fine
    n = frames.shape[0]
    if n == 0 or len({p.speaker for p in pieces}) < 2:
        return _join_touching(pieces)

    def voice_of(p: Segment) -> Tensor:
        a = min(int(p.start / frame_shift), n - 1)
        return nn.functional.normalize(frames[a: max(int(p.end / frame_shift), a + 1)].mean(0), dim=-1)

    own = torch.stack([voice_of(p) for p in pieces])
    weight = torch.tensor([p.end - p.start for p in pieces], dtype=own.dtype, device=own.device)
    for _ in range(REGROUP_ROUNDS):  # until no piece moves
        names = sorted({p.speaker for p in pieces})
        cent = torch.stack([(own * weight[:, None])[[p.speaker == s for p in pieces]].sum(0) for s in names])
        sim = own @ nn.functional.normalize(cent, dim=-1).T  # (pieces, speakers)
        best = sim.argmax(-1).tolist()
        new = [dataclasses.replace(p, speaker=names[b]) if float(sim[k, b]) > float(sim[k, names.index(p.speaker)])
               else p for k, (p, b) in enumerate(zip(pieces, best))]
        if [p.speaker for p in new] == [p.speaker for p in pieces]:
            break
        pieces = new
    return renumber_speakers(_join_touching(pieces))  # one speaker may have gone


SPLIT_MIN_SEGMENT = 0.8  # seconds: shorter segments are not embedded by split_by_voice (they follow their speaker)


def split_by_voice(segs: list[Segment], emb: dict, threshold: float, least: float) -> list[Segment]:
    """Speakers whose segments fall into two or more voices split. ``emb``: {segment index: voice
    embedding} (segments without one stay with their speaker). A speaker's embedded segments are
    clustered (average linkage on cosine similarity, stopping below ``threshold``); the groups
    holding at least ``least`` seconds are voices, and the segments of smaller groups (one odd
    segment, often overlapped speech) join the voice whose duration-weighted mean is closest, so
    that one outlier neither blocks a split nor becomes a speaker. With two or more voices, the
    longest keeps the speaker and each other becomes a new one. Speakers are renumbered spk1.. by
    first appearance."""
    out = list(segs)
    for spk in sorted({sg.speaker for sg in segs}):
        idx = [i for i, sg in enumerate(segs) if sg.speaker == spk and i in emb]
        if len(idx) < 2:
            continue
        x = np.stack([np.asarray(emb[i], dtype=np.float64) for i in idx])
        x /= np.linalg.norm(x, axis=1, keepdims=True) + 1e-9
        lab = np.array(agglomerate(x, threshold))
        w = np.array([segs[i].end - segs[i].start for i in idx])
        dur = np.array([w[lab == k].sum() for k in range(lab.max() + 1)])
        voices = [k for k in np.argsort(-dur, kind="stable") if dur[k] >= least]
        if len(voices) < 2:
            continue
        cent = np.stack([(x[lab == k] * w[lab == k, None]).sum(0) for k in voices])
        cent /= np.linalg.norm(cent, axis=1, keepdims=True) + 1e-9
        to = np.array([voices.index(k) if k in voices else int(np.argmax(cent @ x[j]))
                       for j, k in enumerate(lab)])
        for i, v in zip(idx, to):
            if v > 0:
                out[i] = dataclasses.replace(out[i], speaker=spk + "+" * int(v))
    return renumber_speakers(out)


def renumber_speakers(segs: list[Segment]) -> list[Segment]:
    """The same segments with their speakers named spk1.. again by first appearance."""
    order: dict[str, str] = {}
    for sg in segs:
        order.setdefault(sg.speaker, f"spk{len(order) + 1}")
    return [dataclasses.replace(sg, speaker=order[sg.speaker]) for sg in segs]


def uncovered(stretches: list[tuple[float, float]], spans: list[tuple[float, float]], least: float
              ) -> list[tuple[float, float]]:
    """The parts of ``stretches`` that no span of ``spans`` (sorted by start) covers, at least
    ``least`` seconds long."""
    out = []
    for a, b in stretches:
        t = a
        for s0, s1 in spans:
            if s1 <= t or s0 >= b:
                continue
            if s0 - t >= least:
                out.append((t, s0))
            t = max(t, s1)
        if b - t >= least:
            out.append((t, b))
    return out


def _join_touching(pieces: list[Segment]) -> list[Segment]:
    """Pieces of one speaker that touch or overlap (the next starts at most 20 ms after the
    previous one's end), joined into one segment: neighbouring chunks that kept their speaker, and
    decoded segments that met."""
    out: list[Segment] = []
    last: dict[str, int] = {}  # speaker -> index in out of its latest piece
    for p in sorted(pieces, key=lambda q: (q.start, q.end)):
        j = last.get(p.speaker)
        if j is not None and p.start - out[j].end <= 0.02:  # touching or overlapping: one span
            out[j] = dataclasses.replace(out[j], end=max(p.end, out[j].end),
                                         text=" ".join(t for t in (out[j].text, p.text) if t))
        else:
            last[p.speaker] = len(out)
            out.append(p)
    return out


def speaker_turns(tokens: list[int], vocab: TagVocab):
    """Walk an output token sequence with the :class:`Grammar`; yield (position, start bin of the
    segment, completed segments so far as (start_bin, end_bin, speaker)) at every speaker token
    position, i.e. the position whose token is the speaker of the segment that starts at that bin."""
    g = Grammar(vocab, vocab.times * vocab.time_bin, len(tokens) + 1)
    for u, t in enumerate(tokens):
        if g.state == "spk":
            yield u, g.start_bin, list(g.done)
        g.update(t)


class Grammar:
    """The output grammar as a state machine: ``mask()`` gives the tokens allowed next
    (True = allowed), ``update(token)`` follows one. States: ``start`` (a start time or the
    end), ``spk`` (a speaker: one seen before or the next new number), ``first`` (a word),
    ``words`` (a word or the end time); with gender tokens ``gender`` between ``spk`` and
    ``first`` (a speaker keeps the gender of its first segment). Starts never go back; an end comes after its start;
    times stay inside the window of ``dur`` seconds; within ``cap`` tokens the last segment is
    closed and the output ended."""

    def __init__(self, vocab: TagVocab, dur: float, cap: int, no_repeat_ngram: int = 0, seconds_per_piece: float = 0.0,
                 base_seconds: float = 2.0, speech_end: float = 0.0):
        self.v, self.cap, self.ngram = vocab, cap, no_repeat_ngram
        self.per_piece, self.base = seconds_per_piece, base_seconds
        self.seg: list[int] = []  # the text pieces of the segment being written
        self.spk = 0  # its speaker
        self.spk_gender: dict[int, int] = {}  # speaker -> its gender token
        self.done: list[tuple[int, int, int]] = []  # completed segments: (start bin, end bin, speaker)
        self.last_bin = max(1, min(vocab.times - 1, int(dur / vocab.time_bin + 0.5)))
        # the output does not end before a segment reaches this bin (speech seen in the input)
        self.speech_end_bin = min(int(speech_end / vocab.time_bin), self.last_bin)
        self.state, self.start_bin, self.n_spk, self.n = "start", 0, 0, 0
        words = torch.zeros(vocab.size, dtype=torch.bool)
        words[: vocab.text] = True
        words[[vocab.blank, vocab.sos, vocab.eos, vocab.unk]] = False
        self.words = words

    def update(self, i: int) -> None:
        v, k = self.v, self.v.kind(i)
        self.n += 1
        if self.state == "start" and k == "time":
            self.state, self.start_bin = "spk", i - v.text
        elif self.state == "spk" and k == "spk":
            self.n_spk = max(self.n_spk, v.spk_of(i) + 1)
            self.state, self.seg, self.spk = "gender" if v.genders else "first", [], v.spk_of(i)
        elif self.state == "gender" and k == "gender":
            self.spk_gender.setdefault(self.spk, i)
            self.state = "first"
        elif self.state in ("first", "words") and k == "word":
            self.state = "words"
            self.seg.append(i)
        elif self.state == "words" and k == "time":
            self.state = "start"
            self.done.append((self.start_bin, i - v.text, self.spk))

    def mask(self) -> Tensor:
        v = self.v
        t0, t1 = v.text, v.text + v.times
        left = self.cap - self.n
        end_from = t0 + min(self.start_bin + 1, self.last_bin)
        end_to = t0 + self.last_bin + 1  # exclusive
        if self.per_piece > 0:  # a segment lasts at most base + per_piece x its pieces
            most = self.start_bin + int(math.ceil((self.base + self.per_piece * len(self.seg)) / v.time_bin))
            end_to = max(end_from + 1, min(end_to, t0 + most + 1))
        if self.state == "start":
            m = torch.zeros(v.size, dtype=torch.bool)
            if left >= 5 and self.start_bin < self.last_bin:  # room for a segment: time, speaker, word, time, eos
                m[t0 + self.start_bin: t0 + self.last_bin] = True  # a start leaves room for a later end
            reached = max((e for _, e, _ in self.done), default=0) >= self.speech_end_bin
            m[v.eos] = reached or not bool(m.any())
        elif self.state == "spk":
            m = torch.zeros(v.size, dtype=torch.bool)
            m[t1: t1 + min(self.n_spk + 1, v.speakers)] = True
        elif self.state == "gender":
            m = torch.zeros(v.size, dtype=torch.bool)
            if self.spk in self.spk_gender:
                m[self.spk_gender[self.spk]] = True
            else:
                m[t1 + v.speakers: v.size] = True
        elif self.state == "first" or (self.state == "words" and left > 2):
            m = self.words.clone()
            if self.state == "words":
                m[end_from: end_to] = True
                n, seg = self.ngram, self.seg
                if n > 1 and len(seg) >= n - 1:  # no n-gram twice in a segment
                    tail = seg[len(seg) - n + 1:]
                    m[[seg[j + n - 1] for j in range(len(seg) - n + 1) if seg[j: j + n - 1] == tail]] = False
        else:  # words, out of room: close the segment
            m = torch.zeros(v.size, dtype=torch.bool)
            m[end_from: end_to] = True
        return m


def smoothed_ce(logits: Tensor, y: Tensor, eps: float) -> Tensor:
    """Label-smoothed cross-entropy summed over positions with y >= 0, the smoothing spread over
    the classes that are possible at a position (logits above -1e3: pointer bins past the input
    are not)."""
    lp = logits.float().log_softmax(-1)
    keep = y >= 0
    nll = -lp.gather(-1, y.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    if eps > 0:
        valid = logits > -1e3
        smooth = -lp.masked_fill(~valid, 0.0).sum(-1) / valid.sum(-1).clamp(min=1)
        nll = (1 - eps) * nll + eps * smooth
    return nll[keep].sum()


# ---------------------------------------------------------------------------- model
def sinusoids(pos: Tensor, dim: int) -> Tensor:
    """Fixed sin/cos features (..., dim) of positions ``pos`` (any real values)."""
    half = dim // 2
    freq = torch.exp(-math.log(10000.0) * torch.arange(half, device=pos.device, dtype=torch.float32) / half)
    ang = pos.float().unsqueeze(-1) * freq
    out = torch.cat([ang.sin(), ang.cos()], -1)
    return nn.functional.pad(out, (0, dim - 2 * half))


def speaker_space(proj: nn.Module, voice: Tensor) -> Tensor:
    """Voice frames (T, C) where the speaker pointer compares voices (``proj``: its learned
    projection), L2-normalised; ``voice_regroup`` compares pieces there too."""
    return nn.functional.normalize(proj(voice.float()), dim=-1)


class OverlapHead(nn.Module):
    """Per frame of the semantic and voice streams (concatenated, not trained through): logits of
    nobody / one / two or more talkers. Residual dilated convolutions (kernel 5, dilations 1, 2, 4,
    8: about +-1.2 s of context at 40 ms frames); a 2-layer BiLSTM of the same width told overlap
    apart as well on mini_synth_meeting's dev meetings and made training 35 % slower on CPU."""

    def __init__(self, dim: int, hidden: int = 128, dilations: tuple = (1, 2, 4, 8)):
        super().__init__()
        self.inp = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden))
        self.convs = nn.ModuleList(nn.Conv1d(hidden, hidden, 5, padding=2 * d, dilation=d) for d in dilations)
        self.out = nn.Linear(hidden, 3)

    def forward(self, sem: Tensor, voice: Tensor | None, lens: Tensor) -> Tensor:
        """Logits (N, T, 3); frames at or past a row's length ``lens`` are zeroed inside, so a
        row's output does not depend on what it is batched with."""
        x = sem if voice is None else torch.cat([sem[:, : voice.shape[1]], voice[:, : sem.shape[1]]], -1)
        keep = (torch.arange(x.shape[1], device=x.device)[None] < lens.to(x.device)[:, None]).unsqueeze(1)
        h = self.inp(x.detach()).transpose(1, 2) * keep
        for conv in self.convs:
            h = (h + torch.relu(conv(h))) * keep
        return self.out(h.transpose(1, 2))


def talker_counts(segs: list[Segment], T: int, shift: float) -> Tensor:
    """(T,) frame classes of reference segments: 0 nobody, 1 one talker, 2 two or more."""
    y = torch.zeros(T, dtype=torch.long)
    for sg in segs:
        y[max(0, int(round(sg.start / shift))): max(0, min(T, int(round(sg.end / shift))))] += 1
    return y.clamp(max=2)


def overlap_regions(p: Tensor, shift: float, threshold: float, least: float) -> list[tuple[float, float]]:
    """Runs of frames whose probability ``p`` (T,) of two or more talkers is above ``threshold``,
    in seconds, those shorter than ``least`` dropped."""
    on = (p > threshold).tolist() + [False]
    out, a = [], None
    for t, v in enumerate(on):
        if v and a is None:
            a = t
        elif not v and a is not None:
            if (t - a) * shift >= least:
                out.append((a * shift, t * shift))
            a = None
    return out


def add_overlap_talkers(segs: list[Segment], regions: list[tuple[float, float]], region_voice, emb: dict
                        ) -> list[Segment]:
    """``segs`` with a second speaker in each overlapped region where only one is: of the other
    speakers, the one whose voice ``emb[spk]`` is closest to ``region_voice(a, b)`` (cosine; only
    the speakers with a segment near the region were tried first: within 2 / 3 / 4 / 6 s, or any,
    gave mini_synth_meeting dev DER 7.68 / 7.52 / 7.08 / 6.90 / 6.67). Its segment that ends in or
    just before the region (or starts in or just after it) is stretched over the region; else the
    region becomes a segment of its own, without words (no words are moved)."""
    segs = list(segs)
    for a, b in regions:
        cover: dict[str, float] = {}
        for sg in segs:
            cover[sg.speaker] = cover.get(sg.speaker, 0.0) + max(0.0, min(b, sg.end) - max(a, sg.start))
        there = [k for k, v in cover.items() if v >= 0.5 * (b - a)]
        if len(there) != 1:
            continue
        near = {sg.speaker for sg in segs if sg.speaker != there[0] and sg.speaker in emb}
        if not near:
            continue
        v = nn.functional.normalize(region_voice(a, b).float(), dim=-1)
        best = max(sorted(near), key=lambda k: float(v @ nn.functional.normalize(torch.tensor(emb[k], device=v.device), dim=-1)))
        ends = [j for j, sg in enumerate(segs) if sg.speaker == best and a - 0.3 <= sg.end <= b]
        starts = [j for j, sg in enumerate(segs) if sg.speaker == best and a <= sg.start <= b + 0.3]
        if ends:
            j = max(ends, key=lambda j: segs[j].end)
            segs[j] = dataclasses.replace(segs[j], end=b)
        elif starts:
            j = min(starts, key=lambda j: segs[j].start)
            segs[j] = dataclasses.replace(segs[j], start=a)
        else:
            segs.append(Segment(start=a, end=b, speaker=best))
    return sorted(segs, key=lambda sg: (sg.start, sg.end))


# input frames (10 ms) that chunked_encode gives the encoder at once: its transient memory in
# decoding (attention, feed-forward) follows this, not the batch (bench/meeting_decode.py)
CHUNK_FRAMES_PER_CALL = 12000


def chunked_encode(enc, x: Tensor, x_lens: Tensor, chunk: int, ctx: int) -> tuple[Tensor, Tensor]:
    """``enc(x, x_lens)`` computed on overlapping chunks: each chunk of ``chunk`` input frames is
    encoded with ``ctx`` frames of context on each side, and the output frames of its central
    part are placed at their own time, so outputs line up with the unchunked ones (times stay
    exact over any length) while the cost grows linearly with the length."""
    N, T, _ = x.shape
    if chunk <= 0 or T <= chunk + 2 * ctx:
        return enc(x, x_lens)
    sub = max(1, int(round(enc.frame_shift / 0.01)))
    chunk = max(sub, chunk // sub * sub)
    ctx = ctx // sub * sub
    rows, where = [], []  # (batch row, output offset, left frames to drop, frames to keep)
    for n, L in enumerate(x_lens.tolist()):
        for a0 in range(0, L, chunk):
            a, b = max(0, a0 - ctx), min(L, a0 + chunk + ctx)
            rows.append(x[n, a:b])
            where.append((n, a0 // sub, (a0 - a) // sub, (min(L, a0 + chunk) - a0 + sub - 1) // sub))
    full = torch.div(x_lens + sub - 1, sub, rounding_mode="floor")
    y, got = None, torch.zeros(N, dtype=torch.long)
    per_call = max(1, CHUNK_FRAMES_PER_CALL // (chunk + 2 * ctx))  # rows encoded together
    for g in range(0, len(rows), per_call):
        part = rows[g: g + per_call]
        lens = torch.tensor([r.shape[0] for r in part], device=x.device)
        batch = torch.zeros(len(part), int(lens.max()), x.shape[2], dtype=x.dtype, device=x.device)
        for i, r in enumerate(part):
            batch[i, : r.shape[0]] = r
        out, out_lens = enc(batch, lens)
        if y is None:
            y = out.new_zeros(N, int(full.max()), out.shape[2])
        for i, (n, off, left, keep) in enumerate(where[g: g + per_call]):
            keep = max(0, min(keep, int(out_lens[i]) - left, y.shape[1] - off))
            y[n, off: off + keep] = out[i, left: left + keep]
            got[n] = max(int(got[n]), off + keep)
    return y, got.to(x_lens.device)


class TagEmbedding(nn.Module):
    """Token embeddings whose time tokens also hold the time sinusoid the memory anchors use
    (scaled by 1/sqrt(d): the decoder multiplies embeddings by sqrt(d))."""

    def __init__(self, vocab: TagVocab, d_model: int, anchors: bool):
        super().__init__()
        self.emb = nn.Embedding(vocab.size, d_model)
        nn.init.normal_(self.emb.weight, std=d_model ** -0.5)
        fixed = torch.zeros(vocab.size, d_model)
        if anchors:
            fixed[vocab.text: vocab.text + vocab.times] = sinusoids(torch.arange(vocab.times), d_model) / math.sqrt(d_model)
        self.register_buffer("fixed", fixed, persistent=False)

    @property
    def weight(self) -> Tensor:
        return self.emb.weight

    def forward(self, ids: Tensor) -> Tensor:
        return self.emb(ids) + self.fixed[ids]


class TagSpeechModel(nn.Module):
    def __init__(self, cfg: TagSpeechModelConfig, vocab: TagVocab, pieces: list[str] | None = None):
        """``pieces``: the text tokenizer's pieces (an LLM decoder starts their embeddings from its own)."""
        super().__init__()
        self.cfg, self.vocab = cfg, vocab
        sem_cfg = encoder_config(cfg.semantic_encoder_type, cfg.semantic_encoder)
        self.semantic = build_encoder(cfg.semantic_encoder_type, sem_cfg)
        # each stream reads the leading feature rows it was trained on: fbank, or fbank + pitch (appended)
        self.input_dims = {"semantic": getattr(sem_cfg, "feature_dim", None)}
        d_sem = self.semantic.output_dim
        self.voice = None
        if cfg.fusion != "semantic":
            voice_cfg = encoder_config(cfg.voice_encoder_type, cfg.voice_encoder)
            self.voice = build_encoder(cfg.voice_encoder_type, voice_cfg)
            self.input_dims["voice"] = getattr(voice_cfg, "feature_dim", None)
        d_voice = self.voice.output_dim if self.voice is not None else 0
        self.voice_pool = self.voice_embed = None
        if self.voice is not None and cfg.split_voices > 0 and not cfg.voice_embedding:
            raise UserError("config key 'model.split_voices' needs the voice model's embedding layers, which "
                            "this model was trained without: set split_voices before training")
        if self.voice is not None and cfg.voice_embedding:  # the voice model's own utterance embedding
            from auden_kit.heads.pooling import build_pooling

            self.voice_pool = build_pooling(cfg.voice_embedding["pooling"], d_voice)
            self.voice_embed = nn.Linear(self.voice_pool.output_dim(d_voice), int(cfg.voice_embedding["embed_dim"]))
            self.voice_pool.requires_grad_(False)
            self.voice_embed.requires_grad_(False)
        self.semantic_ctc = None
        if cfg.semantic_ctc and cfg.semantic_vocab:
            self.semantic_ctc = nn.Linear(d_sem, cfg.semantic_vocab)
            d_sem += cfg.semantic_vocab
        if cfg.fusion == "concat":
            self.fuse = nn.Linear(d_sem + d_voice, cfg.d_model)
        else:
            self.fuse = nn.Linear(d_sem, cfg.d_model)
            if cfg.fusion == "add":
                self.fuse_voice = nn.Linear(d_voice, cfg.d_model)
        self.frame_shift = float(self.semantic.frame_shift)
        self.overlap = OverlapHead(self.semantic.output_dim + d_voice) if cfg.overlap_head else None
        self.anchor_scale = nn.Parameter(torch.tensor(1.0)) if cfg.time_anchors else None
        if cfg.llm_path:
            from auden_kit.heads.llm_decoder import LLMDecoder, lexical_embeddings, load_local_lm

            lm = load_local_lm(cfg.llm_path, attentions=cfg.align_loss_scale > 0, dtype=cfg.llm_dtype)
            self.decoder = LLMDecoder(vocab.size, cfg.d_model, lm, vocab.sos, vocab.eos, self.frame_shift,
                                      vocab.time_id, cfg.llm_stack, cfg.llm_anchor_every, cfg.llm_train,
                                      cfg.llm_lora_rank, cfg.llm_lora_alpha, cfg.llm_lora_targets, cfg.dropout,
                                      lexical_embeddings(lm, cfg.llm_path, pieces or [], vocab.size))
        else:
            self.decoder = AttentionDecoder(vocab.size, cfg.d_model, cfg.d_model, cfg.decoder_layers,
                                            cfg.decoder_heads, cfg.decoder_ff_dim, cfg.dropout, sos_id=vocab.sos,
                                            eos_id=vocab.eos, max_len=2048)
        self.decoder.embed = TagEmbedding(vocab, cfg.d_model, cfg.time_anchors)
        self.decoder.cross_attention_dropout = cfg.cross_attention_dropout
        if cfg.time_pointer:
            self.time_query = nn.Linear(cfg.d_model, cfg.d_model)
            self.time_key = nn.Linear(cfg.d_model, cfg.d_model)
        self.semantic_rnnt = None
        if cfg.words_from == "asr" and not (cfg.semantic_transducer or self.semantic_ctc is not None):
            raise UserError("config key 'model.words_from' is asr but the semantic model has neither a transducer nor "
                            "a CTC head (model.semantic_ctc)")
        if cfg.words_from == "transducer" or (cfg.words_from == "asr" and cfg.semantic_transducer):
            t = cfg.semantic_transducer
            if not t:
                raise UserError("config key 'model.words_from' is transducer but the semantic model has no transducer "
                                "(model.use_transducer in its folder)")
            if t["vocab"] != vocab.text:
                raise UserError(f"config key 'model.words_from' is transducer but the semantic model's vocabulary "
                                f"({t['vocab']}) is not the text tokenizer's ({vocab.text})")
            self.semantic_rnnt = nn.ModuleDict({
                "decoder": StatelessDecoder(t["vocab"], t["decoder_dim"], blank_id=0, context_size=t["context_size"]),
                "joiner": Joiner(self.semantic.output_dim, t["decoder_dim"], t["joiner_dim"], t["vocab"])})
        self.copy_scale = None
        if cfg.words_from == "ctc" and (self.semantic_ctc is None or cfg.semantic_vocab != vocab.text):
            raise UserError(f"config key 'model.words_from' is ctc but the semantic model's CTC vocabulary "
                            f"({cfg.semantic_vocab}) is not the text tokenizer's ({vocab.text})")
        if cfg.word_pointer and self.semantic_ctc is not None and cfg.semantic_vocab != vocab.text:
            log.warning("model.word_pointer is off: the semantic model's CTC vocabulary (%d) is not the text "
                        "tokenizer's (%d)", cfg.semantic_vocab, vocab.text)
        elif cfg.word_pointer and self.semantic_ctc is not None:
            self.copy_query = nn.Linear(cfg.d_model, cfg.d_model)
            self.copy_key = nn.Linear(cfg.d_model, cfg.d_model)
            self.copy_scale = nn.Parameter(torch.tensor(1.0))
        self._copy_probs: Tensor | None = None  # (N, T, text) CTC posteriors of the last encode()
        # incremental decoding reads one memory for hundreds of steps: its pointer keys, computed once
        self._mem_keys: tuple | None = None  # (memory tensor, {name: keys})
        # the last encode()'s semantic stream and its CTC posteriors, which words_from reads after decoding
        self.semantic_frames: Tensor | None = None
        self.ctc_probs: Tensor | None = None
        self.spk_proj = None
        if cfg.speaker_pointer and self.voice is not None:
            self.spk_proj = nn.Linear(d_voice, d_voice)
            with torch.no_grad():
                self.spk_proj.weight.copy_(torch.eye(d_voice))
                self.spk_proj.bias.zero_()
            self.spk_scale = nn.Parameter(torch.tensor(10.0))
            self.spk_new = nn.Parameter(torch.tensor(0.5))  # cosine below which a voice is a new speaker
        if cfg.time_pointer or self.copy_scale is not None:
            self.decoder.output_fn = self.logits_with_pointer
        self.set_frozen()

    def logits_with_pointer(self, h: Tensor, mem: Tensor, mem_pad: Tensor) -> Tensor:
        """Decoder logits whose time-token columns are pointer scores over the memory frames:
        bin k = logsumexp of the scores of the frames it covers (the last frame stands for bins
        at the very end that the encoder's subsampling left without a frame of their own); bins
        past the input get -1e4."""
        v = self.vocab
        logits = self.decoder.out(h)
        text = logits[..., : v.text]
        if self.copy_scale is not None:
            text = text + self.copy_scale * self._copy_logprobs(h, mem, mem_pad)
        if not self.cfg.time_pointer:
            return torch.cat([text, logits[..., v.text:]], -1)
        scores = self.time_query(h) @ self._keys("time", mem).transpose(1, 2) / math.sqrt(h.shape[-1])  # (N, U, T)
        N, U, T = scores.shape
        r = max(1, int(round(v.time_bin / self.frame_shift)))
        lens = (~mem_pad).sum(-1).clamp(min=1)  # (N,)
        frame = torch.arange(v.times * r, device=h.device).view(v.times, r)
        idx = torch.minimum(frame[None], (lens - 1)[:, None, None])  # (N, times, r)
        g = scores.gather(2, idx.view(N, 1, -1).expand(N, U, -1)).view(N, U, v.times, r).logsumexp(-1)
        last = torch.ceil(lens * self.frame_shift / v.time_bin).long() + 1  # bins up to the input's end
        past = torch.arange(v.times, device=h.device)[None, :] > last[:, None]
        times = g.masked_fill(past[:, None, :], -1e4)
        return torch.cat([text, times, logits[..., v.text + v.times:]], -1)

    def _keys(self, name: str, mem: Tensor) -> Tensor:
        """``time_key(mem)`` or ``copy_key(mem)``; without autograd (search), computed once per
        memory tensor: a decoding step otherwise projected every memory frame again (measured: 40 %
        of decoding the dev meetings)."""
        layer = self.time_key if name == "time" else self.copy_key
        if torch.is_grad_enabled():
            return layer(mem)
        if self._mem_keys is None or self._mem_keys[0] is not mem:
            self._mem_keys = (mem, {})
        keys = self._mem_keys[1]
        if name not in keys:
            keys[name] = layer(mem)
        return keys[name]

    def speaker_frames(self, voice: Tensor, n: int) -> Tensor:
        """One window's voice frames (T, C), of which the first ``n`` are real, projected and
        normalised, as prefix sums (n + 1, C): what :meth:`speaker_bias` reads, once per window."""
        f = speaker_space(self.spk_proj, voice[: max(n, 1)])
        return nn.functional.pad(f.cumsum(0), (0, 0, 1, 0))  # cs[b] - cs[a] = sum of frames a..b-1

    def speaker_bias(self, cs: Tensor, start: int, done) -> Tensor:
        """The speaker pointer's logits (speakers,) for the segment starting at bin ``start`` after
        the completed segments ``done`` ((start bin, end bin, speaker)), from :meth:`speaker_frames`."""
        v, n = self.vocab, cs.shape[0] - 1
        per_bin = v.time_bin / self.frame_shift

        def span_sum(a_bin: float, b_bin: float) -> Tensor:
            a = min(int(a_bin * per_bin), n - 1)
            return cs[max(a + 1, min(int(math.ceil(b_bin * per_bin)), n))] - cs[a]

        cur = span_sum(start, start + self.cfg.speaker_window / v.time_bin)
        sums: dict[int, Tensor] = {}
        for s0, s1, k in done:
            sums[k] = sums.get(k, 0) + span_sum(s0, s1)
        bias = torch.zeros(v.speakers, device=cs.device)
        known = min(len(sums), v.speakers)
        if known:
            ref = torch.stack([sums.get(k, torch.zeros_like(cur)) for k in range(known)])
            bias[:known] = nn.functional.cosine_similarity(ref, cur[None], dim=-1)
        if known < v.speakers:
            bias[known] = self.spk_new
        return self.spk_scale * bias

    def _copy_logprobs(self, h: Tensor, mem: Tensor, mem_pad: Tensor) -> Tensor:
        """log of the CTC distribution (text tokens) at the frames a copy pointer attends: (N, U, text)."""
        probs = self._copy_probs
        if probs is None or probs.shape[:2] != mem.shape[:2]:
            raise RuntimeError("word pointer: the CTC posteriors of this memory are missing (call encode() first)")
        scores = self.copy_query(h) @ self._keys("copy", mem).transpose(1, 2) / math.sqrt(h.shape[-1])  # (N, U, T)
        att = scores.masked_fill(mem_pad[:, None, :], -1e4).softmax(-1)
        return (att @ probs[..., : self.vocab.text]).clamp(min=1e-6).log()

    def set_frozen(self):
        if self.semantic_ctc is not None:  # the ASR model's own heads: always as trained
            self.semantic_ctc.requires_grad_(False)
        if self.semantic_rnnt is not None:
            self.semantic_rnnt.requires_grad_(False)
        if self.cfg.freeze_semantic:
            self.semantic.requires_grad_(False)
        if self.voice is not None and self.cfg.freeze_voice:
            self.voice.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.voice_pool is not None:  # copied from the voice folder, never trained here
            self.voice_pool.eval()
        if self.cfg.freeze_semantic:  # frozen encoders run as at inference (no layer dropping, no noise)
            self.semantic.eval()
        if self.voice is not None and self.cfg.freeze_voice:
            self.voice.eval()
        return self

    def _run(self, enc, frozen: bool, x, x_lens):
        with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen):
            return chunked_encode(enc, x, x_lens, int(self.cfg.encoder_chunk * 100),
                                  int(self.cfg.encoder_context * 100))

    @torch.no_grad()
    def segment_embeddings(self, x: Tensor, spans: list[tuple[float, float]]) -> Tensor:
        """The voice model's utterance embeddings (len(spans), E) of stretches (seconds) of one
        window's features ``x`` (T, F), each read alone as the voice model reads an utterance."""
        rows = x[..., : self.input_dims["voice"]]
        feats = [rows[int(a * 100): max(int(b * 100), int(a * 100) + 1)] for a, b in spans]
        lens = torch.tensor([f.shape[0] for f in feats], device=x.device)
        padded = nn.utils.rnn.pad_sequence(feats, batch_first=True, padding_value=PAD_VALUE)
        enc, enc_lens = self._run(self.voice, True, padded, lens)
        return self.voice_embed(self.voice_pool(enc, enc_lens))

    def streams(self, x: Tensor, x_lens: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """The encoders' outputs: semantic (N, T, C), lengths, voice (N, T, C') or None. Each
        encoder reads the first rows of ``x`` it was trained on (the filterbank, then pitch)."""
        need = max(d or 0 for d in self.input_dims.values())
        if x.shape[-1] < need:
            raise UserError(f"the features have {x.shape[-1]} rows per frame but a stream reads {need} "
                            f"({self.input_dims}): a model trained on fbank + pitch needs features computed with "
                            "`auden-kit data fbank --pitch` and data.fbank.pitch=true")
        sem, lens = self._run(self.semantic, self.cfg.freeze_semantic, x[..., :self.input_dims["semantic"]], x_lens)
        voice = None
        if self.voice is not None:
            voice, _ = self._run(self.voice, self.cfg.freeze_voice, x[..., :self.input_dims["voice"]], x_lens)
        return sem, lens, voice

    def encode(self, x: Tensor, x_lens: Tensor, cached: dict | None = None) -> tuple[Tensor, Tensor, Tensor | None]:
        """Fused memory (N, T, d_model), its lengths, and the voice frames (N, T, C) or None.
        ``cached``: the streams read from the cuts (``semantic``, ``voice``, ``lens``) instead of
        running the encoders."""
        if cached is not None:
            sem, lens, voice = cached["semantic"], cached["lens"], cached.get("voice")
            if self.voice is None:
                voice = None
        else:
            sem, lens, voice = self.streams(x, x_lens)
        probs = None
        self.semantic_frames = sem
        if self.semantic_ctc is not None:
            probs = self.semantic_ctc(sem).softmax(-1)
            sem = torch.cat([sem, probs], -1)  # probabilities: spikes in [0, 1]
        if voice is not None:
            T = min(sem.shape[1], voice.shape[1])
            sem, voice, lens = sem[:, :T], voice[:, :T], lens.clamp(max=T)
            probs = probs[:, :T] if probs is not None else None
        # the word pointer reads them while decoding this memory (set here, read by logits_with_pointer)
        self._copy_probs = probs if self.copy_scale is not None else None
        self.ctc_probs = probs
        if self.cfg.fusion == "concat":
            mem = self.fuse(torch.cat([sem, voice], -1) if voice is not None else sem)
        else:
            mem = self.fuse(sem) + (self.fuse_voice(voice) if self.cfg.fusion == "add" else 0)
        if self.anchor_scale is not None:
            pos = torch.arange(mem.shape[1], device=mem.device) * (self.frame_shift / self.cfg.time_bin)
            mem = mem + self.anchor_scale * sinusoids(pos, mem.shape[-1]).to(mem.dtype)
        return mem, lens, voice


# ---------------------------------------------------------------------------- task
class TagSpeechTask(Task):
    name = "tagspeech"
    model_config_cls = TagSpeechModelConfig
    decode_methods = ("greedy",)
    metric = "cpwer"
    metric_lower_is_better = True
    validate_options = {"method": "greedy"}

    def __init__(self):
        super().__init__()
        self._sources: dict = {}

    # ------------------------------------------------------------------ set-up
    def build_assets(self, train_cfg, model_cfg, train_cuts) -> ModelAssets:
        assets = super().build_assets(train_cfg, model_cfg, train_cuts)
        if "text" not in assets.tokenizers and model_cfg.semantic_model:
            from auden_kit.hub import load_assets, read_model_config

            d = Path(model_cfg.semantic_model)
            src = load_assets(d, read_model_config(d))
            if "text" not in src.tokenizers:
                raise UserError(f"'{d}' has no text tokenizer; give one with config key 'tokenizer'")
            assets.tokenizers["text"] = src.tokenizers["text"]
            log.info("text tokenizer from the semantic model %s", d)
        return assets

    def setup(self, model_cfg: TagSpeechModelConfig, assets: ModelAssets) -> "TagSpeechTask":
        from auden_kit.hub import read_model_config

        self._sources = {}
        feats = {}
        for which in ("semantic", "voice"):
            path = getattr(model_cfg, f"{which}_model")
            if which == "voice" and model_cfg.fusion == "semantic":
                continue
            if getattr(model_cfg, f"{which}_encoder_type"):
                continue  # a saved tagspeech folder: its settings are complete
            cfg = read_model_config(path)
            m = cfg.get("model", {})
            setattr(model_cfg, f"{which}_encoder_type", m.get("encoder_type", "zipformer"))
            setattr(model_cfg, f"{which}_encoder", m.get("encoder", {}))
            if which == "semantic":
                from auden_kit.hub import load_assets
                from auden_kit.tasks.asr import AsrModelConfig

                def vocab():
                    return int(m.get("vocab_size") or 0) or load_assets(Path(path), cfg).tokenizer("text").vocab_size

                if model_cfg.words_from in ("transducer", "asr") and m.get("use_transducer", True):
                    d = AsrModelConfig()
                    model_cfg.semantic_transducer = {"vocab": vocab(), **{
                        k: int(m.get(k, getattr(d, k))) for k in ("decoder_dim", "joiner_dim", "context_size")}}
                model_cfg.semantic_ctc = bool(model_cfg.semantic_ctc and m.get("use_ctc"))
                if model_cfg.semantic_ctc:
                    model_cfg.semantic_vocab = vocab()
            if which == "voice" and model_cfg.split_voices > 0:
                from auden_kit.tasks.voice import VoiceModelConfig

                model_cfg.voice_embedding = {"pooling": m.get("pooling", VoiceModelConfig.pooling),
                                             "embed_dim": int(m.get("embed_dim", VoiceModelConfig.embed_dim))}
            self._sources[which] = Path(path)
            feats[which] = (cfg.get("features") or {}).get("num_mel_bins", 80)
        if len(set(feats.values())) > 1:
            raise UserError(f"the semantic and voice models read different filterbanks (mel bins: {feats}); both "
                            "streams read the same fbank (pitch rows, appended, may differ)")
        if model_cfg.llm_path and Path(model_cfg.llm_path).is_dir():  # the saved folder must find it from anywhere
            model_cfg.llm_path = str(Path(model_cfg.llm_path).resolve())
        super().setup(model_cfg, assets)
        tok = assets.tokenizer("text")
        self.vocab = TagVocab(text=tok.vocab_size, times=model_cfg.num_time_tokens, speakers=model_cfg.max_speakers,
                              time_bin=model_cfg.time_bin, sos=tok.sos_id, eos=tok.eos_id, blank=tok.blank_id,
                              unk=tok.unk_id, genders=len(GENDERS) if model_cfg.gender_tokens else 0)
        return self

    @property
    def tokenizer(self):
        return self.assets.tokenizer("text")

    def build_model(self) -> nn.Module:
        from auden_kit.hub import load_state

        tok = self.tokenizer
        model = TagSpeechModel(self.model_cfg, self.vocab, [tok.id_to_piece(i) for i in range(tok.vocab_size)])
        for which, path in self._sources.items():  # a new model: the encoders start from their folders
            state = load_state(path / "model.safetensors")
            enc = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
            if not enc:
                raise UserError(f"'{path}' holds no encoder weights (no 'encoder.*' keys)")
            getattr(model, which).load_state_dict(enc)
            log.info("%s encoder from %s", which, path)
            if which == "voice" and model.voice_embed is not None:
                if not any(k.startswith("embedding.") for k in state):
                    raise UserError(f"config key 'model.split_voices': '{path}' holds no utterance embedding "
                                    "('embedding.*' weights): it needs a voice model folder (task voice)")
                for name, mod in (("pooling", model.voice_pool), ("embedding", model.voice_embed)):
                    mod.load_state_dict({k[len(name) + 1:]: v for k, v in state.items() if k.startswith(name + ".")})
                log.info("voice stream: the voice model's utterance embedding, for split_voices")
            if which == "semantic" and model.semantic_ctc is not None:
                model.semantic_ctc.load_state_dict({"weight": state["ctc_output.1.weight"],
                                                    "bias": state["ctc_output.1.bias"]})
                log.info("semantic stream: the encoder output and its CTC posteriors")
            if which == "semantic" and model.semantic_rnnt is not None:
                model.semantic_rnnt.load_state_dict({k: v for k, v in state.items()
                                                     if k.startswith(("decoder.", "joiner."))})
                log.info("semantic stream: the ASR model's transducer gives the words")
        return model

    # ------------------------------------------------------------------ data
    def keep_training_cut(self, cut) -> bool:
        f = self.model_cfg.train_filter
        return not f.active or f(cut)  # every training cut, every epoch: no pass when the filter is off

    def batch_targets(self, cuts, train: bool) -> dict:
        tokens, refs, spans = [], [], []
        for c in cuts:
            if c.duration > self.model_cfg.max_window + 1e-3:
                raise UserError(f"cut '{c.id}' lasts {c.duration:.1f} s, longer than config key 'model.max_window' "
                                f"({self.model_cfg.max_window} s): cut recordings into windows (`auden-kit data "
                                "fbank --split windows --window N`) or raise it")
            segs = cut_segments(c)
            refs.append(segs)
            spans.append([])
            tokens.append(segment_tokens(segs, self.vocab, self.tokenizer, c.id, spans[-1]))
        out = {"tokens": tokens, "refs": refs, "spans": spans}
        have = all(STREAM_KEYS["semantic"] in (c.custom or {}) for c in cuts)
        if self.model_cfg.cached_streams and (train or have):  # decoding new cuts runs the encoders
            out["streams"] = load_streams(cuts, self.model_cfg.fusion != "semantic")
        return out

    # ------------------------------------------------------------------ training
    def compute_loss(self, model: TagSpeechModel, batch: dict, step: int):
        cfg = self.model_cfg
        mem, lens, voice = model.encode(batch["inputs"], batch["input_lens"], batch["targets"].get("streams"))
        tokens = batch["targets"]["tokens"]
        n = float(sum(len(t) + 1 for t in tokens))
        dec = model.decoder
        ys_in, ys_out, pad = dec._inputs(tokens, mem.device)
        logits, attn = dec.decode_with_attention(*dec.memory(mem, lens), ys_in, pad)
        if model.spk_proj is not None and voice is not None:
            logits = self._with_speaker_pointer(model, logits, tokens, voice, lens)
        ce = smoothed_ce(logits, ys_out, cfg.label_smoothing)
        loss, info = ce, {"ce": float(ce.detach())}
        if cfg.align_loss_scale > 0:
            inside, guided = self.attention_targets(batch["targets"]["spans"], attn.shape, model.frame_shift)
            mass = (attn.float() * inside.to(attn.device)).sum(-1).clamp(min=1e-6)
            align = -(mass.log() * guided.to(attn.device)).sum()
            loss = loss + cfg.align_loss_scale * align
            info.update(align=float(align.detach()),
                        attn_inside=float((mass * guided.to(attn.device)).sum().detach()))
        if model.overlap is not None:  # its mean over frames weighs as much as the mean over tokens
            ov = self.overlap_loss(model, voice, lens, batch["targets"]["refs"])
            loss = loss + cfg.overlap_loss_scale * n * ov
            info["overlap"] = float(ov.detach()) * n  # logs divide by n: the mean per frame
        return loss, {"loss": float(loss.detach()), **info}, n

    @staticmethod
    def overlap_loss(model: TagSpeechModel, voice: Tensor | None, lens: Tensor, refs: list) -> Tensor:
        """Mean cross-entropy per frame of the overlap head against the reference talker counts
        (two or more weighted twice: the rarest class, the one decoding acts on)."""
        logits = model.overlap(model.semantic_frames, voice, lens)
        T = logits.shape[1]
        y = torch.full((len(refs), T), -1, dtype=torch.long)
        for i, segs in enumerate(refs):
            n = min(T, int(lens[i]))
            y[i, :n] = talker_counts(segs, n, model.frame_shift)
        w = torch.tensor([1.0, 1.0, 2.0], device=logits.device)
        return nn.functional.cross_entropy(logits.float().transpose(1, 2), y.to(logits.device), weight=w,
                                           ignore_index=-1)

    def _with_speaker_pointer(self, model: TagSpeechModel, logits: Tensor, tokens: list, voice: Tensor,
                              lens: Tensor) -> Tensor:
        """``logits`` (N, U, V) with the speaker pointer added at the speaker-token positions."""
        v = self.vocab
        bias = torch.zeros(*logits.shape[:2], v.speakers, device=logits.device)
        for i, seq in enumerate(tokens):
            cs = model.speaker_frames(voice[i], int(lens[i]))
            for u, start, done in speaker_turns(seq, v):
                bias[i, u] = model.speaker_bias(cs, start, done)
        t1 = v.text + v.times
        return torch.cat([logits[..., :t1], logits[..., t1: t1 + v.speakers] + bias, logits[..., t1 + v.speakers:]], -1)

    def attention_targets(self, spans: list, shape, frame_shift: float) -> tuple[Tensor, Tensor]:
        """(N, U, T) True where output position u may attend (its segment's frames +- margin),
        and (N, U) True at the positions that are guided (tokens; not eos, not padding)."""
        N, U, T = shape
        inside = torch.zeros(N, U, T, dtype=torch.bool)
        guided = torch.zeros(N, U, dtype=torch.bool)
        m = self.model_cfg.align_margin
        for i, sp in enumerate(spans):
            for u, (a, b) in enumerate(sp[:U]):
                lo, hi = max(0, int((a - m) / frame_shift)), min(T, int(math.ceil((b + m) / frame_shift)))
                if hi > lo:
                    inside[i, u, lo:hi] = True
                    guided[i, u] = True
        return inside, guided

    def silent_result(self, cut_id: str) -> SegmentsResult:
        return SegmentsResult(cut_id=cut_id)  # digital silence: nobody spoke

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def infer(self, model: TagSpeechModel, batch: dict, method: str = "greedy", **_) -> list[SegmentsResult]:
        """Grammar-constrained greedy search, all rows at once, one decoder position per step
        (cached keys and values)."""
        self.check_method(model, method)
        x, x_lens = batch["inputs"], batch["input_lens"]
        mem, lens, voice = model.encode(x, x_lens, (batch.get("targets") or {}).get("streams"))
        cache = model.decoder.start_cache(*model.decoder.memory(mem, lens))
        ov_probs = model.overlap(model.semantic_frames, voice, lens).softmax(-1)[..., 2] if model.overlap is not None else None
        durs = [float(n) * 0.01 for n in x_lens.tolist()]  # 10 ms fbank frames
        N = x.shape[0]
        c = self.model_cfg
        stretches = self.speech_stretches(model, x, x_lens) \
            if c.cover_speech > 0 or c.words_from == "asr" or c.voice_regroup else None
        ends = [0.0] * N  # a segment must end this late before the output may end
        if c.cover_speech > 0:
            ends = [max(0.0, st[-1][1] / 100 - c.cover_speech) if st else 0.0 for st in stretches]
        gram = [Grammar(self.vocab, durs[i], int(durs[i] * c.max_tokens_per_second) + 8, c.no_repeat_ngram,
                        c.seconds_per_piece, c.segment_base_seconds, ends[i]) for i in range(N)]
        seqs: list[list[int]] = [[] for _ in range(N)]
        done = [False] * N
        tok = torch.full((N,), self.vocab.sos, dtype=torch.long, device=mem.device)
        pointer = model.spk_proj is not None and voice is not None
        frames: dict[int, Tensor] = {}  # row -> speaker_frames, made at its first speaker token
        t1 = self.vocab.text + self.vocab.times
        while not all(done):
            logits = model.decoder.step(cache, tok)
            if pointer:
                for i in range(N):
                    if not done[i] and gram[i].state == "spk":  # this step writes a speaker token
                        if i not in frames:
                            frames[i] = model.speaker_frames(voice[i], int(lens[i]))
                        b = model.speaker_bias(frames[i], gram[i].start_bin, gram[i].done)
                        logits[i, t1: t1 + self.vocab.speakers] += b.to(logits.dtype)
            masks = torch.stack([g.mask() for g in gram]).to(logits.device)
            best = logits.float().masked_fill(~masks, float("-inf")).argmax(-1)
            for i in range(N):
                b = int(best[i])
                if done[i] or b == self.vocab.eos or len(seqs[i]) >= gram[i].cap:
                    done[i] = True
                    best[i] = self.vocab.eos
                    continue
                seqs[i].append(b)
                gram[i].update(b)
            tok = best
        model._mem_keys = None  # the memory's pointer keys: this search's only
        refs = (batch.get("targets") or {}).get("refs")
        ids = batch.get("cut_ids") or [str(i) for i in range(N)]
        linked = batch.get("linked") or [False] * N  # windows of one recording (the API's): linking embeddings
        out = []
        words = None
        if c.words_from == "ctc":
            words = ctc_greedy(model.ctc_probs.clamp(min=1e-9).log(), lens)
        elif c.words_from == "transducer":
            words = greedy_search(model.semantic_rnnt, model.semantic_frames[:, :int(lens.max())], lens)
        elif c.words_from == "asr":
            words = self.reread_speech(model, x, stretches)
        for i in range(N):
            segs = parse_tokens(seqs[i], self.vocab, self.tokenizer, durs[i])
            if stretches is not None and not stretches[i]:  # a window with no signal: nobody spoke
                segs = []
            if c.voice_regroup and pointer and segs:
                f = speaker_space(model.spk_proj, voice[i, : int(lens[i])])
                segs = regroup_by_voice(segs, [(a / 100, b / 100) for a, b in stretches[i]], f, model.frame_shift,
                                        c.regroup_chunk, c.regroup_fill)
            if words is not None:
                segs = timed_words(segs, words[i], model.frame_shift, self.tokenizer)
            frames_i = voice[i] if voice is not None else mem[i]
            emb = self._speaker_embeddings(segs, frames_i, int(lens[i]), model.frame_shift)
            if c.min_speaker_seconds > 0 and len(emb) > 1:
                segs = absorb_short_speakers(segs, emb, c.min_speaker_seconds)
                emb = self._speaker_embeddings(segs, frames_i, int(lens[i]), model.frame_shift)
            if c.split_voices > 0 and model.voice_embed is not None and len(segs) > 1:
                keep = [j for j, sg in enumerate(segs) if sg.end - sg.start >= SPLIT_MIN_SEGMENT]
                if len(keep) > 1:
                    e = model.segment_embeddings(x[i, : int(x_lens[i])], [(segs[j].start, segs[j].end) for j in keep])
                    segs = split_by_voice(segs, dict(zip(keep, e.float().cpu().numpy())), c.split_voices,
                                          c.split_min_seconds)
                    emb = self._speaker_embeddings(segs, frames_i, int(lens[i]), model.frame_shift)
            if model.overlap is not None and segs and emb:
                regions = overlap_regions(ov_probs[i, : int(lens[i])], model.frame_shift, c.overlap_threshold,
                                          c.overlap_min_seconds)
                sh = model.frame_shift
                segs = add_overlap_talkers(
                    segs, regions, lambda a, b: frames_i[int(a / sh): max(int(b / sh), int(a / sh) + 1)].mean(0),
                    emb)
            if c.link_embedding == "voice" and model.voice_embed is not None and segs and linked[i]:
                emb = self._voice_embeddings(model, x[i, : int(x_lens[i])], segs)
            out.append(SegmentsResult(cut_id=ids[i], segments=segs, refs=refs[i] if refs else None,
                                      embeddings=emb, tokens=seqs[i]))
        return out

    def speech_stretches(self, model: TagSpeechModel, x: Tensor, x_lens: Tensor) -> list[list[tuple[int, int]]]:
        """Per row, the stretches of speech between pauses (10 ms frame ranges, from the
        features' energy; none shorter than 0.2 s or longer than ``reread_max_seconds``)."""
        rows = x[..., : model.input_dims["semantic"]]  # None: every row
        return [[(a, b) for a, b in speech_frames(feature_log_energy(rows[i, :L]), self.model_cfg.reread_max_seconds)
                 if b - a >= MIN_REREAD_FRAMES] for i, L in enumerate(x_lens.tolist())]

    def reread_speech(self, model: TagSpeechModel, x: Tensor, stretches: list, batch_seconds: float = 200.0
                      ) -> list[Hypothesis]:
        """The semantic ASR model's own greedy search over each stretch of speech between pauses
        of every row (``stretches``: :meth:`speech_stretches`), read alone: per row one hypothesis
        whose frames are output frames of the whole window (fractional where a stretch starts
        between them)."""
        spans = [(i, a, b) for i, st in enumerate(stretches) for a, b in st]
        spans.sort(key=lambda s: s[2] - s[1])  # shortest first: little padding per batch
        rows = x[..., : model.input_dims["semantic"]]
        out = [Hypothesis() for _ in range(x.shape[0])]
        step = model.frame_shift / 0.01  # input frames per output frame
        k = 0
        while k < len(spans):  # at most batch_seconds of padded audio per batch
            n = 1
            while k + n < len(spans) and (n + 1) * (spans[k + n][2] - spans[k + n][1]) <= batch_seconds * 100:
                n += 1
            group, k = spans[k: k + n], k + n
            lens = torch.tensor([b - a for _, a, b in group], device=x.device)
            xb = rows.new_full((len(group), int(lens.max()), rows.shape[2]), PAD_VALUE)
            for j, (i, a, b) in enumerate(group):
                xb[j, : b - a] = rows[i, a:b]
            enc, enc_lens = model.semantic(xb, lens)
            if model.semantic_rnnt is not None:
                hyps = greedy_search(model.semantic_rnnt, enc, enc_lens)
            else:
                hyps = ctc_greedy(model.semantic_ctc(enc).log_softmax(-1), enc_lens)
            for (i, a, _), h in zip(group, hyps):
                out[i].tokens += h.tokens
                out[i].frames += [a / step + f for f in h.frames]
        for h in out:  # back in time order
            order = sorted(range(len(h.frames)), key=h.frames.__getitem__)
            h.tokens, h.frames = [h.tokens[j] for j in order], [h.frames[j] for j in order]
        return out

    @staticmethod
    def _voice_embeddings(model: TagSpeechModel, x: Tensor, segs: list[Segment]) -> dict:
        """Per speaker, the duration-weighted mean of the voice model's unit-length utterance
        embeddings of its segments (each read alone), unit length."""
        e = model.segment_embeddings(x, [(sg.start, sg.end) for sg in segs]).float()
        e = e / (e.norm(dim=-1, keepdim=True) + 1e-9)
        w = torch.tensor([max(sg.end - sg.start, 1e-3) for sg in segs], device=e.device)
        out = {}
        for spk in {sg.speaker for sg in segs}:
            k = torch.tensor([sg.speaker == spk for sg in segs], device=e.device)
            v = (e[k] * w[k, None]).sum(0)
            out[spk] = (v / (v.norm() + 1e-9)).tolist()
        return out

    @staticmethod
    def _speaker_embeddings(segs: list[Segment], frames: Tensor, n: int, shift: float) -> dict:
        out: dict[str, list] = {}
        for spk in {s.speaker for s in segs}:
            idx = [t for s in segs if s.speaker == spk
                   for t in range(int(s.start / shift), min(int(s.end / shift) + 1, n))]
            if idx:
                out[spk] = frames[idx].mean(0).float().tolist()
        return out

    def merge(self, pieces, cut_id: str) -> SegmentsResult:
        """Stitch windows of one recording: global times; speakers linked across windows by
        their voice embeddings (:func:`~auden_kit.clustering.agglomerate`: clustering in which two
        speakers of one window never merge; below ``link_threshold`` a speaker stays apart)."""
        if len(pieces) == 1:  # one window, which may start after leading silence
            off, r = pieces[0]
            return dataclasses.replace(r, cut_id=cut_id, segments=shift_segments(r.segments, off),
                                       refs=shift_segments(r.refs, off) if r.refs else r.refs)
        keys = [(w, spk) for w, (_, r) in enumerate(pieces) for spk in sorted(r.embeddings)]
        emb = np.array([pieces[w][1].embeddings[spk] for w, spk in keys], dtype=np.float64)
        labels = np.array(agglomerate(emb, self.model_cfg.link_threshold, groups=[w for w, _ in keys]), dtype=int)
        names = {key: f"spk{k + 1}" for key, k in zip(keys, labels)}
        segs, refs, toks = [], [], []
        for w, (off, r) in enumerate(pieces):
            segs += [dataclasses.replace(s, speaker=names.get((w, s.speaker), s.speaker))
                     for s in shift_segments(r.segments, off)]
            refs += shift_segments(r.refs or [], off)
            toks += r.tokens
        return SegmentsResult(cut_id=cut_id, segments=sorted(segs, key=lambda s: (s.start, s.end)),
                              refs=refs or None, tokens=toks,
                              embeddings={f"spk{k + 1}": emb[labels == k].mean(0).tolist()
                                          for k in range(labels.max() + 1 if len(labels) else 0)})

    # ------------------------------------------------------------------ scoring and files
    def evaluate(self, results) -> dict:
        from auden_kit.metrics.diarization import score_meetings

        scored = [(r.cut_id, r.refs, None if r.failed else r.segments) for r in results if r.refs is not None]
        if not scored:
            return {}
        m = score_meetings(scored)
        m.pop("per_meeting")
        return m

    def write_results(self, results, out_dir, name: str) -> str:
        from auden_kit.metrics.diarization import summary_line, write_meeting_results

        return summary_line(write_meeting_results(results, out_dir, name))


# ---------------------------------------------------------------------------- stream cache
STREAM_KEYS = {"semantic": "stream_semantic", "voice": "stream_voice"}


def load_streams(cuts, voice: bool) -> dict:
    """The cached encoder outputs of ``cuts`` padded into a batch (what ``encode`` takes)."""
    import numpy as np

    out: dict = {}
    for which in ("semantic", "voice") if voice else ("semantic",):
        arrs = []
        for c in cuts:
            if STREAM_KEYS[which] not in (c.custom or {}):
                raise UserError(f"cut '{c.id}' has no cached '{which}' stream; write them with `auden-kit data "
                                "stream-cache` or set config key model.cached_streams=false")
            arrs.append(torch.from_numpy(np.asarray(c.load_custom(STREAM_KEYS[which]), dtype=np.float32)))
        out[which] = nn.utils.rnn.pad_sequence(arrs, batch_first=True)
        if which == "semantic":
            out["lens"] = torch.tensor([len(a) for a in arrs])
    return out


@torch.no_grad()
def write_stream_cache(config_path: str, cuts_path: str, out: str | Path, storage_dir: str | Path,
                       max_duration: float = 200.0, tick_power: int = -8, overrides: dict | None = None) -> dict:
    """Run the frozen encoders of the tagspeech model that ``config_path`` (a training config)
    describes over a manifest once and store their outputs with every cut (lilcom arrays
    ``custom["stream_semantic"]`` / ``["stream_voice"]``, values rounded to 2^tick_power)."""
    import yaml
    from lhotse import CutSet, LilcomChunkyWriter
    from lhotse.utils import fastcopy

    from auden_kit.config import from_dict
    from auden_kit.io import save_cuts_atomic
    from auden_kit.probe import cut_batches
    from auden_kit.training.trainer import TrainConfig, resolve

    try:
        raw = yaml.safe_load(Path(config_path).read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise UserError(f"cannot read config '{config_path}': {e}") from None
    raw.setdefault("model", {}).update(overrides or {})
    cfg = from_dict(TrainConfig, raw)
    task, model_cfg = resolve(cfg)
    if not isinstance(task, TagSpeechTask):
        raise UserError(f"'{config_path}' is a '{cfg.task}' config; stream caches are for task tagspeech")
    model_cfg.validate()
    task.setup(model_cfg, task.build_assets(cfg, model_cfg, CutSet.from_cuts([])))
    model = task.build_model().eval()
    Path(storage_dir).mkdir(parents=True, exist_ok=True)
    done, frames, stored = [], 0, 0
    names = ["semantic"] + (["voice"] if model.voice is not None else [])
    writers = {w: LilcomChunkyWriter(Path(storage_dir) / STREAM_KEYS[w], tick_power=tick_power) for w in names}
    try:
        for batch in cut_batches(cuts_path, cfg.data.fbank, max_duration):
            sem, lens, voice = model.streams(batch["inputs"], batch["input_lens"])
            for i, c in enumerate(batch["cuts"]):
                custom = dict(c.custom or {})
                for w, t in (("semantic", sem), ("voice", voice)):
                    if w in writers:
                        arr = t[i, : int(lens[i])].float().numpy()
                        # start=c.start: Lhotse reads a temporal array back for the cut's own span of the
                        # recording (a cut that starts 30 s in, e.g. a split utterance group, reads 30 s on)
                        custom[STREAM_KEYS[w]] = writers[w].store_array(c.id, arr, frame_shift=model.frame_shift,
                                                                       temporal_dim=0, start=c.start)
                        stored += arr.size
                frames += int(lens[i])
                done.append(fastcopy(c, custom=custom))
    finally:
        for w in writers.values():
            w.close()
    save_cuts_atomic(CutSet.from_cuts(done), out)
    size = sum(f.stat().st_size for f in Path(storage_dir).glob("stream_*"))
    return {"cuts": len(done), "frames": frames, "bytes": size, "bytes_float32": 4 * stored}
