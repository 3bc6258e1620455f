#!/usr/bin/env python3
"""The recipe's figures against its goals (held-out simulated meetings, 2 CPU cores)."""

import argparse
import json
from pathlib import Path


def load(p):
    return json.loads(Path(p).read_text()) if p and Path(p).is_file() else {}


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tagspeech", required=True)
    ap.add_argument("--cascade", default="")
    ap.add_argument("--long", default="")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    t, c, lg = load(a.tagspeech), load(a.cascade), load(a.long)
    goals = [("cpWER <= 15 %", t.get("cpwer", 1e9) <= 15), ("DER <= 10 % (collar 0.25 s)", t.get("der", 1e9) <= 10),
             ("speaker count >= 90 %", t.get("spk_count_acc", 0) >= 90), ("fail rate 0", t.get("fail_rate", 1) == 0),
             ("cpWER below the cascade's", bool(c) and t.get("cpwer", 1e9) < c.get("cpwer", -1))]
    keys = ["cpwer", "tcpwer", "wer", "der", "der_collar0", "miss", "false_alarm", "confusion", "spk_count_acc",
            "spk_count_mae", "fail_rate"]
    print(f"{'':18}{'tagspeech':>12}{'cascade':>12}{'long':>12}")
    for k in keys:
        row = [d.get(k) for d in (t, c, lg)]
        print(f"{k:18}" + "".join(f"{v:12.2f}" if isinstance(v, (int, float)) else f"{'-':>12}" for v in row))
    for name, ok in goals:
        print(f"{'MET ' if ok else 'NOT MET'} {name}")
    if lg:
        print(f"long recording: {lg['recording_s']} s, RTF {lg['rtf']}, peak RSS {lg['peak_rss_mb']} MB, "
              f"speakers {lg['hyp_speakers']} found / {lg['ref_speakers']}")
    Path(a.out).write_text(json.dumps({"tagspeech": t, "cascade": c, "long": lg,
                                       "goals": {n: ok for n, ok in goals}}, indent=1) + "\n")


if __name__ == "__main__":
    main()
