"""Lhotse Shar: data at scale as sequential shards (tar files of features or audio beside
``cuts.NNNNNN.jsonl.gz``), read from local paths or any URL Lhotse can open (``pipe:``,
``s3://`` through its I/O backends).

A Shar source in ``data.train_cuts`` is either a directory written by ``auden-kit data shar``
(or Lhotse's ``to_shar``) or a ``shar_index.json`` listing the shard URLs per field::

    {"fields": {"cuts": ["s3://bucket/cuts.000000.jsonl.gz", ...],
                "features": ["s3://bucket/features.000000.tar", ...]}}

(relative entries are relative to the JSON's folder). Training with several ranks gives rank
``r`` the shards ``r, r + W, r + 2W, ...`` of every source, so ranks read disjoint data and never
a shard they do not use; the data loader's workers receive whole batches from the sampler, so
they are disjoint too. Ranks may end up with a different number of batches: the trainer ends an
epoch for all ranks when the first runs out (see ``Trainer``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from auden_kit.errors import UserError

INDEX = "shar_index.json"
_SHARD = re.compile(r"^(?P<field>[A-Za-z_]+)\.(?P<idx>\d{6})\.(?:jsonl\.gz|tar(?:\.gz)?|.+)$")


def is_shar(path: str | Path) -> bool:
    p = Path(str(path))
    return (p.is_dir() and (any(p.glob("cuts.*.jsonl.gz")) or (p / INDEX).is_file())) or \
        (p.suffix == ".json" and p.is_file())


def shard_fields(path: str | Path) -> dict[str, list[str]]:
    """{field: [shard path or URL, ...]} of one Shar source, shards in index order."""
    p = Path(str(path))
    if p.is_dir() and (p / INDEX).is_file():
        p = p / INDEX
    if p.suffix == ".json":
        try:
            fields = json.loads(p.read_text())["fields"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise UserError(f"Shar index '{p}' cannot be read ({e}); it needs {{\"fields\": {{\"cuts\": [...], "
                            "...}}}") from None
        return {k: [v if "://" in v or v.startswith(("/", "pipe:")) else str(p.parent / v) for v in vs]
                for k, vs in fields.items()}
    out: dict[str, list[str]] = {}
    for f in sorted(p.iterdir()):
        m = _SHARD.match(f.name)
        if m:
            out.setdefault(m["field"], []).append(str(f))
    return out


def open_shar(sources, rank: int = 0, world: int = 1, cuts_only: bool = False):
    """A lazy CutSet over the given Shar sources; with ``world`` > 1 only this rank's shards.
    ``cuts_only``: the cut manifests without their tar fields (statistics, label maps)."""
    from lhotse import CutSet

    fields: dict[str, list[str]] = {}
    for s in sources:
        fs = shard_fields(s)
        if "cuts" not in fs:
            raise UserError(f"Shar source '{s}' has no cuts.NNNNNN.jsonl.gz shards")
        n = len(fs["cuts"])
        odd = [k for k, v in fs.items() if len(v) != n]
        if odd:
            raise UserError(f"Shar source '{s}': field(s) {odd} do not have one shard per cuts shard ({n})")
        if fields and set(fs) != set(fields):
            raise UserError(f"Shar sources have different fields ({sorted(fields)} vs {sorted(fs)} in '{s}')")
        for k, v in fs.items():
            fields.setdefault(k, []).extend(v)
    n = len(fields["cuts"])
    if world > 1:
        if n < world:
            raise UserError(f"the Shar data has {n} shard(s) for {world} ranks: every rank needs at least one "
                            "(export with a smaller --shard-size)")
        fields = {k: v[rank::world] for k, v in fields.items()}
    if cuts_only:
        fields = {"cuts": fields["cuts"]}
    return CutSet.from_shar(fields=fields)


def export_shar(cuts, out_dir: str | Path, shard_size: int = 1000, audio: bool = False, features: bool = True,
                num_jobs: int = 1) -> dict:
    """Write ``cuts`` as Shar shards (features as lilcom, audio as flac when asked) and a
    ``shar_index.json`` with relative names; return {field: [file names]}."""
    from auden_kit.io import atomic_write_text

    first = next(iter(cuts), None)
    if first is None:
        raise UserError("nothing to export: the manifest is empty")
    fields = {}
    if features:
        if not first.has_features:
            raise UserError(f"cut '{first.id}' has no features: run `auden-kit data fbank` first, or export audio "
                            "only (--audio --no-features)")
        fields["features"] = "lilcom"
    if audio:
        fields["recording"] = "flac"
    if not fields:
        raise UserError("export at least one of features / audio")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    try:
        written = cuts.to_shar(out, fields=fields, shard_size=shard_size, num_jobs=num_jobs, verbose=False,
                               warn_unused_fields=False)
    except OSError as e:
        raise UserError(f"cannot read the data to export ({e}); paths in a manifest are relative to where it was "
                        "made: run from that folder") from None
    names = {k: [Path(v).name for v in vs] for k, vs in written.items()}
    atomic_write_text(out / INDEX, json.dumps({"fields": names}, indent=1) + "\n")
    return names
