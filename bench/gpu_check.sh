#!/usr/bin/env bash
# Everything GPU-specific, run once on a GPU machine (about 2 minutes on one H200):
#   1. fp32 / bf16 / fp16+GradScaler training steps of a Zipformer-M transducer (time, memory, finite)
#   2. `auden-kit train` under torchrun with the nccl backend (2 ranks if 2 GPUs, else 1), fp16
#   3. pure-PyTorch pruned RNN-T vs torchaudio's CUDA rnnt_loss (time and peak memory)
#   4. with ICEFALL_DIR=<icefall>/egs/librispeech/ASR/zipformer: icefall's Zipformer-M side by side
# Prints one JSON line per check; record them in bench/RESULTS.md.
#   bash bench/gpu_check.sh              (after ./setup.sh; no network needed)
#   bash bench/gpu_check.sh --with-tests (then the test suite, whose trainings run on the GPU:
#                                         trainer.device auto; ~8 minutes with 14 workers)
#   bash bench/gpu_check.sh --smoke      (the checks at toy sizes on the CPU: does the script run?)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
tests=0
args=()
for a in "$@"; do
  if [ "$a" = --with-tests ]; then tests=1; else args+=("$a"); fi
done
"$PY" bench/gpu_check.py "${args[@]}"
rc=$?
if [ $tests -eq 1 ]; then
  workers=$(( $(nproc) > 4 ? $(nproc) - 2 : 2 ))
  "$PY" -m pytest -q -n $workers --dist worksteal -p no:cacheprovider tests || rc=1
fi
exit $rc
