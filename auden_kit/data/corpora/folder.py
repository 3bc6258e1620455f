"""A folder of audio files plus Kaldi-style maps -> Lhotse manifests.

One part (``train``, ``test``, ...) is a folder holding audio files anywhere below it (the file
name without extension is the utterance id) and optional maps, one ``<utterance-id> <value>``
per line:

- ``text``: the transcript (ASR); without it, supervisions have no text (voice corpora),
- ``utt2spk``: the speaker,
- ``utt2gender``: the gender (``m``/``male``/``f``/``female`` in any case become ``M``/``F``),
- ``utt2lang``: the language,
- any other ``utt2<key>`` (``utt2emotion``, ``utt2age``, ``utt2style``, ...): ``custom[<key>]``.

The utterances are those named in ``text`` or ``utt2spk``; without either, every audio file.

Meetings (diarized ASR): a part folder holding ``segments.stm``, ``segments.json`` (SegLST) or
``segments.rttm`` (speaker times only, no words) beside the audio files is read as recordings of
several speakers instead: the file name is the recording id, and each segment of that recording
becomes a supervision (speaker, start, end, words, gender where the file gives one), overlaps kept.
"""

from __future__ import annotations

import logging
from pathlib import Path

from auden_kit.errors import UserError
from auden_kit.io import save_cuts_atomic

log = logging.getLogger(__name__)
AUDIO_EXTS = (".wav", ".flac", ".ogg", ".mp3", ".opus", ".m4a")
SEGMENT_FILES = ("segments.stm", "segments.json", "segments.rttm")
GENDERS = {"m": "M", "male": "M", "man": "M", "f": "F", "female": "F", "woman": "F"}


def _read_map(path: Path) -> dict[str, str]:
    out = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=1)
        if len(parts) < 2:
            raise UserError(f"'{path}' line {n}: expected '<utterance-id> <value>', got '{line}'")
        out[parts[0]] = parts[1].strip()
    return out


def read_maps(folder: Path) -> dict[str, dict[str, str]]:
    """{"text": {...}, "spk": {...}, "gender": {...}, <key>: {...}} from the maps in ``folder``."""
    maps = {}
    if (folder / "text").is_file():
        maps["text"] = _read_map(folder / "text")
    for f in sorted(folder.glob("utt2*")):
        if f.is_file() and len(f.name) > 4:
            maps[f.name[4:]] = _read_map(f)
    return maps


def prepare_folder(audio_dir: str | Path, out_dir: str | Path, prefix: str, part: str,
                   maps_dir: str | Path | None = None) -> tuple[Path, Path]:
    """Write ``{prefix}_recordings_{part}.jsonl.gz`` and ``{prefix}_supervisions_{part}.jsonl.gz``
    from the audio under ``audio_dir`` and the maps in ``maps_dir`` (default: ``audio_dir``)."""
    from lhotse import Recording, SupervisionSegment
    from tqdm import tqdm

    audio_dir, out_dir = Path(audio_dir), Path(out_dir)
    if not audio_dir.is_dir():
        raise UserError(f"audio folder '{audio_dir}' does not exist")
    maps = read_maps(Path(maps_dir) if maps_dir else audio_dir)
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
    named = maps.get("text") or maps.get("spk")
    utts = sorted(named) if named else sorted(audio)
    if not utts:
        raise UserError(f"no audio files ({', '.join(AUDIO_EXTS)}) under '{audio_dir}'")
    missing = [u for u in utts if u not in audio]
    if missing:
        src = "text" if maps.get("text") else "utt2spk"
        raise UserError(f"{len(missing)} utterance(s) in '{src}' have no audio file under '{audio_dir}', "
                        f"e.g. '{missing[0]}'")
    recs, sups = [], []
    for utt in tqdm(utts, desc=f"Reading {part}", unit="file", disable=len(utts) < 200):
        try:
            rec = Recording.from_file(audio[utt], recording_id=utt)
        except Exception as e:  # noqa: BLE001 - name the file
            raise UserError(f"cannot read audio file '{audio[utt]}' ({e})") from None
        gender = maps.get("gender", {}).get(utt)
        custom = {k: m[utt] for k, m in maps.items() if k not in ("text", "spk", "gender", "lang") and utt in m}
        recs.append(rec)
        sups.append(SupervisionSegment(
            id=utt, recording_id=utt, start=0.0, duration=rec.duration, channel=0,
            text=maps.get("text", {}).get(utt), speaker=maps.get("spk", {}).get(utt),
            language=maps.get("lang", {}).get(utt), gender=GENDERS.get(gender.lower(), gender) if gender else None,
            custom=custom or None))
    rp, sp = _write(recs, sups, out_dir, prefix, part)
    log.info("%s: %d utterances, maps %s -> %s, %s", part, len(recs), sorted(maps) or "none", rp, sp)
    return rp, sp


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
    from lhotse import Recording, SupervisionSegment

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
    recs, sups = [], []
    for rid in sorted(segs):
        try:
            rec = Recording.from_file(audio[rid], recording_id=rid)
        except Exception as e:  # noqa: BLE001 - name the file
            raise UserError(f"cannot read audio file '{audio[rid]}' ({e})") from None
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
