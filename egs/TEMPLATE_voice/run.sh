#!/usr/bin/env bash
# Voice-encoder recipe skeleton: your folder of audio + utt2spk (+ utt2gender, utt2emotion,
# utt2age, any utt2<label>) -> manifests -> fbank -> trials -> train -> average -> evaluate.
# Usage: ./run.sh --corpus-dir /path/to/corpus [--stage N] [--stop-stage M]
set -euo pipefail
cd "$(dirname "$0")"

stage=0
stop_stage=100
corpus_dir=""
nj=2
num_epochs=30
avg=5
prefix=mydata
config=conf/train.yaml
perturbed_speakers=true  # 0.9x/1.1x speed copies of the training set as new speakers
age_groups="18 40 61"    # utt2age in years -> groups <18, 18-39, 40-60, >=61 ("" keeps the values as classes)
extra=""
help_message="Voice-encoder recipe for your own data (see README.md). Example: ./run.sh --corpus-dir /data/myvoices"
__options="stage stop_stage corpus_dir nj num_epochs avg prefix config perturbed_speakers age_groups extra"
. ../../tools/parse_options.sh
. ../../tools/recipe_lib.sh
parts="train dev test"

if [ $stage -le 0 ] && [ $stop_stage -ge 0 ]; then
  log "Stage 0: prepare manifests from your corpus (audio folders + utt2spk, utt2gender, utt2<label>)"
  if [ -f data/manifests/.done ]; then skip data/manifests; else
    [ -n "$corpus_dir" ] || { echo "run.sh: stage 0 needs --corpus-dir" >&2; exit 2; }
    auden-kit data folder "$corpus_dir" --parts "$parts" --prefix $prefix --out-dir data/manifests
    validate_parts $prefix "$parts" --no-text
    touch data/manifests/.done
  fi
fi

if [ $stage -le 1 ] && [ $stop_stage -ge 1 ]; then
  log "Stage 1: compute fbank features"
  for p in $parts; do
    sp=""; [ $p = train ] && [ $perturbed_speakers = true ] && sp="--speed-perturb --perturbed-speakers"
    fbank_part $prefix $p data/fbank/${prefix}_cuts_$p.jsonl.gz $nj $sp
  done
fi

if [ $stage -le 2 ] && [ $stop_stage -ge 2 ]; then
  log "Stage 2: verification trials over the test speakers (your own list: put it at data/trials_test.txt)"
  [ -f data/trials_test.txt ] || auden-kit data trials data/fbank/${prefix}_cuts_test.jsonl.gz --out data/trials_test.txt
fi

if [ $stage -le 3 ] && [ $stop_stage -ge 3 ]; then
  log "Stage 3: train (TensorBoard: tensorboard --logdir $(pwd)/exp/tensorboard)"
  if [ ! -f exp/epoch-$num_epochs.pt ]; then
    # one head per label the training manifest carries (gender, custom.emotion, custom.age, ...)
    heads=$(python local/heads.py data/manifests/${prefix}_supervisions_train.jsonl.gz --age-groups "$age_groups")
    log "  heads: $heads"
    train_model $config exp $num_epochs "" data.train_cuts=[data/fbank/${prefix}_cuts_train.jsonl.gz] \
      data.valid_cuts=[data/fbank/${prefix}_cuts_dev.jsonl.gz] $heads $extra
  fi
fi

if [ $stage -le 4 ] && [ $stop_stage -ge 4 ]; then
  log "Stage 4: average checkpoints into a model folder"
  average_model exp $num_epochs $avg
fi

if [ $stage -le 5 ] && [ $stop_stage -ge 5 ]; then
  log "Stage 5: evaluate: EER/minDCF (cosine, AS-norm), label accuracy/F1 on test"
  out=exp/eval
  if up_to_date $out/metrics-test.json exp/model-avg/config.yaml; then skip $out; else
    auden-kit embed --model exp/model-avg --cuts data/fbank/${prefix}_cuts_test.jsonl.gz --out $out/emb-test
    auden-kit embed --model exp/model-avg --cuts data/fbank/${prefix}_cuts_train.jsonl.gz --out $out/cohort --per-speaker
    auden-kit score --model exp/model-avg --trials data/trials_test.txt --embeddings $out/emb-test --save-threshold \
      --out $out/score-cosine.json
    auden-kit score --trials data/trials_test.txt --embeddings $out/emb-test --as-norm $out/cohort \
      --out $out/score-asnorm.json
    auden-kit decode --model exp/model-avg --cuts data/fbank/${prefix}_cuts_test.jsonl.gz --out-dir $out --name test
  fi
  log "Embed, score or verify anything with exp/model-avg: auden-kit verify --model exp/model-avg a.wav b.wav"
fi
