#!/usr/bin/env bash
# CREMA-D emotion / gender / age (+ speaker) voice encoder from a local copy of the corpus:
# manifests (speaker-disjoint splits) -> fbank -> train -> average -> per-class accuracy/F1/UAR.
# Usage: ./run.sh --corpus-dir /data/CREMA-D [--stage N] [--stop-stage M]
set -euo pipefail
cd "$(dirname "$0")"

stage=0
stop_stage=100
corpus_dir=""
nj=4
num_epochs=30
avg=5
config=conf/train.yaml
extra=""
help_message="CREMA-D emotion/gender/age recipe. Example: ./run.sh --corpus-dir /data/CREMA-D"
__options="stage stop_stage corpus_dir nj num_epochs avg config extra"
. ../../tools/parse_options.sh
. ../../tools/recipe_lib.sh
parts="train dev test"

if [ $stage -le 0 ] && [ $stop_stage -ge 0 ]; then
  log "Stage 0: manifests with emotion, gender and age labels (actors split into train/dev/test)"
  if [ -f data/manifests/.done ]; then skip data/manifests; else
    [ -n "$corpus_dir" ] || { echo "run.sh: stage 0 needs --corpus-dir (the CREMA-D root with AudioWAV/)" >&2; exit 2; }
    auden-kit data cremad "$corpus_dir" --out-dir data/manifests
    validate_parts cremad "$parts" --no-text
    touch data/manifests/.done
  fi
fi

if [ $stage -le 1 ] && [ $stop_stage -ge 1 ]; then
  log "Stage 1: fbank features"
  for p in $parts; do fbank_part cremad $p data/fbank/cremad_cuts_$p.jsonl.gz $nj; done
fi

if [ $stage -le 2 ] && [ $stop_stage -ge 2 ]; then
  log "Stage 2: train (TensorBoard: tensorboard --logdir $(pwd)/exp/tensorboard)"
  train_model $config exp $num_epochs "" $extra
fi

if [ $stage -le 3 ] && [ $stop_stage -ge 3 ]; then
  log "Stage 3: average checkpoints into a model folder"
  average_model exp $num_epochs $avg
fi

if [ $stage -le 4 ] && [ $stop_stage -ge 4 ]; then
  log "Stage 4: emotion / gender / age accuracy, macro F1 and UAR on the unseen test actors"
  if up_to_date exp/eval/metrics-test.json exp/model-avg/config.yaml; then skip exp/eval; else
    auden-kit decode --model exp/model-avg --cuts data/fbank/cremad_cuts_test.jsonl.gz --out-dir exp/eval --name test
  fi
  cat exp/eval/metrics-test.json
fi
