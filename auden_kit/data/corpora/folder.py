"""A folder of audio files plus a Kaldi-style ``text`` file -> Lhotse manifests.

``text`` lines: ``<utterance-id> <transcript>``; the audio of an utterance is the
file whose name (without extension) is its id, anywhere under the folder. An
optional ``utt2spk`` (``<utterance-id> <speaker>``) sets speakers.
"""

from __future__ import annotations

import logging
from pathlib import Path

from auden_kit.errors import UserError
from auden_kit.io import save_cuts_atomic

log = logging.getLogger(__name__)
AUDIO_EXTS = (".wav", ".flac", ".ogg", ".mp3", ".opus")


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


def prepare_folder(audio_dir: str | Path, text_file: str | Path, out_dir: str | Path, prefix: str, part: str,
                   utt2spk: str | Path | None = None) -> tuple[Path, Path]:
    """Write ``{prefix}_recordings_{part}.jsonl.gz`` and ``{prefix}_supervisions_{part}.jsonl.gz``."""
    from lhotse import Recording, RecordingSet, SupervisionSegment, SupervisionSet

    audio_dir, text_file, out_dir = Path(audio_dir), Path(text_file), Path(out_dir)
    if not audio_dir.is_dir():
        raise UserError(f"audio folder '{audio_dir}' does not exist")
    if not text_file.is_file():
        raise UserError(f"transcript file '{text_file}' does not exist")
    texts = _read_map(text_file)
    speakers = _read_map(Path(utt2spk)) if utt2spk else {}
    audio = {p.stem: p for p in audio_dir.rglob("*") if p.suffix.lower() in AUDIO_EXTS}
    missing = [u for u in texts if u not in audio]
    if missing:
        raise UserError(f"{len(missing)} utterance(s) in '{text_file}' have no audio file under '{audio_dir}', "
                        f"e.g. '{missing[0]}'")
    recs, sups = [], []
    for utt, text in sorted(texts.items()):
        try:
            rec = Recording.from_file(audio[utt], recording_id=utt)
        except Exception as e:  # noqa: BLE001 - name the file
            raise UserError(f"cannot read audio file '{audio[utt]}' ({e})") from None
        recs.append(rec)
        sups.append(SupervisionSegment(id=utt, recording_id=utt, start=0.0, duration=rec.duration, channel=0,
                                       text=text, speaker=speakers.get(utt)))
    out_dir.mkdir(parents=True, exist_ok=True)
    rp = out_dir / f"{prefix}_recordings_{part}.jsonl.gz"
    sp = out_dir / f"{prefix}_supervisions_{part}.jsonl.gz"
    save_cuts_atomic(RecordingSet.from_recordings(recs), rp)
    save_cuts_atomic(SupervisionSet.from_segments(sups), sp)
    log.info("%s: %d utterances -> %s, %s", part, len(recs), rp, sp)
    return rp, sp
