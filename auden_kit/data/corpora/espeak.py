"""espeak-ng speech synthesis through ctypes, from the ``espeakng-loader`` wheel.

No system package and no network: the wheel ships ``libespeak-ng`` and its voice
data. We use the synchronous output mode with a callback that collects int16
samples at the engine's rate (22.05 kHz) and the engine's word and phoneme events,
which give an exact time alignment of what was said (:meth:`EspeakSynth.synthesize_aligned`):
the synthesized corpora store it as LibriSpeech-Alignments files and Lhotse alignments.

espeak-ng keeps global state (one engine per process), so :class:`EspeakSynth`
is a per-process singleton; callers that need byte-identical output across runs
render in fresh processes and seed the engine's random source per utterance
(some voices add random breath noise).
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import logging
import re
from pathlib import Path

import numpy as np

from auden_kit.errors import UserError

log = logging.getLogger(__name__)

AUDIO_OUTPUT_SYNCHRONOUS = 2
INITIALIZE_PHONEME_EVENTS = 0x0001  # the event list also reports every phoneme (the audio is unchanged)
EVENT_LIST_TERMINATED, EVENT_WORD, EVENT_END, EVENT_PHONEME = 0, 1, 5, 7
ESPEAK_CHARS_UTF8 = 1
POS_CHARACTER = 1
PARAM_RATE, PARAM_VOLUME, PARAM_PITCH, PARAM_RANGE, PARAM_WORDGAP = 1, 2, 3, 4, 7


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):  # espeak_EVENT of speak_lib.h
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
                ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", _EventId)]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))

# espeak phoneme mnemonics carry stress and syllabicity marks; the phone is the rest
_STRESS_MARKS = str.maketrans("", "", "',%=")
_PUNCTUATION = ".,;:!?\"()[]"


@dataclasses.dataclass
class Aligned:
    """Synthesized speech and what was said when: ``words`` and ``phones`` are
    (symbol, start, end) in seconds, in order, pauses left out (gaps)."""

    samples: np.ndarray
    words: list
    phones: list


def events_to_alignment(events: list[tuple], text: str, sample_rate: int, num_samples: int) -> tuple[list, list]:
    """Word and phone spans from espeak's event list ``events``: (type, text_position, length,
    sample, phoneme name). A phoneme lasts until the next phoneme event (or the end); names starting
    with ``_`` are pauses. Each word event starts a group of the words of ``text`` from the one it
    points at up to the next event's (espeak reads "in the" as one word, "42" as two): the group
    spans its phonemes, and a group of several words is split at phoneme boundaries in proportion to
    their letters (approximate; exact for one word, the common case). Symbols are the words of
    ``text`` upper-cased without the punctuation around them."""
    import bisect

    tokens = [(m.start(), m.group().upper().strip(_PUNCTUATION)) for m in re.finditer(r"\S+", text)]
    starts = [t[0] for t in tokens]
    phone_events = [e for e in events if e[0] == EVENT_PHONEME]
    bounds = [e[3] for e in phone_events[1:]] + [num_samples]
    groups: list[tuple[int, list]] = []  # (index of the first token, its phones)
    phones = []
    pi = 0
    for e in events:
        if e[0] == EVENT_WORD and tokens:
            t = max(0, bisect.bisect_right(starts, max(0, e[1] - 1)) - 1)
            if not groups or t > groups[-1][0]:
                groups.append((t, []))
        elif e[0] == EVENT_PHONEME:
            start, end = e[3], max(e[3], bounds[pi])
            pi += 1
            name = e[4].translate(_STRESS_MARKS)
            if not name or name.startswith("_") or end <= start:
                continue
            phones.append((name, start / sample_rate, end / sample_rate))
            if groups:
                groups[-1][1].append(phones[-1])
    words = []
    for gi, (t, ph) in enumerate(groups):
        if not ph:
            continue
        first = 0 if gi == 0 else t  # words before the first event belong to it
        last = groups[gi + 1][0] if gi + 1 < len(groups) else len(tokens)
        names = [w for _, w in tokens[first:last] if w]
        if len(names) <= 1 or len(ph) < len(names):
            words.append((" ".join(names) or tokens[t][1], ph[0][1], ph[-1][2]))
            continue
        letters = [len(w) for w in names]
        cum, cuts = 0, [0]
        for i, n in enumerate(letters[:-1]):
            cum += n
            k = round(len(ph) * cum / sum(letters))
            cuts.append(min(max(k, cuts[-1] + 1), len(ph) - (len(names) - 1 - i)))
        cuts.append(len(ph))
        words += [(w, ph[cuts[i]][1], ph[cuts[i + 1] - 1][2]) for i, w in enumerate(names)]
    return words, phones


# Variants that stay intelligible (no whisper, robot, croak or heavy effects).
ENGLISH_VARIANTS = (
    "m1 m2 m3 m4 m5 m6 m7 m8 f1 f2 f3 f4 f5 adam andrea annie belinda benjamin "
    "david ed edward grandma ian john linda max michael paul quincy rob robert "
    "steph travis victor zac shelby aunty"
).split()
ENGLISH_BASES = ("en-us", "en")


def _paths() -> tuple[str, str]:
    try:
        import espeakng_loader
    except ImportError as e:  # pragma: no cover - dependency of the package
        raise UserError("espeakng-loader is not installed: run ./setup.sh (or pip install espeakng-loader)") from e
    return espeakng_loader.get_library_path(), espeakng_loader.get_data_path()


def variant_file(variant: str) -> Path | None:
    """The voice file of an espeak variant name (matched without case, as espeak does), or None."""
    folder = Path(_paths()[1]) / "voices" / "!v"
    if (folder / variant).is_file():
        return folder / variant
    return next((p for p in folder.iterdir() if p.name.lower() == variant.lower()), None)


def voice_gender(variant: str) -> str:
    """'F' or 'M' for an espeak variant name (read from its voice file; default 'M')."""
    f = variant_file(variant)
    if f is not None:
        m = re.search(r"^\s*gender\s+(\w+)", f.read_text(errors="replace"), re.M)
        if m and m.group(1).lower().startswith("f"):
            return "F"
    return "M"


def english_voices() -> list[str]:
    """All intelligible English speaker voices as ``base+variant`` names."""
    return [f"{b}+{v}" for v in ENGLISH_VARIANTS for b in ENGLISH_BASES]


def count_voices() -> int:
    """Number of voice variants and languages the shipped data offers."""
    _, data = _paths()
    root = Path(data) / "voices" / "!v"
    langs = Path(data) / "lang"
    return sum(1 for _ in root.iterdir()) + sum(1 for p in langs.rglob("*") if p.is_file())


class EspeakSynth:
    """Synthesize text to int16 numpy arrays at :attr:`sample_rate`."""

    def __init__(self, data_path: str | None = None):
        lib_path, default_data = _paths()
        data_path = data_path or default_data
        try:
            self.lib = ctypes.CDLL(lib_path)
        except OSError as e:
            raise UserError(f"cannot load espeak-ng library '{lib_path}': {e}") from None
        lib = self.lib
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
            ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        rate = lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path.encode(), INITIALIZE_PHONEME_EVENTS)
        if rate <= 0:
            raise UserError(f"espeak-ng failed to initialize with data '{data_path}'")
        self.sample_rate = int(rate)
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple] = []

        def collect(wav, n, events):
            if n > 0 and wav:
                self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
            i = 0
            while events and events[i].type != EVENT_LIST_TERMINATED:
                e = events[i]
                name = e.id.string.decode("utf-8", "replace") if e.type == EVENT_PHONEME else ""
                self._events.append((e.type, e.text_position, e.length, e.sample, name))
                i += 1
            return 0

        self._callback = _CALLBACK(collect)  # keep a reference: ctypes would free it
        lib.espeak_SetSynthCallback(self._callback)

    def synthesize(self, text: str, voice: str = "en-us", rate: int = 175, pitch: int = 50,
                   seed: int | None = None, pitch_range: int = 50) -> np.ndarray:
        """Return int16 samples for ``text``; ``rate`` in words/min, ``pitch`` and ``pitch_range``
        (intonation: 0 monotone, 50 normal, 100 wide) 0-100."""
        return self.synthesize_aligned(text, voice, rate, pitch, seed, pitch_range).samples

    def synthesize_aligned(self, text: str, voice: str = "en-us", rate: int = 175, pitch: int = 50,
                           seed: int | None = None, pitch_range: int = 50) -> Aligned:
        """:meth:`synthesize` with the word and phone alignment of the samples (see :class:`Aligned`)."""
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise UserError(f"espeak-ng has no voice '{voice}' (try e.g. en-us, en-us+f3, en+m3)")
        self.lib.espeak_SetParameter(PARAM_RATE, int(rate), 0)
        self.lib.espeak_SetParameter(PARAM_PITCH, int(pitch), 0)
        self.lib.espeak_SetParameter(PARAM_RANGE, int(pitch_range), 0)
        if seed is not None:
            self.lib.espeak_ng_SetRandSeed(int(seed))
        self._chunks, self._events = [], []
        data = text.encode("utf-8") + b"\0"
        self.lib.espeak_Synth(data, len(data), 0, POS_CHARACTER, 0, ESPEAK_CHARS_UTF8, None, None)
        self.lib.espeak_Synchronize()
        samples = np.concatenate(self._chunks).astype(np.int16) if self._chunks else np.zeros(0, dtype=np.int16)
        words, phones = events_to_alignment(self._events, text, self.sample_rate, len(samples))
        return Aligned(samples, words, phones)


def data_path() -> str:
    """The espeak-ng data folder the wheel ships."""
    return _paths()[1]


@functools.lru_cache(maxsize=1)
def get_synth(data_path: str | None = None) -> EspeakSynth:
    """The process's engine (espeak-ng has one per process), on the wheel's data or ``data_path``."""
    return EspeakSynth(data_path)
