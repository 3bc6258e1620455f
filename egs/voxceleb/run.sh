#!/usr/bin/env bash
# VoxCeleb speaker verification from local copies: manifests + Vox1-O/E/H trials -> fbank (speed
# copies as new speakers) -> held-out validation -> train -> average -> EER/minDCF with cosine and
# AS-norm scoring. Nothing downloads (VoxCeleb needs a licence form: get it from the VGG site).
# Usage: ./run.sh --vox1 /data/voxceleb1 [--vox2 /data/voxceleb2] [--stage N] [--stop-stage M]
set -euo pipefail
cd "$(dirname "$0")"

stage=0
stop_stage=100
vox1=""
vox2=""
trials_dir=""        # where veri_test2.txt etc. are, if not in --vox1
vox1_all_test=false  # true: all of VoxCeleb1 is test (Vox1-E/H), train on VoxCeleb2 only
nj=8
num_epochs=40
avg=10
config=conf/train.yaml
perturbed_speakers=true
top_n=300            # AS-norm cohort size (WeSpeaker: 300 of the training speakers' means)
extra=""
help_message="VoxCeleb speaker verification. Example: ./run.sh --vox1 /data/voxceleb1 --vox2 /data/voxceleb2"
__options="stage stop_stage vox1 vox2 trials_dir vox1_all_test nj num_epochs avg config perturbed_speakers top_n extra"
. ../../tools/parse_options.sh
. ../../tools/recipe_lib.sh

if [ $stage -le 0 ] && [ $stop_stage -ge 0 ]; then
  log "Stage 0: manifests and trial lists from the local VoxCeleb copies"
  if [ -f data/manifests/.done ]; then skip data/manifests; else
    [ -n "$vox1$vox2" ] || { echo "run.sh: stage 0 needs --vox1 and/or --vox2" >&2; exit 2; }
    args=""
    [ -n "$vox1" ] && args="$args --vox1 $vox1"
    [ -n "$vox2" ] && args="$args --vox2 $vox2"
    [ -n "$trials_dir" ] && args="$args --trials-dir $trials_dir"
    [ $vox1_all_test = true ] && args="$args --vox1-all-test"
    auden-kit data voxceleb $args --out-dir data/manifests --jobs $nj
    validate_parts voxceleb "train test" --no-text
    touch data/manifests/.done
  fi
fi

if [ $stage -le 1 ] && [ $stop_stage -ge 1 ]; then
  log "Stage 1: fbank features (train: 0.9x/1.1x speed copies as new speakers)"
  sp=""; [ $perturbed_speakers = true ] && sp="--speed-perturb --perturbed-speakers"
  fbank_part voxceleb train data/fbank/voxceleb_cuts_train_all.jsonl.gz $nj $sp
  fbank_part voxceleb test data/fbank/voxceleb_cuts_test.jsonl.gz $nj
fi

if [ $stage -le 2 ] && [ $stop_stage -ge 2 ]; then
  log "Stage 2: hold out one utterance of some training speakers for validation; trial lists"
  [ -f data/fbank/voxceleb_cuts_valid.jsonl.gz ] || auden-kit data holdout data/fbank/voxceleb_cuts_train_all.jsonl.gz \
    --train-out data/fbank/voxceleb_cuts_train.jsonl.gz --valid-out data/fbank/voxceleb_cuts_valid.jsonl.gz
  if ! ls data/manifests/voxceleb1_*_trials.txt >/dev/null 2>&1; then
    auden-kit data trials data/fbank/voxceleb_cuts_test.jsonl.gz --out data/manifests/voxceleb1_all_trials.txt
  fi
fi

if [ $stage -le 3 ] && [ $stop_stage -ge 3 ]; then
  log "Stage 3: train (TensorBoard: tensorboard --logdir $(pwd)/exp/tensorboard)"
  train_model $config exp $num_epochs "" $extra
fi

if [ $stage -le 4 ] && [ $stop_stage -ge 4 ]; then
  log "Stage 4: average checkpoints into a model folder"
  average_model exp $num_epochs $avg
fi

if [ $stage -le 5 ] && [ $stop_stage -ge 5 ]; then
  log "Stage 5: embeddings; EER and minDCF per trial list, cosine and AS-norm"
  out=exp/eval
  if up_to_date $out/emb-test/ids.txt exp/model-avg/config.yaml; then skip $out/emb-test; else
    auden-kit embed --model exp/model-avg --cuts data/fbank/voxceleb_cuts_test.jsonl.gz --out $out/emb-test
    auden-kit embed --model exp/model-avg --cuts data/fbank/voxceleb_cuts_train.jsonl.gz --out $out/cohort --per-speaker
  fi
  for t in data/manifests/voxceleb1_*_trials.txt; do
    name=$(basename $t _trials.txt)
    auden-kit score --model exp/model-avg --trials $t --embeddings $out/emb-test --out $out/score-$name-cosine.json \
      $( [ $name = voxceleb1_O ] || [ $name = voxceleb1_all ] && echo --save-threshold )
    auden-kit score --trials $t --embeddings $out/emb-test --as-norm $out/cohort --top-n $top_n \
      --out $out/score-$name-asnorm.json
  done
  auden-kit decode --model exp/model-avg --cuts data/fbank/voxceleb_cuts_test.jsonl.gz --out-dir $out --name test
fi
