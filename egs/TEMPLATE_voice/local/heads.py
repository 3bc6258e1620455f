#!/usr/bin/env python3
"""Print the training overrides for the label heads a supervision manifest supports: ``gender``
and every ``custom`` key with at least two distinct values (``utt2emotion`` -> custom.emotion,
...), and age groups when ``custom.age`` holds numbers. Edit ``conf/train.yaml`` (model.heads,
model.head_weights) instead to choose heads by hand."""

import argparse
import sys

from lhotse import load_manifest_lazy


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("supervisions")
    p.add_argument("--age-groups", default="18 40 61", help="Edges for custom.age ('' keeps raw values).")
    a = p.parse_args()
    values: dict[str, set] = {}
    for s in load_manifest_lazy(a.supervisions):
        if s.gender:
            values.setdefault("gender", set()).add(s.gender)
        for k, v in (s.custom or {}).items():
            values.setdefault(f"custom.{k}", set()).add(str(v))
    heads = sorted(h for h, v in values.items() if len(v) >= 2)
    out = [f"model.heads=[{','.join(heads)}]"]
    if "custom.age" in heads and a.age_groups.strip():
        try:
            [float(v) for v in values["custom.age"] if v.strip().lower() not in ("", "null", "none")]
        except ValueError:
            print("local/heads.py: utt2age holds non-numbers; training age as classes", file=sys.stderr)
        else:
            out.append('model.label_bins={"custom.age":[%s]}' % ",".join(a.age_groups.split()))
    print(" ".join(out))  # no spaces inside an override: run.sh passes them unquoted


if __name__ == "__main__":
    main()
