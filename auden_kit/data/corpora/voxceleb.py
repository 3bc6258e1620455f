"""VoxCeleb 1/2 from local copies: Lhotse manifests and trial lists, no network.

Layouts (as distributed)::

    <vox1>/vox1_meta.csv                     VoxCeleb1 ID <tab> name <tab> gender <tab> nationality <tab> Set
    <vox1>/wav/<spk>/<session>/<utt>.wav
    <vox1>/veri_test2.txt, list_test_all2.txt, list_test_hard2.txt   (optional: Vox1-O, -E, -H trials)
    <vox2>/vox2_meta.csv                     VoxCeleb2 ID , VGGFace2 ID , Gender , Set
    <vox2>/**/<spk>/<session>/<utt>.m4a      (or .wav after conversion)

Recording ids are ``<spk>-<session>-<utt>`` (Lhotse's naming); supervisions carry the speaker,
the gender (``M``/``F``) and ``custom`` ``{"nationality", "split"}`` where known. Splits, as in
Kaldi and Lhotse: ``train`` = VoxCeleb2 (dev and test) + VoxCeleb1 dev, ``test`` = VoxCeleb1 test;
with ``--vox1-all-test`` every VoxCeleb1 speaker goes to ``test`` (for the -E and -H lists, which
cover VoxCeleb1 dev speakers too: then train on VoxCeleb2 only).
"""

from __future__ import annotations

import logging
from pathlib import Path

from auden_kit.data.corpora.folder import GENDERS
from auden_kit.errors import UserError
from auden_kit.io import atomic_write_text, save_cuts_atomic

log = logging.getLogger(__name__)
TRIAL_LISTS = {"O": "veri_test2.txt", "E": "list_test_all2.txt", "H": "list_test_hard2.txt"}


def _meta(path: Path) -> dict[str, dict]:
    """{speaker: {"gender", "nationality", "split"}} from vox1_meta.csv (tabs) or vox2_meta.csv (commas)."""
    out = {}
    lines = path.read_text(errors="replace").splitlines()
    for n, line in enumerate(lines[1:], 2):
        sep = "\t" if "\t" in line else ","
        parts = [p.strip() for p in line.split(sep)]
        if not parts or not parts[0]:
            continue
        if len(parts) == 5:  # vox1: id, name, gender, nationality, set
            spk, _, gender, nat, split = parts
        elif len(parts) == 4:  # vox2: id, vggface id, gender, set
            spk, _, gender, split = parts
            nat = ""
        else:
            raise UserError(f"'{path}' line {n}: expected 5 tab- or 4 comma-separated fields, got '{line}'")
        out[spk] = {"gender": GENDERS.get(gender.lower(), gender), "nationality": nat, "split": split}
    return out


def _scan(root: Path, ext: str, meta: dict[str, dict]) -> list[tuple[Path, str, str]]:
    """[(file, recording id, speaker)] for <spk>/<session>/<utt>.<ext> below ``root``."""
    out = []
    for p in sorted(root.rglob(f"*{ext}")):
        spk, session = p.parent.parent.name, p.parent.name
        if not spk.startswith("id"):
            continue
        out.append((p, f"{spk}-{session}-{p.stem}", spk))
    if not out:
        raise UserError(f"no <speaker>/<session>/*{ext} files under '{root}' (is it a VoxCeleb folder?)")
    unknown = sorted({s for _, _, s in out if s not in meta})
    if unknown:
        log.warning("%d speaker(s) under %s are not in the metadata, e.g. %s (no gender for them)",
                    len(unknown), root, unknown[0])
    return out


def _manifests(items, meta, jobs: int):
    from concurrent.futures import ThreadPoolExecutor

    from lhotse import Recording, RecordingSet, SupervisionSegment, SupervisionSet
    from tqdm import tqdm

    def one(item):
        path, rid, spk = item
        try:
            rec = Recording.from_file(path, recording_id=rid)
        except Exception as e:  # noqa: BLE001 - name the file
            raise UserError(f"cannot read audio file '{path}' ({e})") from None
        m = meta.get(spk, {})
        custom = {k: m[k] for k in ("nationality", "split") if m.get(k)}
        return rec, SupervisionSegment(id=rid, recording_id=rid, start=0.0, duration=rec.duration, channel=0,
                                       speaker=spk, gender=m.get("gender"), custom=custom or None)

    with ThreadPoolExecutor(max(1, jobs)) as ex:
        pairs = list(tqdm(ex.map(one, items), total=len(items), desc="Reading audio", unit="file",
                          disable=len(items) < 500))
    return RecordingSet.from_recordings(p[0] for p in pairs), SupervisionSet.from_segments(p[1] for p in pairs)


def convert_trials(src: Path, dst: Path) -> int:
    """A VoxCeleb trial list (``1 id10270/x6uYqmx31kE/00001.wav id10270/...``) with recording ids
    instead of paths; returns the number of trials."""
    rows = []
    for n, line in enumerate(src.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 3 or parts[0] not in ("0", "1"):
            raise UserError(f"'{src}' line {n}: expected '<0|1> <spk>/<session>/<utt>.wav ...', got '{line}'")
        a, b = (str(Path(x).with_suffix("")).replace("/", "-") for x in parts[1:])
        rows.append(f"{parts[0]} {a} {b}\n")
    atomic_write_text(dst, "".join(rows))
    return len(rows)


def prepare_voxceleb(vox1: str | Path | None, vox2: str | Path | None, out_dir: str | Path, jobs: int = 2,
                     trials_dir: str | Path | None = None, vox1_all_test: bool = False) -> dict[str, Path]:
    """Write ``voxceleb_{recordings,supervisions}_{train,test}.jsonl.gz`` and the trial lists found
    (``voxceleb1_{O,E,H}_trials.txt``, ids as in the manifests) to ``out_dir``; return {name: path}."""
    if not vox1 and not vox2:
        raise UserError("give the VoxCeleb1 and/or VoxCeleb2 folder")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    parts: dict[str, list] = {"train": [], "test": []}
    meta: dict[str, dict] = {}
    written: dict[str, Path] = {}
    if vox1:
        vox1 = Path(vox1)
        if not (vox1 / "vox1_meta.csv").is_file():
            raise UserError(f"'{vox1}' has no vox1_meta.csv (the VoxCeleb1 metadata file belongs in its root)")
        m1 = _meta(vox1 / "vox1_meta.csv")
        meta.update(m1)
        for item in _scan(vox1 / "wav" if (vox1 / "wav").is_dir() else vox1, ".wav", m1):
            test = vox1_all_test or m1.get(item[2], {}).get("split") == "test"
            parts["test" if test else "train"].append(item)
        tdir = Path(trials_dir) if trials_dir else vox1
        for name, fname in TRIAL_LISTS.items():
            if (tdir / fname).is_file():
                dst = out_dir / f"voxceleb1_{name}_trials.txt"
                log.info("Vox1-%s: %d trials -> %s", name, convert_trials(tdir / fname, dst), dst)
                written[f"trials_{name}"] = dst
        if not any(k.startswith("trials_") for k in written):
            log.warning("no VoxCeleb1 trial list (%s) in '%s': stage 2 makes one over the test speakers",
                        ", ".join(TRIAL_LISTS.values()), tdir)
    if vox2:
        vox2 = Path(vox2)
        meta_file = vox2 / "vox2_meta.csv"
        m2 = _meta(meta_file) if meta_file.is_file() else {}
        meta.update(m2)
        ext = ".m4a" if next(vox2.rglob("*.m4a"), None) else ".wav"
        parts["train"] += _scan(vox2, ext, m2)
    for part, items in parts.items():
        if not items:
            continue
        recs, sups = _manifests(items, meta, jobs)
        for kind, m in (("recordings", recs), ("supervisions", sups)):
            p = out_dir / f"voxceleb_{kind}_{part}.jsonl.gz"
            save_cuts_atomic(m, p)
            written[f"{kind}_{part}"] = p
        log.info("%s: %d utterances, %d speakers", part, len(items), len({s for _, _, s in items}))
    return written
