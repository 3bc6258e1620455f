#!/usr/bin/env python3
"""Speech-translation decoding: real-time factor and memory of the attention decoder's beam
search (batched and one utterance at a time) and greedy search, each with the transducer's
transcript, on a cut manifest.

    python bench/st_decode.py --model egs/mini_synth_st/exp/model-avg \
        --cuts egs/mini_synth_st/data/fbank/mini_st_cuts_test.jsonl.gz [--threads 2] [--beam 4]

Prints one JSON line: rtf per (method, batching), the process's peak resident memory after each
phase, and the encoder's share of the time (what the search adds on top of it).
"""

import argparse
import json
import resource
import time

import torch


def peak_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--cuts", required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--beam", type=int, default=4)
    p.add_argument("--max-duration", type=float, default=100.0)
    p.add_argument("--limit", type=int, default=100, help="Cuts decoded one at a time (the rest: batched only).")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    from asr_decode import load_model_and_batches  # bench/ is the script's folder

    lm, batches, audio = load_model_and_batches(a.model, a.cuts, a.max_duration)
    out = {"threads": a.threads, "beam": a.beam, "audio_s": round(audio, 1), "batches": len(batches),
           "peak_rss_mb.loaded": peak_mb()}
    with torch.no_grad():
        t0 = time.time()
        for b in batches:
            lm.model.encode(b["inputs"], b["input_lens"])
        out["encoder_only.rtf"] = round((time.time() - t0) / audio, 5)
        for method in ("greedy", "beam_search"):
            t0 = time.time()
            for b in batches:
                lm.task.infer(lm.model, b, method=method, beam=a.beam)
            out[f"{method}.batched.rtf"] = round((time.time() - t0) / audio, 5)
            out[f"peak_rss_mb.{method}.batched"] = peak_mb()
        ones = []  # the same utterances one at a time (a single-file request)
        for b in batches:
            for i in range(len(b["cut_ids"])):
                n = int(b["input_lens"][i])
                ones.append({"inputs": b["inputs"][i:i + 1, :n], "input_lens": b["input_lens"][i:i + 1],
                             "cut_ids": b["cut_ids"][i:i + 1], "cuts": [b["cuts"][i]],
                             "targets": {k: v[i:i + 1] for k, v in b["targets"].items()}})
        ones = ones[:a.limit]
        one_audio = sum(b["cuts"][0].duration for b in ones)
        for method in ("greedy", "beam_search"):
            t0 = time.time()
            for b in ones:
                lm.task.infer(lm.model, b, method=method, beam=a.beam)
            out[f"{method}.single.rtf"] = round((time.time() - t0) / one_audio, 5)
        out["peak_rss_mb.end"] = peak_mb()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
