#!/usr/bin/env bash
# Offline voice-encoder recipe: synthesized speakers -> manifests -> fbank -> trials + untrained
# baselines -> train (speaker AAM + gender + speaking style) -> average -> verification,
# identification and classification on unseen speakers -> summary against the goals.
# Usage: ./run.sh [--stage N] [--stop-stage M] [--nj 2] [--asr-model ../mini_synth/exp/model-avg]
set -euo pipefail
cd "$(dirname "$0")"

stage=0
stop_stage=100
nj=2
train_variants=48
test_variants=12
train_utts=10
dev_utts=4
test_utts=12
num_epochs=8
avg=1
perturbed_speakers=true   # 0.9x/1.1x speed copies of the training set as new speakers (false: none)
pitch=true                # fbank + 4 pitch rows (Kaldi's fbank+pitch) for the gender and style heads' pitch statistics;
                          # false: fbank only, every head reads the encoder
asr_model=""              # stage 8: an ASR model folder with the same encoder (e.g. ../mini_synth/exp/model-avg)
extra=""                  # extra key=value overrides for training, e.g. --extra "trainer.max_steps=5"
help_message="Offline voice-encoder recipe on synthesized speakers. Example: ./run.sh --stage 6"
__options="stage stop_stage nj train_variants test_variants train_utts dev_utts test_utts num_epochs avg perturbed_speakers pitch asr_model extra"
. ../../tools/parse_options.sh
. ../../tools/recipe_lib.sh
dl_dir=download/voices
parts="train dev test"
feats=""; [ $pitch = true ] && feats="--pitch"
train_feats=""; [ $pitch = true ] || train_feats="data.fbank.pitch=false model.head_inputs={}"

if [ $stage -le 0 ] && [ $stop_stage -ge 0 ]; then
  log "Stage 0: synthesize the voice corpus with espeak-ng"
  if [ -f $dl_dir/.done ]; then skip $dl_dir; else
    auden-kit data synth-voices $dl_dir --train-variants $train_variants --test-variants $test_variants \
      --train-utts $train_utts --dev-utts $dev_utts --test-utts $test_utts --jobs $nj
    touch $dl_dir/.done
  fi
fi

if [ $stage -le 1 ] && [ $stop_stage -ge 1 ]; then
  log "Stage 1: prepare Lhotse manifests (audio folders + utt2spk/utt2gender/utt2style)"
  if [ -f data/manifests/.done ]; then skip data/manifests; else
    auden-kit data folder $dl_dir --parts "$parts" --prefix voices --out-dir data/manifests
    validate_parts voices "$parts"
    touch data/manifests/.done
  fi
fi

if [ $stage -le 2 ] && [ $stop_stage -ge 2 ]; then
  log "Stage 2: compute fbank features${feats:+ with pitch}"
  for p in $parts; do
    sp=""; [ $p = train ] && [ $perturbed_speakers = true ] && sp="--speed-perturb --perturbed-speakers"
    fbank_part voices $p data/fbank/voices_cuts_$p.jsonl.gz $nj $sp $feats
  done
fi

if [ $stage -le 3 ] && [ $stop_stage -ge 3 ]; then
  log "Stage 3: verification trials on the unseen test speakers, and the untrained baselines"
  [ -f data/trials_test.txt ] || auden-kit data trials data/fbank/voices_cuts_test.jsonl.gz --out data/trials_test.txt
  if up_to_date exp/baselines.json data/trials_test.txt; then skip exp/baselines.json; else
    python local/baselines.py --train data/fbank/voices_cuts_train.jsonl.gz \
      --test data/fbank/voices_cuts_test.jsonl.gz --trials data/trials_test.txt --out exp/baselines.json
  fi
fi

if [ $stage -le 4 ] && [ $stop_stage -ge 4 ]; then
  log "Stage 4: train (TensorBoard: tensorboard --logdir $(pwd)/exp/tensorboard)"
  train_model conf/train.yaml exp $num_epochs "" $train_feats $extra
fi

# evaluate MODEL_DIR OUT_DIR: embeddings, verification (cosine and AS-norm), classification, SID
evaluate() {
  local model=$1 out=$2
  if up_to_date $out/summary.json $model/config.yaml; then skip $out; return; fi
  auden-kit embed --model $model --cuts data/fbank/voices_cuts_test.jsonl.gz --out $out/emb-test
  auden-kit embed --model $model --cuts data/fbank/voices_cuts_train.jsonl.gz --out $out/cohort --per-speaker
  auden-kit score --model $model --trials data/trials_test.txt --embeddings $out/emb-test --save-threshold \
    --out $out/score-cosine.json
  auden-kit score --trials data/trials_test.txt --embeddings $out/emb-test --as-norm $out/cohort --top-n 20 \
    --out $out/score-asnorm.json
  for p in test dev; do
    auden-kit decode --model $model --cuts data/fbank/voices_cuts_$p.jsonl.gz --out-dir $out --name $p
  done
  python local/summary.py --baselines exp/baselines.json --eval-dir $out --out $out/summary.json
}

if [ $stage -le 5 ] && [ $stop_stage -ge 5 ]; then
  log "Stage 5: average checkpoints into a model folder"
  average_model exp $num_epochs $avg
fi

if [ $stage -le 6 ] && [ $stop_stage -ge 6 ]; then
  log "Stage 6: evaluate on unseen speakers (EER, minDCF, gender, style) and training speakers (SID)"
  evaluate exp/model-avg exp/eval
fi

if [ $stage -le 7 ] && [ $stop_stage -ge 7 ]; then
  log "Stage 7: verify two files with the stored threshold (same speaker, then different speakers)"
  a=$(ls $dl_dir/test/spk*/ -d | head -1); b=$(ls $dl_dir/test/spk*/ -d | tail -1)
  f1=$(ls $a*.flac | head -1); f2=$(ls $a*.flac | tail -1); f3=$(ls $b*.flac | head -1)
  auden-kit verify --model exp/model-avg $f1 $f2
  auden-kit verify --model exp/model-avg $f1 $f3
fi

if [ $stage -le 8 ] && [ $stop_stage -ge 8 ] && [ -n "$asr_model" ]; then
  log "Stage 8: the same training started from the ASR encoder of $asr_model (init_from), evaluated alike"
  train_model conf/train.yaml exp_asr_init $num_epochs $asr_model $train_feats $extra
  average_model exp_asr_init $num_epochs $avg
  evaluate exp_asr_init/model-avg exp_asr_init/eval
fi
