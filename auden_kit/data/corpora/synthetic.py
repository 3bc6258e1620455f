"""The offline corpus: espeak-ng speech in LibriSpeech layout (or as Lhotse cuts).

    LibriSpeech/<part>/<spk>/<chapter>/<spk>-<chapter>-<utt>.flac
    LibriSpeech/<part>/<spk>/<chapter>/<spk>-<chapter>.trans.txt
    LibriSpeech/<part>/<spk>/<chapter>/<spk>-<chapter>.alignment.txt   word times
    LibriSpeech/<part>/<spk>/<chapter>/<spk>-<chapter>.phones.txt      phone times
    LibriSpeech/SPEAKERS.TXT

Parts are named like LibriSpeech's (``train-clean-100``, ``dev-clean``,
``test-clean``) so ``lhotse prepare librispeech`` reads the folder unchanged, word
alignments included (the synthesizer's own word events, in the LibriSpeech-Alignments format
of Montreal-Forced-Aligner output that Lhotse reads); :func:`corpus_to_cuts` also attaches the
phone alignment (espeak phoneme names without stress marks) for frame-level probes.
Speakers are espeak voice variants with their own speaking rate and pitch;
each utterance jitters both again. Sentences come from :mod:`grammar` and are
disjoint across parts (test first, then dev, then train, so growing the
training set never changes the test set). The same seed gives the same bytes:
every chapter is rendered in a fresh process (espeak-ng keeps state, such as
its echo buffer, between utterances) and every utterance seeds espeak's noise.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing as mp
import random
from pathlib import Path

import numpy as np

from auden_kit.data.corpora.grammar import Grammar

log = logging.getLogger(__name__)

PARTS = {"train": "train-clean-100", "dev": "dev-clean", "test": "test-clean"}
SAMPLE_RATE = 16000


@dataclasses.dataclass
class SynthOptions:
    """What :func:`synthesize_corpus` builds. Counts are per speaker."""

    num_speakers: int = 20
    train_utts: int = 40
    dev_utts: int = 5
    test_utts: int = 5
    utts_per_chapter: int = 20
    vocab_size: int = 0  # 0: the whole grammar
    base_rate: int = 165  # words per minute
    rate_jitter: int = 20  # speaker-level +-, utterance-level half of it
    pitch_jitter: int = 15  # around espeak's 50
    # optional room tone: each utterance gets this much silence (seconds, uniform) before and after,
    # and a Gaussian noise floor throughout. Off by default: measured, 0.1-0.4 s edges at -66 dBFS
    # slowed the quick start's transducer out of its blank-only phase (valid WER 96 % after 2 epochs
    # instead of 32 %) and doubled the tiny CI model's training WER.
    edge_silence: tuple[float, float] = (0.0, 0.0)
    noise_floor_db: float = float("-inf")
    seed: int = 0
    jobs: int = 2
    # speakers are voices [voice_offset, voice_offset + num_speakers) of the voice order drawn
    # with voice_seed (-1: with seed, as before); e.g. an unlabeled corpus with other voices than a
    # labeled one made with seed 0: voice_seed=0, voice_offset=<its num_speakers>, another seed
    voice_offset: int = 0
    voice_seed: int = -1


@dataclasses.dataclass
class Utterance:
    utt_id: str
    text: str
    voice: str
    rate: int
    pitch: int
    seed: int
    pitch_range: int = 50


def resample_int16(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Band-limited FFT resampling of a short int16 signal (numpy only, for worker processes)."""
    if sr_in == sr_out or len(x) == 0:
        return x
    n_out = int(round(len(x) * sr_out / sr_in))
    spec = np.fft.rfft(x.astype(np.float64))
    keep = n_out // 2 + 1
    out_spec = np.zeros(keep, dtype=np.complex128)
    m = min(keep, len(spec))
    out_spec[:m] = spec[:m]
    y = np.fft.irfft(out_spec, n=n_out) * (n_out / len(x))
    return np.clip(np.round(y), -32768, 32767).astype(np.int16)


def add_room_tone(wav: np.ndarray, edges: tuple[float, float], floor_db: float, seed: int) -> tuple[np.ndarray, float]:
    """Pad int16 speech with ``edges`` (min, max) seconds of silence on each side and add a
    Gaussian noise floor at ``floor_db`` dBFS (deterministic for ``seed``); returns the signal and
    the seconds added before the speech."""
    rng = np.random.RandomState(seed % (2 ** 32))
    lo, hi = edges
    a, b = (int(rng.uniform(lo, hi) * SAMPLE_RATE) for _ in range(2)) if hi > 0 else (0, 0)
    x = np.concatenate([np.zeros(a), wav.astype(np.float64), np.zeros(b)])
    if np.isfinite(floor_db):
        x += rng.randn(x.size) * 32768 * 10 ** (floor_db / 20)
    return np.clip(np.round(x), -32768, 32767).astype(np.int16), a / SAMPLE_RATE


def render_chapter(task: tuple) -> list[tuple[str, float, dict]]:
    """Worker: synthesize one chapter's utterances into flac files; return (id, seconds,
    alignment) per utterance, the alignment as {"word": [...], "phone": [...]} of (symbol, start,
    end) in seconds of the written file (see :meth:`EspeakSynth.synthesize_aligned`).
    ``task``: (folder, utterances, silence edges, noise floor dB[, espeak data folder])."""
    import soundfile as sf

    from auden_kit.data.corpora.espeak import get_synth

    chapter_dir, utts, edges, floor_db = task[:4]
    synth = get_synth(task[4] if len(task) > 4 else None)
    out = []
    for u in utts:
        a = synth.synthesize_aligned(u.text, voice=u.voice, rate=u.rate, pitch=u.pitch, seed=u.seed,
                                     pitch_range=u.pitch_range)
        wav, lead = add_room_tone(resample_int16(a.samples, synth.sample_rate, SAMPLE_RATE), edges, floor_db, u.seed)
        sf.write(str(Path(chapter_dir) / f"{u.utt_id}.flac"), wav, SAMPLE_RATE, subtype="PCM_16")
        seconds = len(wav) / SAMPLE_RATE
        shift = lambda items: [(n, min(seconds, s + lead), min(seconds, e + lead)) for n, s, e in items]  # noqa: E731
        out.append((u.utt_id, seconds, {"word": shift(a.words), "phone": shift(a.phones)}))
    return out


ALIGNMENT_FILES = {"word": ".alignment.txt", "phone": ".phones.txt"}


def format_alignment_line(utt_id: str, items: list, duration: float) -> str:
    """One line of a LibriSpeech-Alignments file (the format ``lhotse prepare librispeech`` reads
    next to each ``.trans.txt``): ``ID ",W1,,W2," "end1,end2,..."`` with the gaps as empty
    symbols, so the items tile the recording from 0 to its end."""
    syms, ends, t = [], [], 0.0
    for name, start, end in items:
        if start > t + 5e-4:
            syms.append("")
            ends.append(start)
        syms.append(name)
        ends.append(end)
        t = end
    if duration > t + 5e-4:
        syms.append("")
        ends.append(duration)
    return f'{utt_id} "{",".join(syms)}" "{",".join(f"{e:.3f}" for e in ends)}"'


def read_alignment_file(path: str | Path) -> dict[str, list]:
    """{utt id: [AlignmentItem]} of a LibriSpeech-Alignments file, the gaps (empty symbols) left out."""
    from lhotse.recipes.librispeech import parse_alignments

    return {k: [a for a in v if a.symbol] for k, v in parse_alignments(path).items()}


def lhotse_alignment(alignment: dict) -> dict:
    """{"word": [AlignmentItem], "phone": [...]} of a :func:`render_chapter` alignment."""
    from lhotse.supervision import AlignmentItem

    return {k: [AlignmentItem(n, round(s, 4), round(e - s, 4)) for n, s, e in v] for k, v in alignment.items()}


def write_chapter_alignments(chapter_dir: Path, stem: str, utt_ids: list, rendered: dict) -> None:
    """``<stem>.alignment.txt`` (words) and ``<stem>.phones.txt`` in ``chapter_dir`` from
    ``rendered``: {utt id: (seconds, alignment)} as :func:`render_chapter` returns them."""
    from auden_kit.io import atomic_write_text

    for kind, suffix in ALIGNMENT_FILES.items():
        lines = [format_alignment_line(u, rendered[u][1][kind], rendered[u][0]) for u in utt_ids]
        atomic_write_text(chapter_dir / f"{stem}{suffix}", "".join(f"{x}\n" for x in lines))


def plan_corpus(opts: SynthOptions) -> dict:
    """Decide speakers, sentences and prosody (no audio yet). Pure function of ``opts``."""
    from auden_kit.data.corpora.espeak import english_voices, voice_gender

    rng = random.Random(opts.seed)
    voices = english_voices()
    if opts.voice_seed < 0:
        rng.shuffle(voices)
    else:
        random.Random(opts.voice_seed).shuffle(voices)
    if opts.voice_offset + opts.num_speakers > len(voices):
        raise ValueError(f"at most {len(voices)} distinct voices are available, asked for {opts.num_speakers}"
                         + (f" after the first {opts.voice_offset}" if opts.voice_offset else ""))
    speakers = []
    for i in range(opts.voice_offset, opts.voice_offset + opts.num_speakers):
        voice = voices[i]
        speakers.append({
            "id": str(1000 + 37 * i),
            "voice": voice,
            "gender": voice_gender(voice.split("+")[1]),
            "rate": opts.base_rate + rng.randint(-opts.rate_jitter, opts.rate_jitter),
            "pitch": 50 + rng.randint(-opts.pitch_jitter, opts.pitch_jitter),
        })
    grammar = Grammar(opts.vocab_size)
    used: set[str] = set()
    counts = {"test": opts.test_utts, "dev": opts.dev_utts, "train": opts.train_utts}
    plan = {"speakers": speakers, "parts": {}}
    for split in ("test", "dev", "train"):
        sentences = grammar.sample_unique(counts[split] * len(speakers), rng, used)
        chapters = []
        for si, spk in enumerate(speakers):
            mine = sentences[si * counts[split]:(si + 1) * counts[split]]
            for ci in range(0, len(mine), opts.utts_per_chapter):
                chapter = str(100 * (list(counts).index(split) + 1) + ci // opts.utts_per_chapter)
                utts = []
                for k, text in enumerate(mine[ci:ci + opts.utts_per_chapter]):
                    j = max(1, opts.rate_jitter // 2)
                    utts.append(Utterance(
                        utt_id=f"{spk['id']}-{chapter}-{k:04d}",
                        text=text,
                        voice=spk["voice"],
                        rate=spk["rate"] + rng.randint(-j, j),
                        pitch=min(99, max(0, spk["pitch"] + rng.randint(-5, 5))),
                        seed=rng.randrange(1 << 30),
                    ))
                chapters.append((spk["id"], chapter, utts))
        plan["parts"][split] = chapters
    return plan


def synthesize_corpus(out_dir: str | Path, opts: SynthOptions, progress: bool = True) -> Path:
    """Write the corpus under ``out_dir/LibriSpeech``; return that folder."""
    from tqdm import tqdm

    root = Path(out_dir) / "LibriSpeech"
    plan = plan_corpus(opts)
    tasks = []
    for split, chapters in plan["parts"].items():
        for spk, chapter, utts in chapters:
            d = root / PARTS[split] / spk / chapter
            d.mkdir(parents=True, exist_ok=True)
            lines = "".join(f"{u.utt_id} {u.text.upper()}\n" for u in utts)
            (d / f"{spk}-{chapter}.trans.txt").write_text(lines)
            tasks.append((str(d), utts, tuple(opts.edge_silence), opts.noise_floor_db))
    ctx = mp.get_context("forkserver")
    rendered: dict[str, tuple] = {}
    # maxtasksperchild=1: each chapter starts from a fresh espeak engine (determinism).
    with ctx.Pool(max(1, opts.jobs), maxtasksperchild=1) as pool:
        n_utts = sum(len(t[1]) for t in tasks)
        with tqdm(total=n_utts, desc="Synthesizing", unit="utt", disable=not progress) as bar:
            for result in pool.imap_unordered(render_chapter, tasks):
                rendered.update((u, (sec, ali)) for u, sec, ali in result)
                bar.update(len(result))
    for split, chapters in plan["parts"].items():  # word and phone times, as LibriSpeech-Alignments files
        for spk, chapter, utts in chapters:
            write_chapter_alignments(root / PARTS[split] / spk / chapter, f"{spk}-{chapter}",
                                     [u.utt_id for u in utts], rendered)
    durations = {u: sec for u, (sec, _) in rendered.items()}
    minutes: dict[tuple[str, str], float] = {}
    for split, chapters in plan["parts"].items():
        for spk, _, utts in chapters:
            key = (spk, PARTS[split])
            minutes[key] = minutes.get(key, 0.0) + sum(durations[u.utt_id] for u in utts) / 60
    lines = [";ID  |SEX| SUBSET           |MINUTES| NAME"]
    for spk in plan["speakers"]:
        for (sid, part), mins in sorted(minutes.items()):
            if sid == spk["id"]:
                lines.append(f"{sid:<5}| {spk['gender']} | {part:<17}| {mins:5.2f} | {spk['voice']}")
    (root / "SPEAKERS.TXT").write_text("\n".join(lines) + "\n")
    log.info("Wrote %d utterances (%.1f min) to %s", len(durations), sum(durations.values()) / 60, root)
    return root


KEYWORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")


def synthesize_keywords(out_dir: str | Path, words=KEYWORDS, num_speakers: int = 20, reps: int = 4,
                        seed: int = 0, voice_seed: int = -1, voice_offset: int = 0, jobs: int = 2,
                        progress: bool = True) -> Path:
    """A Speech-Commands-like set: each of ``words`` said ``reps`` times by each speaker (rate and
    pitch jittered per clip), speakers drawn as :func:`plan_corpus` draws them (same
    ``seed``/``voice_seed``/``voice_offset`` = same voices and ids). Writes the clips and
    ``out_dir/keywords_cuts.jsonl.gz`` (supervision text = the word, ``custom["keyword"]``,
    speaker, gender, word and phone alignment); returns the manifest's path. A probe's content and speaker labels."""
    from lhotse import CutSet, Recording, RecordingSet, SupervisionSegment, SupervisionSet
    from tqdm import tqdm

    from auden_kit.io import save_cuts_atomic

    plan = plan_corpus(SynthOptions(num_speakers=num_speakers, train_utts=0, dev_utts=0, test_utts=0, seed=seed,
                                    voice_seed=voice_seed, voice_offset=voice_offset))
    rng = random.Random(seed + 1)
    out = Path(out_dir)
    tasks, meta, alignments = [], {}, {}
    for spk in plan["speakers"]:
        d = out / spk["id"]
        d.mkdir(parents=True, exist_ok=True)
        utts = []
        for r in range(reps):
            for w in words:
                u = Utterance(utt_id=f"{spk['id']}-{w}-{r}", text=w, voice=spk["voice"],
                              rate=spk["rate"] + rng.randint(-15, 15),
                              pitch=min(99, max(0, spk["pitch"] + rng.randint(-8, 8))), seed=rng.randrange(1 << 30))
                utts.append(u)
                meta[u.utt_id] = (spk, w, d)
        tasks.append((str(d), utts, (0.0, 0.0), float("-inf")))
    ctx = mp.get_context("forkserver")
    with ctx.Pool(max(1, jobs), maxtasksperchild=1) as pool, \
            tqdm(total=len(meta), desc="Synthesizing", unit="clip", disable=not progress) as bar:
        for result in pool.imap_unordered(render_chapter, tasks):
            alignments.update((u, ali) for u, _, ali in result)
            bar.update(len(result))
    cuts = []
    for uid, (spk, w, d) in sorted(meta.items()):
        rec = Recording.from_file(d / f"{uid}.flac", recording_id=uid)
        sup = SupervisionSegment(id=uid, recording_id=uid, start=0.0, duration=rec.duration, text=w.upper(),
                                 speaker=spk["id"], gender=spk["gender"], language="English",
                                 custom={"keyword": w}, alignment=lhotse_alignment(alignments[uid]))
        cuts.append((rec, sup))
    cs = CutSet.from_manifests(recordings=RecordingSet.from_recordings(r for r, _ in cuts),
                               supervisions=SupervisionSet.from_segments(s for _, s in cuts))
    path = out / "keywords_cuts.jsonl.gz"
    save_cuts_atomic(cs, path)
    return path


def read_speakers(root: str | Path) -> dict[str, dict]:
    """Parse SPEAKERS.TXT into {speaker_id: {"gender", "voice"}}."""
    out = {}
    for line in (Path(root) / "SPEAKERS.TXT").read_text().splitlines():
        if line.startswith(";") or "|" not in line:
            continue
        sid, sex, _, _, name = [x.strip() for x in line.split("|")]
        out[sid] = {"gender": sex, "voice": name}
    return out


def corpus_to_cuts(root: str | Path, out_dir: str | Path) -> dict[str, Path]:
    """Lhotse cut manifests straight from the synthesized folder (no ``lhotse prepare``).

    Writes ``out_dir/synth_cuts_<part>.jsonl.gz`` with speaker, gender and the word and phone
    alignments (where the folder has them) on each supervision; returns {part: path}.
    """
    from lhotse import CutSet, Recording, RecordingSet, SupervisionSegment, SupervisionSet

    from auden_kit.io import save_cuts_atomic

    root = Path(root)
    speakers = read_speakers(root)
    paths = {}
    for part in PARTS.values():
        part_dir = root / part
        if not part_dir.is_dir():
            continue
        recs, sups = [], []
        for trans in sorted(part_dir.rglob("*.trans.txt")):
            stem = trans.name[:-len(".trans.txt")]
            ali = {k: read_alignment_file(trans.parent / f"{stem}{suf}") for k, suf in ALIGNMENT_FILES.items()
                   if (trans.parent / f"{stem}{suf}").is_file()}
            for line in trans.read_text().splitlines():
                utt_id, text = line.split(maxsplit=1)
                rec = Recording.from_file(trans.parent / f"{utt_id}.flac", recording_id=utt_id)
                spk = utt_id.split("-")[0]
                recs.append(rec)
                sups.append(SupervisionSegment(
                    id=utt_id, recording_id=utt_id, start=0.0, duration=rec.duration, channel=0,
                    text=text, speaker=spk, language="English",
                    gender=speakers.get(spk, {}).get("gender"),
                    alignment={k: v[utt_id] for k, v in ali.items() if utt_id in v} or None,
                ))
        cuts = CutSet.from_manifests(RecordingSet.from_recordings(recs), SupervisionSet.from_segments(sups))
        path = Path(out_dir) / f"synth_cuts_{part}.jsonl.gz"
        save_cuts_atomic(cuts, path)
        paths[part] = path
    return paths
