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
"""

from __future__ import annotations

import logging
from pathlib import Path

from auden_kit.errors import UserError
from auden_kit.io import save_cuts_atomic

log = logging.getLogger(__name__)
AUDIO_EXTS = (".wav", ".flac", ".ogg", ".mp3", ".opus", ".m4a")
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
    from lhotse import Recording, RecordingSet, SupervisionSegment, SupervisionSet
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
    out_dir.mkdir(parents=True, exist_ok=True)
    rp = out_dir / f"{prefix}_recordings_{part}.jsonl.gz"
    sp = out_dir / f"{prefix}_supervisions_{part}.jsonl.gz"
    save_cuts_atomic(RecordingSet.from_recordings(recs), rp)
    save_cuts_atomic(SupervisionSet.from_segments(sups), sp)
    log.info("%s: %d utterances, maps %s -> %s, %s", part, len(recs), sorted(maps) or "none", rp, sp)
    return rp, sp
