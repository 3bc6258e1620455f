#!/usr/bin/env bash
# Everything GPU-specific, run once on a GPU machine (about 5-10 minutes on one GPU):
#   1. fp32 / bf16 / fp16+GradScaler training steps of a Zipformer-M transducer (time, memory, finite)
#   2. `auden-kit train` under torchrun with the nccl backend (2 ranks if 2 GPUs, else 1), fp16
#   3. pure-PyTorch pruned RNN-T vs torchaudio's CUDA rnnt_loss (time and peak memory)
#   4. with ICEFALL_DIR=<icefall>/egs/librispeech/ASR/zipformer: icefall's Zipformer-M side by side
# Prints one JSON line per check; record them in bench/RESULTS.md.
#   bash bench/gpu_check.sh            (after ./setup.sh; no network needed)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
"$PY" bench/gpu_check.py "$@"
