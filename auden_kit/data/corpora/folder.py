"""A folder of audio files plus Kaldi-style maps -> Lhotse manifests.

One part (``train``, ``test``, ...) is a folder holding audio files anywhere below it (the file
name without extension is the utterance id) and optional maps, one ``<utterance-id> <value>``
per line:

- ``text``: the transcript (ASR); without it, supervisions have no text (voice corpora),
- ``utt2spk``: the speaker,
- ``utt2gender``: the gender (``m``/``male``/``f``/``female`` in any case become ``M``/``F``),
- ``utt2lang``: the language,
- any other ``utt2<key>`` (``utt2emotion``, ``utt2age``, ``utt2style``, ...): ``custom[<key>]``,
- ``text.<lang>`` (speech translation): the translation into ``<lang>`` (an ISO 639 code of two or
  three letters, with a region if wanted: ``text.de``, ``text.pt-BR``, ``text.yue``), as
  ``custom["translation"]``; ESPnet's
  ``text.<case>.<lang>`` names are read too (``text.tc.de``; of several forms of one language the
  cased one: ``text.<lang>``, ``text.tc``, ``text.lc``, ``text.lc.rm``). Without a plain ``text``,
  the one in the utterance's own language (``utt2lang``, or the ``language`` given) is the transcript.

The utterances are those named in ``text`` or ``utt2spk``; without either, every audio file.
Without a ``text`` map, a transcript file beside an audio file with the same name (``a.wav`` +
``a.txt`` or ``a.lab``, as in aligner and TTS corpora) is its text.

Kaldi / ESPnet data directories: a part folder holding ``wav.scp`` (``<recording-id> <path>`` or
``<recording-id> <command> |``) is read as one: ``segments`` (``<utt> <recording> <start> <end>``;
without it each recording is one utterance), ``text`` (empty transcripts allowed), ``utt2spk``,
``spk2gender``, ``utt2lang`` and the other ``utt2<key>`` maps as above. Relative paths are tried
from the working directory, then from the recipe root (two folders above the data directory, where
Kaldi runs), then from the data directory; a command that fails from the working directory is run
from the recipe root (and stored so). Every recording keeps its own rate and channels.

Meetings (diarized ASR): a part folder holding ``segments.stm``, ``segments.json`` (SegLST) or
``segments.rttm`` (speaker times only, no words) beside the audio files is read as recordings of
several speakers instead: the file name is the recording id, and each segment of that recording
becomes a supervision (speaker, start, end, words, gender where the file gives one), overlaps kept.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from auden_kit.errors import UserError
from auden_kit.io import save_cuts_atomic

log = logging.getLogger(__name__)
AUDIO_EXTS = (".wav", ".flac", ".ogg", ".mp3", ".opus", ".m4a")
SEGMENT_FILES = ("segments.stm", "segments.json", "segments.rttm")
GENDERS = {"m": "M", "male": "M", "man": "M", "f": "F", "female": "F", "woman": "F"}


def read_map(path: Path, allow_empty: bool = False) -> dict[str, str]:
    """Kaldi ``<id> <value>`` lines (``text``, ``utt2spk``, ...); ``allow_empty``: a line with an id
    alone has the value "" (an empty Kaldi transcript). An id given twice is an error."""
    if not path.is_file():
        raise UserError(f"'{path}' does not exist")
    out = {}
    for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=1)
        if len(parts) < 2 and not allow_empty:
            raise UserError(f"'{path}' line {n}: expected '<utterance-id> <value>', got '{line}'")
        if parts[0] in out:
            raise UserError(f"'{path}' line {n}: '{parts[0]}' is given a second time (an id has one line)")
        out[parts[0]] = parts[1].strip() if len(parts) > 1 else ""
    return out


# maps Kaldi's and ESPnet's own scripts write (durations, frame and sample counts): not labels
KALDI_DERIVED = ("dur", "num_frames", "num_samples", "uniq")


# text.<lang> / text.<case>.<lang>: the last part is a language code (ISO 639-1 or -3: languages such
# as Cantonese, yue, have no two-letter one); of several forms of one language, the first of these
# cases is taken (the cased text is what BLEU scores by default)
LANGUAGE_SUFFIX = re.compile(r"^[a-z]{2,3}([-_][A-Za-z]{2,4})?$")
# suffixes of two or three letters that name a file's kind or state, not a language (text.bak, text.gz)
NOT_LANGUAGES = frozenset("bak old new tmp txt raw org out err log ref hyp csv tsv ctm stm tok bpe seg swp sav "
                          "cpy dup cln gz".split())
CASES = ("", "tc", "lc", "lc.rm")
TRANSLATION = "translation."  # maps key prefix of the texts in each language


def language_texts(folder: Path) -> dict[str, Path]:
    """{language: file} of the ``text.<lang>`` / ``text.<case>.<lang>`` files in ``folder``."""
    found: dict[str, tuple[int, Path]] = {}
    for f in sorted(folder.glob("text.*")):
        *case, lang = f.name.split(".")[1:]
        if not f.is_file():
            continue
        if not LANGUAGE_SUFFIX.match(lang) or lang in NOT_LANGUAGES:
            log.warning("'%s' is not read: '%s' is not a language code (a translation is text.<lang>, e.g. "
                        "text.de, text.pt-BR, text.yue)", f, lang)
            continue
        case = ".".join(case)
        rank = CASES.index(case) if case in CASES else len(CASES)
        if lang not in found or rank < found[lang][0]:
            found[lang] = (rank, f)
    return {lang: f for lang, (_, f) in found.items()}


def read_maps(folder: Path, allow_empty_text: bool = False, language: str | None = None) -> dict[str, dict[str, str]]:
    """{"text": {...}, "spk": {...}, "gender": {...}, <key>: {...}, "translation.<lang>": {...}} from
    the maps in ``folder``; ``language``: the spoken language of utterances ``utt2lang`` does not name."""
    maps = {}
    if (folder / "text").is_file():
        maps["text"] = read_map(folder / "text", allow_empty=allow_empty_text)
    for f in sorted(folder.glob("utt2*")):
        if f.is_file() and len(f.name) > 4 and f.name[4:] not in KALDI_DERIVED:
            maps[f.name[4:]] = read_map(f)
    texts = language_texts(folder)
    for lang, f in texts.items():
        maps[TRANSLATION + lang] = read_map(f, allow_empty=True)
    langs = maps.get("lang", {})
    if texts and not language and not langs:
        raise UserError(f"'{folder}' has texts in {', '.join(sorted(texts))} ({', '.join(f.name for f in texts.values())}): "
                        "say which language is spoken (a utt2lang map, or --language) so that the others are "
                        "its translations" + ("" if "text" in maps else " and its own is the transcript"))
    if texts and "text" not in maps:  # the transcript: the text in each utterance's own language
        ids = {u for lang in texts for u in maps[TRANSLATION + lang]}
        maps["text"] = {u: maps[TRANSLATION + src][u] for u in sorted(ids)
                        if (src := langs.get(u, language)) and TRANSLATION + src in maps and u in maps[TRANSLATION + src]}
        if not maps["text"]:
            raise UserError(f"'{folder}': no utterance has a text in its own language "
                            f"({language or 'utt2lang'}; texts in {', '.join(sorted(texts))})")
    return maps


def _supervision(utt: str, rec, start: float, duration: float, maps: dict, language: str | None = None):
    """The supervision of utterance ``utt`` with its labels from ``maps`` (text, spk, gender, lang,
    translations -> custom["translation"], any other key -> custom); ``language``: the spoken
    language when ``utt2lang`` does not name it."""
    from lhotse import SupervisionSegment

    from auden_kit.data.translation import KEY

    gender = maps.get("gender", {}).get(utt)
    lang = maps.get("lang", {}).get(utt) or language
    custom = {k: m[utt] for k, m in maps.items()
              if k not in ("text", "spk", "gender", "lang") and not k.startswith(TRANSLATION) and utt in m}
    trans = [{"language": k[len(TRANSLATION):], "text": m[utt]} for k, m in maps.items()
             if k.startswith(TRANSLATION) and k[len(TRANSLATION):] != lang and m.get(utt, "").strip()]
    if trans:
        custom[KEY] = trans
    return SupervisionSegment(
        id=utt, recording_id=rec.id, start=start, duration=duration, channel=0,
        text=maps.get("text", {}).get(utt), speaker=maps.get("spk", {}).get(utt),
        language=lang, gender=GENDERS.get(gender.lower(), gender) if gender else None,
        custom=custom or None)


def parse_parts(spec) -> list[tuple[str, str]]:
    """Parts as (manifest name, sub-folder): ``"train dev test"`` or, to rename, ``"train=train_nodev
    dev=train_dev test"`` (space- or comma-separated string, or a list)."""
    items = spec.replace(",", " ").split() if isinstance(spec, str) else list(spec)
    out = []
    for it in items:
        name, _, sub = it.partition("=")
        if not name or (_ and not sub):
            raise UserError(f"part '{it}': expected <name> or <name>=<sub-folder>")
        out.append((name, sub or name))
    return out


def prepare_folder(audio_dir: str | Path, out_dir: str | Path, prefix: str, part: str,
                   maps_dir: str | Path | None = None, language: str | None = None) -> tuple[Path, Path]:
    """Write ``{prefix}_recordings_{part}.jsonl.gz`` and ``{prefix}_supervisions_{part}.jsonl.gz``
    from the audio under ``audio_dir`` and the maps in ``maps_dir`` (default: ``audio_dir``);
    ``language``: the spoken language of utterances that no ``utt2lang`` map names."""
    audio_dir, out_dir = Path(audio_dir), Path(out_dir)
    if not audio_dir.is_dir():
        raise UserError(f"audio folder '{audio_dir}' does not exist")
    if (audio_dir / "wav.scp").is_file():
        return _prepare_kaldi(audio_dir, out_dir, prefix, part, language)
    audio: dict[str, Path] = {}
    for p in sorted(audio_dir.rglob("*")):
        if p.suffix.lower() in AUDIO_EXTS:
            if p.stem in audio:
                raise UserError(f"two audio files share the utterance id '{p.stem}': '{audio[p.stem]}' and '{p}' "
                                "(ids are file names without extension; rename one)")
            audio[p.stem] = p
    seg_dir = Path(maps_dir) if maps_dir else audio_dir
    seg_file = next((seg_dir / n for n in SEGMENT_FILES if (seg_dir / n).is_file()), None)
    if seg_file is not None:
        return _prepare_meetings(audio, seg_file, out_dir, prefix, part)
    maps = read_maps(seg_dir, language=language)  # utterance folders only: a meetings folder's maps are not read
    if "text" not in maps:  # transcripts beside the audio: a.wav + a.txt / a.lab
        side = {u: t for u, p in audio.items() for t in (p.with_suffix(".txt"), p.with_suffix(".lab")) if t.is_file()}
        if side:
            maps["text"] = {u: " ".join(t.read_text(encoding="utf-8", errors="replace").split()) for u, t in side.items()}
            if len(side) < len(audio):
                log.warning("%s: %d of %d audio files have no transcript file beside them (.txt/.lab) and are left out, e.g. '%s'",
                            part, len(audio) - len(side), len(audio), next(p for u, p in audio.items() if u not in side))
    named = maps.get("text") or maps.get("spk")
    utts = sorted(named) if named else sorted(audio)
    if not utts:
        if (audio_dir / "feats.scp").is_file():
            raise UserError(f"'{audio_dir}' holds feats.scp but no wav.scp: Kaldi features are not read here (the "
                            "toolkit computes its own from audio); give the data directory with its wav.scp")
        raise UserError(f"no audio files ({', '.join(AUDIO_EXTS)}) under '{audio_dir}'")
    missing = [u for u in utts if u not in audio]
    if missing:
        src = "text" if maps.get("text") else "utt2spk"
        raise UserError(f"{len(missing)} utterance(s) in '{src}' have no audio file under '{audio_dir}', "
                        f"e.g. '{missing[0]}'")
    recs = read_all({utt: audio[utt] for utt in utts}, _recording_from_file, f"Reading {part}", "audio file")
    sups = [_supervision(utt, rec, 0.0, rec.duration, maps, language) for utt, rec in recs.items()]
    recs = list(recs.values())
    rp, sp = _write(recs, sups, out_dir, prefix, part)
    log.info("%s: %d utterances, maps %s -> %s, %s", part, len(recs), sorted(maps) or "none", rp, sp)
    return rp, sp


def _recording_from_file(rid: str, path: Path):
    """A Lhotse Recording of one audio file; UserError naming the file with the reason in one line
    (Lhotse's own message lists every audio backend it tried)."""
    from lhotse import Recording

    try:
        return Recording.from_file(path, recording_id=rid)
    except Exception as e:  # noqa: BLE001 - name the file
        import soundfile as sf

        try:
            sf.info(str(path))
            reason = str(e).splitlines()[0]
        except Exception as e2:  # noqa: BLE001 - libsndfile's reason is the short one
            reason = str(e2)
        raise UserError(f"cannot read audio file '{path}' ({reason})") from None


MAX_LISTED = 10  # unreadable inputs named one by one in the error, then a count


def read_all(items: dict, read, desc: str, unit: str) -> dict:
    """``{key: read(key, item)}`` for every item (a progress bar past 200), reading on past the
    inputs that fail: a corpus with several bad files names them all in one UserError (the first
    ``MAX_LISTED``, then how many more) instead of one per run, and nothing is written."""
    from tqdm import tqdm

    out, bad = {}, []
    for key, item in tqdm(items.items(), desc=desc, unit=unit, disable=len(items) < 200):
        try:
            out[key] = read(key, item)
        except UserError as e:
            bad.append(str(e))
    if bad:
        listed = "\n  ".join(bad[:MAX_LISTED])
        more = f"\n  ... and {len(bad) - MAX_LISTED} more" if len(bad) > MAX_LISTED else ""
        raise UserError(f"{len(bad)} of {len(items)} {unit}(s) cannot be read; nothing was written (remove, convert "
                        f"or re-fetch them, then run again):\n  {listed}{more}")
    return out


def _write(recs: list, sups: list, out_dir: Path, prefix: str, part: str) -> tuple[Path, Path]:
    """``{prefix}_recordings_{part}.jsonl.gz`` and ``{prefix}_supervisions_{part}.jsonl.gz`` (atomically)."""
    from lhotse import RecordingSet, SupervisionSet

    out_dir.mkdir(parents=True, exist_ok=True)
    rp = out_dir / f"{prefix}_recordings_{part}.jsonl.gz"
    sp = out_dir / f"{prefix}_supervisions_{part}.jsonl.gz"
    save_cuts_atomic(RecordingSet.from_recordings(recs), rp)
    save_cuts_atomic(SupervisionSet.from_segments(sups), sp)
    return rp, sp


def _prepare_meetings(audio: dict[str, Path], seg_file: Path, out_dir: Path, prefix: str, part: str
                      ) -> tuple[Path, Path]:
    """Recordings of the audio files that ``seg_file`` names, one supervision per segment."""
    from lhotse import SupervisionSegment

    from auden_kit.data.segments import read_segments

    segs = read_segments(seg_file)
    if not segs:
        raise UserError(f"'{seg_file}' holds no segments")
    missing = sorted(r for r in segs if r not in audio)
    if missing:
        raise UserError(f"{len(missing)} recording(s) of '{seg_file}' have no audio file beside it (the file name "
                        f"without extension is the recording id), e.g. '{missing[0]}'")
    unused = sorted(set(audio) - set(segs))
    if unused:
        log.warning("%s: %d audio file(s) have no segments in %s and are left out, e.g. '%s'", part, len(unused),
                    seg_file.name, unused[0])
    read = read_all({rid: audio[rid] for rid in sorted(segs)}, _recording_from_file, f"Reading {part}", "audio file")
    recs, sups = [], []
    for rid, rec in read.items():
        recs.append(rec)
        for k, sg in enumerate(segs[rid]):
            if sg.start < 0 or sg.end <= sg.start or sg.start >= rec.duration:
                raise UserError(f"'{seg_file}': segment {sg.start:.3f}-{sg.end:.3f} s of '{rid}' ({sg.speaker}) is not "
                                f"inside the recording (0-{rec.duration:.3f} s); fix or remove it")
            sups.append(SupervisionSegment(
                id=f"{rid}-{k:05d}", recording_id=rid, start=sg.start,
                duration=round(min(sg.end, rec.duration) - sg.start, 3), channel=0, text=sg.text or None,
                speaker=sg.speaker, gender={"m": "M", "f": "F"}.get(sg.gender)))
    rp, sp = _write(recs, sups, out_dir, prefix, part)
    log.info("%s: %d recordings, %d segments from %s -> %s, %s", part, len(recs), len(sups), seg_file.name, rp, sp)
    return rp, sp


def _kaldi_recording(rid: str, entry: str, data_dir: Path, where: str):
    """The recording of one ``wav.scp`` entry: a file path, or a command writing audio to stdout."""
    import io
    import re
    import shlex
    import subprocess

    import soundfile as sf
    from lhotse import AudioSource, Recording

    if entry.endswith("|"):
        cmd = entry[:-1].strip()
        r = subprocess.run(cmd, shell=True, capture_output=True)
        root, also = data_dir.parent.parent, ""
        if (r.returncode != 0 or not r.stdout) and root.resolve() != Path.cwd():  # Kaldi runs them from the recipe root
            at_root = f"cd {shlex.quote(str(root.resolve()))} && {cmd}"
            r2 = subprocess.run(at_root, shell=True, capture_output=True)
            if r2.returncode == 0 and r2.stdout:
                cmd, r = at_root, r2
            also = f" (here and from the recipe root '{root}')"
        err = r.stderr.decode(errors="replace").strip()[-300:]
        if r.returncode != 0 or not r.stdout:
            raise UserError(f"{where} ('{rid}'): the command '{cmd}' failed{also} (exit {r.returncode})"
                            f"{': ' + err if err else ''}; is its program on PATH?")
        try:
            x, rate = sf.read(io.BytesIO(r.stdout), dtype="float32", always_2d=True)
        except Exception as e:  # noqa: BLE001 - name the entry
            raise UserError(f"{where} ('{rid}'): the command '{cmd}' did not write audio to stdout ({e})") from None
        return Recording(id=rid, sources=[AudioSource(type="command", channels=list(range(x.shape[1])), source=cmd)],
                         sampling_rate=rate, num_samples=x.shape[0], duration=x.shape[0] / rate)
    if re.search(r"\.ark:\d+$", entry):
        raise UserError(f"{where} ('{rid}'): '{entry}' is audio inside a Kaldi archive, which is not read here; "
                        "write the recordings out as files first (Kaldi: wav-copy scp:wav.scp ark,t:- or a per-file loop)")
    path = Path(entry)
    tries = [path] if path.is_absolute() else [path, data_dir.parent.parent / path, data_dir / path]
    found = next((p for p in tries if p.is_file()), None)
    if found is None:
        raise UserError(f"{where} ('{rid}'): audio file '{entry}' not found (tried {', '.join(str(p) for p in tries)})")
    try:
        return _recording_from_file(rid, found)
    except UserError as e:
        raise UserError(f"{where} ('{rid}'): {e}") from None


def _prepare_kaldi(data_dir: Path, out_dir: Path, prefix: str, part: str, language: str | None = None
                   ) -> tuple[Path, Path]:
    """Manifests of a Kaldi / ESPnet data directory (``wav.scp``, ``segments``, ``text``,
    ``utt2spk``, ``spk2gender``, ``utt2lang``, other ``utt2<key>``)."""
    scp = data_dir / "wav.scp"
    entries: dict[str, tuple[int, str]] = {}
    for n, line in enumerate(scp.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=1)
        if len(parts) < 2:
            raise UserError(f"'{scp}' line {n}: expected '<recording-id> <path>' or '<recording-id> <command> |', "
                            f"got '{line}'")
        if parts[0] in entries:
            raise UserError(f"'{scp}' line {n}: recording id '{parts[0]}' again (first on line {entries[parts[0]][0]})")
        entries[parts[0]] = (n, parts[1].strip())
    if not entries:
        raise UserError(f"'{scp}' lists no recordings")
    recs = read_all(entries, lambda rid, e: _kaldi_recording(rid, e[1], data_dir, f"'{scp}' line {e[0]}"),
                    f"Reading {part}", "recording")
    maps = read_maps(data_dir, allow_empty_text=True, language=language)
    if (data_dir / "spk2gender").is_file():
        spk2gender = read_map(data_dir / "spk2gender")
        maps.setdefault("gender", {}).update({u: spk2gender[s] for u, s in maps.get("spk", {}).items()
                                              if s in spk2gender and u not in maps.get("gender", {})})
    sups = []
    seg_file = data_dir / "segments"
    if seg_file.is_file():
        for n, line in enumerate(seg_file.read_text().splitlines(), 1):
            if not line.strip():
                continue
            f = line.split()
            where = f"'{seg_file}' line {n}"
            try:
                utt, rid, start, end = f[0], f[1], float(f[2]), float(f[3])
            except (IndexError, ValueError):
                raise UserError(f"{where}: expected '<utterance-id> <recording-id> <start> <end>', got '{line}'") from None
            if rid not in recs:
                raise UserError(f"{where}: recording '{rid}' of utterance '{utt}' is not in '{scp}'")
            dur = recs[rid].duration
            end = dur if end == -1 else min(end, dur) if end <= dur + 0.5 else end
            if start < 0 or end <= start or end > dur:
                raise UserError(f"{where}: utterance '{utt}' ({f[2]}-{f[3]} s) is not inside recording '{rid}' "
                                f"(0-{dur:.3f} s); fix or remove it")
            sups.append(_supervision(utt, recs[rid], start, round(end - start, 3), maps, language))
    else:
        sups = [_supervision(rid, rec, 0.0, rec.duration, maps, language) for rid, rec in recs.items()]
    if maps.get("text"):
        ids = {s.id for s in sups}
        unknown = [u for u in maps["text"] if u not in ids]
        if unknown:
            log.warning("%s: %d utterance(s) of 'text' are not in %s and are left out, e.g. '%s'", part, len(unknown),
                        "segments" if seg_file.is_file() else "wav.scp", unknown[0])
    rp, sp = _write(list(recs.values()), sups, out_dir, prefix, part)
    log.info("%s (Kaldi data directory): %d recordings, %d utterances -> %s, %s", part, len(recs), len(sups), rp, sp)
    return rp, sp
