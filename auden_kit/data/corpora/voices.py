"""An offline voice corpus: espeak-ng voices as speakers, with gender and a speaking style.

Layout (what ``auden-kit data folder`` and the voice recipes read; the same as a user's own
corpus)::

    <out>/<part>/<speaker>/<utt>.flac
    <out>/<part>/text  utt2spk  utt2gender  utt2style     (<utt-id> <value> per line)
    <out>/speakers.tsv                                    (who is who: voice and settings)

A speaker is a voice variant file of its own: one of espeak's 67 human-sounding variants (``f3``,
``m3``, ``adam``, ``caleb``, ...; ``EXTRA_VARIANTS`` beyond the ASR corpus's list) with its formants
1-5 scaled (a longer or shorter vocal tract) and espeak's default pitch span on its own base pitch
(``DEFAULT_PITCH``), spoken with an accent (``en-us`` or ``en``) and its own pitch, speaking rate
and intonation habit. The variant files
live in a private espeak data folder (``<out>/.espeak-data``, links to the wheel's data). Parts:

- ``train``: speakers made from the training base variants,
- ``dev``: other utterances of the *same* speakers (closed-set identification),
- ``test``: speakers made from base variants that never occur in training (verification on
  unseen speakers, gender on unseen voices).

The speaking style is acoustically real, not a tag: each utterance is spoken ``calm`` (slower,
lower, nearly monotone), ``neutral`` or ``lively`` (faster, higher, wide intonation); rate and
pitch move relative to the speaker's own, so speakers overlap in absolute rate and pitch and a
seconds-per-character rule gets only part of it. Same seed, same bytes (see :mod:`synthetic`).
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing as mp
import random
from pathlib import Path

from auden_kit.data.corpora.grammar import Grammar
from auden_kit.data.corpora.synthetic import Utterance, render_chapter

log = logging.getLogger(__name__)

# variants whose voice file declares no gender and whose pitch does not tell (a child-like voice at
# 240-390 Hz, a 100-210 Hz one): left out, so every gender label is one a listener would agree with
UNGENDERED = ("zac", "shelby")
# espeak's other human-sounding variants (no robots, whispers, croaks or near-copies such as
# iven2-4), heard through the English bases like the ASR list's: more base voices is what makes a
# speaker embedding generalise to voices it never heard (VoxCeleb's lesson), at the same number of
# utterances. Only the voice corpus uses them; the ASR and ST corpora keep their speakers.
EXTRA_VARIANTS = tuple(
    "alex alicia andy denis diogo gene henrique hugo jacky lee marco mario mike reed storm antonio "
    "boris caleb edward2 gustave grandpa iven marcelo michel miguel mike2 norbert pablo pedro sandro "
    "anika steph2".split())
# style: (rate factor and pitch offset relative to the speaker's own, intonation range 0-100). The
# range is set outright (plus the speaker's small habit), not relative to the speaker: monotone,
# normal or wide intonation is what a listener hears as calm / neutral / lively whoever speaks.
# Measured with a range relative to the speaker instead, the style of unseen speakers was 69 %
# correct (88 % for the training speakers): not a property of one utterance.
STYLES = {"calm": (0.85, -10, 8), "neutral": (1.0, 0, 50), "lively": (1.18, 10, 95)}


@dataclasses.dataclass
class VoiceSynthOptions:
    """Counts of base voice *variants* per part, speakers made from each, utterances per speaker."""

    train_variants: int = 48
    test_variants: int = 12
    train_speakers_per_variant: int = 3
    test_speakers_per_variant: int = 2
    train_utts: int = 10
    dev_utts: int = 4
    test_utts: int = 12
    bases: tuple[str, ...] = ("en-us", "en")
    formant_spread: float = 0.08  # vocal-tract scale of a speaker: 1 +- this (formants 1-5)
    rate: int = 165  # words per minute, speakers spread +-rate_jitter
    rate_jitter: int = 20
    pitch_jitter: int = 15  # around espeak's 50
    range_jitter: int = 5  # the speaker's intonation habit: +- this around the style's range
    seed: int = 0
    jobs: int = 2


def _fields(line: str) -> list[str]:
    """The words of one espeak voice-file line, without its ``//`` comment (``[]`` if none)."""
    return line.split("//")[0].split()


def _formants(variant_text: str) -> dict[int, list[int]]:
    """{formant: [freq %, height %, width %, (freq adjust)]} of an espeak variant file (default 100s)."""
    table = {n: [100, 100, 100] for n in range(9)}
    for parts in map(_fields, variant_text.splitlines()):
        if len(parts) >= 5 and parts[0] == "formant":
            table[int(parts[1])] = [int(x) for x in parts[2:]]
    return table


# espeak's ``pitch BASE MAX`` line: the speaker's pitch range is MAX - BASE (Hz-like units, scaled
# by the range parameter). The variants' own spans run from 0.86x (aunty: MAX below BASE) to 2.6x
# (rob) of their base; a span that differs 7-fold in semitones made the styles (a range of 8, 50
# or 95) a different sound for every variant: measured with pyin on the test speakers, "neutral"
# f0 spread 4.4 semitones for one voice (rob) vs 0.7 for another's "lively" (steph), so no model
# could tell a style from one utterance. Every speaker keeps its variant's base pitch (its gender and register)
# with espeak's default span (118/82), and its variant's own tune choice (``intonation``) is
# dropped, so a style sounds alike whoever speaks it.
DEFAULT_PITCH = (82, 118)


def _pitch_base(variant_text: str) -> int:
    return next((int(p[1]) for p in map(_fields, variant_text.splitlines()) if len(p) >= 2 and p[0] == "pitch"),
                DEFAULT_PITCH[0])


def speaker_variant(base_text: str, scale: float, name: str) -> str:
    """An espeak variant file: ``base_text`` with formants 1-5 scaled by ``scale`` (a longer or
    shorter vocal tract), its pitch span set to espeak's default proportion of its base pitch and
    its own intonation tunes dropped (see ``DEFAULT_PITCH``), named ``name``."""
    kept = [ln for ln in base_text.splitlines()
            if (_fields(ln) or [""])[0] not in ("formant", "name", "pitch", "intonation")]
    base = _pitch_base(base_text)
    out = [f"name {name}", f"pitch {base} {round(base * DEFAULT_PITCH[1] / DEFAULT_PITCH[0])}"] + kept
    for n, vals in sorted(_formants(base_text).items()):
        f = vals[0] * (scale if 1 <= n <= 5 else 1.0)
        out.append("formant " + " ".join(str(int(round(v))) for v in [n, f, *vals[1:]]))
    return "\n".join(out) + "\n"


MAX_VARIANTS = 300  # espeak-ng lists at most 349 voices (languages + variants); beyond, lookups fail silently


def espeak_data_with_variants(dest: Path, variants: dict[str, str]) -> Path:
    """A espeak-ng data folder at ``dest`` holding ``variants`` ({file name: text}) as its only
    voice variants and only the West-Germanic languages (English among them): espeak-ng keeps a
    list of at most 349 voices and silently falls back to its default voice for names past it.
    Everything else links to the wheel's data. Returns ``dest``."""
    import shutil

    from auden_kit.data.corpora.espeak import data_path

    if len(variants) > MAX_VARIANTS:
        raise ValueError(f"{len(variants)} speakers asked for; espeak-ng can hold at most {MAX_VARIANTS} "
                         "voice variants in one run (synthesize fewer, or several corpora)")
    src = Path(data_path())
    if dest.exists():
        shutil.rmtree(dest)
    (dest / "voices" / "!v").mkdir(parents=True)
    (dest / "lang").mkdir()
    for p in src.iterdir():
        if p.name not in ("voices", "lang"):
            (dest / p.name).symlink_to(p)
    (dest / "lang" / "gmw").symlink_to(src / "lang" / "gmw")
    for name, text in variants.items():
        (dest / "voices" / "!v" / name).write_text(text)
    return dest


def _scales(n: int, spread: float, rng: random.Random) -> list[float]:
    """``n`` vocal-tract scales in [1 - spread, 1 + spread], evenly spaced then jittered, shuffled
    (speakers made from one variant stay apart)."""
    if n == 1:
        return [1.0 + rng.uniform(-spread, spread) / 2]
    step = 2 * spread / (n - 1)
    out = [1 - spread + i * step + rng.uniform(-step, step) / 4 for i in range(n)]
    rng.shuffle(out)
    return out


def plan_voice_corpus(opts: VoiceSynthOptions) -> dict:
    """Speakers (with their variant files), sentences, styles and prosody per utterance (no audio
    yet); a pure function of ``opts``."""
    from auden_kit.data.corpora.espeak import ENGLISH_VARIANTS, variant_file, voice_gender

    rng = random.Random(opts.seed)
    variants = [v for v in [*ENGLISH_VARIANTS, *EXTRA_VARIANTS] if v not in UNGENDERED]
    rng.shuffle(variants)
    if opts.train_variants + opts.test_variants > len(variants):
        raise ValueError(f"at most {len(variants)} voice variants are available, asked for "
                         f"{opts.train_variants} + {opts.test_variants}")
    # both genders in both parts, in the proportion the variants have (at least one each)
    by_gender = {g: [v for v in variants if voice_gender(v) == g] for g in ("F", "M")}
    share_f = len(by_gender["F"]) / len(variants)
    chosen = {}
    for split, n in (("train", opts.train_variants), ("test", opts.test_variants)):
        n_f = min(len(by_gender["F"]), max(1 if n >= 2 else 0, round(n * share_f)))
        chosen[split] = by_gender["F"][:n_f] + by_gender["M"][:n - n_f]
        by_gender = {"F": by_gender["F"][n_f:], "M": by_gender["M"][n - n_f:]}
        if len(chosen[split]) < n:
            raise ValueError(f"not enough voice variants of each gender for {opts.train_variants} + "
                             f"{opts.test_variants}")
    split_variants = {"train": (chosen["train"], opts.train_speakers_per_variant),
                      "test": (chosen["test"], opts.test_speakers_per_variant)}
    speakers: dict[str, list[dict]] = {}
    files: dict[str, str] = {}
    n = 0
    for split, (names, per_variant) in split_variants.items():
        speakers[split] = []
        for v in names:
            base_text = variant_file(v).read_text(errors="replace")
            for k, scale in enumerate(_scales(per_variant, opts.formant_spread, rng)):
                n += 1
                sid = f"spk{n:03d}"
                files[f"ak-{sid}"] = speaker_variant(base_text, scale, f"auden-kit {sid} from {v}")
                speakers[split].append({
                    "id": sid, "voice": f"{opts.bases[k % len(opts.bases)]}+ak-{sid}", "from": v,
                    "gender": voice_gender(v), "formant_scale": round(scale, 3),
                    "rate": opts.rate + rng.randint(-opts.rate_jitter, opts.rate_jitter),
                    "pitch": 50 + rng.randint(-opts.pitch_jitter, opts.pitch_jitter),
                    "range": 50 + rng.randint(-opts.range_jitter, opts.range_jitter),
                })
    speakers["dev"] = speakers["train"]
    grammar = Grammar(0)
    used: set[str] = set()
    counts = {"test": opts.test_utts, "dev": opts.dev_utts, "train": opts.train_utts}
    parts = {}
    styles = list(STYLES)
    for split in ("test", "dev", "train"):
        spks = speakers[split]
        sentences = grammar.sample_unique(counts[split] * len(spks), rng, used)
        chapters = []
        for si, spk in enumerate(spks):
            utts = []
            for k, text in enumerate(sentences[si * counts[split]:(si + 1) * counts[split]]):
                style = styles[(k + si) % len(styles)]  # balanced per speaker
                f_rate, d_pitch, style_range = STYLES[style]
                utts.append((style, Utterance(
                    utt_id=f"{spk['id']}-{split}-{k:04d}", text=text, voice=spk["voice"],
                    rate=int(round(spk["rate"] * f_rate)) + rng.randint(-4, 4),
                    pitch=min(99, max(0, spk["pitch"] + d_pitch + rng.randint(-3, 3))),
                    pitch_range=min(100, max(0, style_range + spk["range"] - 50)),
                    seed=rng.randrange(1 << 30))))
            chapters.append((spk, utts))
        parts[split] = chapters
    return {"speakers": speakers, "parts": parts, "variant_files": files}


def synthesize_voice_corpus(out_dir: str | Path, opts: VoiceSynthOptions, progress: bool = True) -> Path:
    """Render the corpus under ``out_dir`` (layout in the module docstring); return ``out_dir``."""
    from tqdm import tqdm

    from auden_kit.io import atomic_write_text

    root = Path(out_dir)
    plan = plan_voice_corpus(opts)
    espeak_dir = str(espeak_data_with_variants(root / ".espeak-data", plan["variant_files"]))
    tasks = []
    for split, chapters in plan["parts"].items():
        maps: dict[str, list[str]] = {"text": [], "utt2spk": [], "utt2gender": [], "utt2style": []}
        for spk, utts in chapters:
            d = root / split / spk["id"]
            d.mkdir(parents=True, exist_ok=True)
            tasks.append((str(d), [u for _, u in utts], (0.0, 0.0), float("-inf"), espeak_dir))
            for style, u in utts:
                maps["text"].append(f"{u.utt_id} {u.text}")
                maps["utt2spk"].append(f"{u.utt_id} {spk['id']}")
                maps["utt2gender"].append(f"{u.utt_id} {spk['gender']}")
                maps["utt2style"].append(f"{u.utt_id} {style}")
        for name, lines in maps.items():
            atomic_write_text(root / split / name, "".join(f"{x}\n" for x in lines))
    cols = ["id", "voice", "from", "gender", "formant_scale", "rate", "pitch", "range"]
    rows = ["part\t" + "\t".join(cols)]
    for split in ("train", "test"):
        rows += [split + "\t" + "\t".join(str(s[c]) for c in cols) for s in plan["speakers"][split]]
    atomic_write_text(root / "speakers.tsv", "\n".join(rows) + "\n")
    ctx = mp.get_context("forkserver")
    n_utts = sum(len(t[1]) for t in tasks)
    # maxtasksperchild=1: each speaker starts from a fresh espeak engine (determinism)
    with ctx.Pool(max(1, opts.jobs), maxtasksperchild=1) as pool, \
            tqdm(total=n_utts, desc="Synthesizing", unit="utt", disable=not progress) as bar:
        seconds = 0.0
        for result in pool.imap_unordered(render_chapter, tasks):
            seconds += sum(r[1] for r in result)
            bar.update(len(result))
    log.info("Wrote %d utterances (%.1f min) to %s", n_utts, seconds / 60, root)
    return root
