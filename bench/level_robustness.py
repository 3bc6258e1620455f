#!/usr/bin/env python3
"""How a model reads the same speech recorded quieter or louder, with and without the input level
matched to its training audio (:mod:`auden_kit.data.level`). The waveforms of the first ``--num``
cuts of a manifest are scaled by each gain (clipped to [-1, 1], as a recorder would) and decoded
through the Python API.

ASR models: WER against the cuts' texts. Voice models (embeddings): the mean cosine of each
scaled input's embedding to the same input's at 0 dB (1.0 = the level changes nothing), and with
``--trials`` the cosine EER of a trial list when every utterance of the manifest is at its own
random gain in ``--trial-gains`` (seeded): recordings of one speaker made at different levels.

    python bench/level_robustness.py --model egs/mini_synth/exp/model-avg \
        --cuts egs/mini_synth/data/fbank/librispeech_cuts_test-clean.jsonl.gz [--num 200]
    cd egs/mini_synth_voice && python ../../bench/level_robustness.py --model exp/model-avg \
        --cuts data/fbank/voices_cuts_test.jsonl.gz --num 100 --trials data/trials_test.txt
"""

import argparse
import itertools
import json

import numpy as np
import torch


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--cuts", required=True)
    p.add_argument("--num", type=int, default=200)
    p.add_argument("--gains", default="-50,-40,-30,-20,-10,0,6,12", help="dB, comma-separated")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--trials", default="", help="voice models: a trial list over the manifest's utterances")
    p.add_argument("--trial-gains", default="-20,10", help="dB range of the random gain per utterance")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    import auden_kit
    from lhotse import load_manifest_lazy

    from auden_kit.metrics.wer import compute_wer

    m = auden_kit.load(a.model)
    cuts = list(itertools.islice(load_manifest_lazy(a.cuts), a.num))
    wavs = [torch.from_numpy(c.load_audio()).mean(0) for c in cuts]
    rate = cuts[0].sampling_rate
    asr = m.task.name == "asr"
    stats = m.assets.data_stats
    print(f"model {a.model} ({m.task.name}); training level range (dB): "
          + (f"p5 {stats['level_db_p5']}  p50 {stats['level_db_p50']}  p95 {stats['level_db_p95']}"
             if "level_db_p5" in stats else "not recorded (a folder from before; nothing is matched)"))
    ref_emb = None
    if not asr:
        ref_emb = [m.embed(w.numpy(), sample_rate=rate).embedding for w in wavs]
    rows = []
    for g in [float(x) for x in a.gains.split(",")]:
        xs = [torch.clamp(w * 10 ** (g / 20), -1, 1) for w in wavs]
        dbfs = float(np.mean([20 * np.log10(float(x.pow(2).mean().sqrt()) + 1e-12) for x in xs]))
        row = {"gain_db": g, "mean_dbfs": round(dbfs, 1)}
        for match in (False, True):
            key = "matched" if match else "as_is"
            if asr:
                hyps = [m.transcribe(x.numpy(), sample_rate=rate, match_level=match).text for x in xs]
                row[f"wer_{key}"] = round(compute_wer(
                    [(c.id, c.supervisions[0].text, h) for c, h in zip(cuts, hyps)]).wer, 2)
            else:
                cos = []
                for x, e0 in zip(xs, ref_emb):
                    e = m.embed(x.numpy(), sample_rate=rate, match_level=match).embedding
                    cos.append(float(np.dot(e, e0) / (np.linalg.norm(e) * np.linalg.norm(e0) + 1e-12)))
                row[f"cos_{key}"] = round(float(np.mean(cos)), 4)
        rows.append(row)
        print(json.dumps(row), flush=True)
    if a.trials and not asr:
        print(json.dumps(trials_eer(m, a.cuts, a.trials, [float(x) for x in a.trial_gains.split(",")])))


def trials_eer(m, cuts_path: str, trials: str, gain_range: list) -> dict:
    """Cosine EER % of ``trials`` with each utterance at a random gain (as it is, and matched)."""
    from lhotse import load_manifest_lazy

    from auden_kit.metrics.verification import eer, read_trials, utterance_id

    cuts = list(load_manifest_lazy(cuts_path))
    gains = np.random.default_rng(0).uniform(gain_range[0], gain_range[1], len(cuts))
    xs = [torch.clamp(torch.from_numpy(c.load_audio()).mean(0) * 10 ** (g / 20), -1, 1) for c, g in zip(cuts, gains)]
    tr = read_trials(trials)
    out = {"trials": len(tr), "trial_gains_db": gain_range}
    for match in (False, True):
        embs = {}
        for c, r in zip(cuts, m.embed(xs, sample_rate=cuts[0].sampling_rate, match_level=match)):
            e = np.asarray(r.embedding)
            embs[utterance_id(c)] = e / (np.linalg.norm(e) + 1e-12)
        scores = [float(embs[x] @ embs[y]) for x, y, _ in tr]
        out["eer_matched" if match else "eer_as_is"] = round(100 * eer(scores, [t for _, _, t in tr])[0], 2)
    return out


if __name__ == "__main__":
    main()
