#!/usr/bin/env bash
# Offline speech translation (English <-> Spanish): synthesized speech -> manifests with
# transcripts, languages and translations -> fbank -> shared BPE with language tags -> one model
# (transducer + CTC on the transcript, attention decoder on the translation) -> average ->
# BLEU/chrF (sacrebleu), transcript WER and language ID on held-out sentences -> the word-by-word
# gloss baseline -> summary against the goals.
# Usage: ./run.sh [--stage N] [--stop-stage M] [--nj 2]
set -euo pipefail
cd "$(dirname "$0")"

stage=0
stop_stage=100
nj=2
speakers_per_language=10
train_utts=60
dev_utts=4
test_utts=10
bpe_size=400
num_epochs=8
avg=1
beam=4
asr_method=attention_rescoring  # the transcript: the n-best rescored by the decoder (joint; RESULTS.md), or greedy, modified_beam_search
extra=""   # extra key=value overrides for training, e.g. --extra "trainer.max_steps=5"
help_message="Offline English<->Spanish speech translation on a synthesized corpus. Example: ./run.sh --stage 6"
__options="stage stop_stage nj speakers_per_language train_utts dev_utts test_utts bpe_size num_epochs avg beam asr_method extra"
. ../../tools/parse_options.sh
. ../../tools/recipe_lib.sh
dl_dir=download/st
sfx=""; [ $asr_method = attention_rescoring ] || sfx=-$asr_method  # result names of another transcript search
main_name=test-beam$beam$sfx  # what stage 8 scores
parts="train dev test"

if [ $stage -le 0 ] && [ $stop_stage -ge 0 ]; then
  log "Stage 0: synthesize the corpus with espeak-ng (manifests with translations)"
  if [ -f data/manifests/.done ]; then skip data/manifests; else
    auden-kit data synth-st $dl_dir --manifest-dir data/manifests --speakers-per-language $speakers_per_language \
      --train-utts $train_utts --dev-utts $dev_utts --test-utts $test_utts --jobs $nj
    touch data/manifests/.done
  fi
fi

if [ $stage -le 1 ] && [ $stop_stage -ge 1 ]; then
  log "Stage 1: validate the manifests (audio, texts, translation schema)"
  validate_parts mini_st "$parts"
fi

if [ $stage -le 2 ] && [ $stop_stage -ge 2 ]; then
  log "Stage 2: compute fbank features (train with 0.9x/1.1x speed copies)"
  for p in $parts; do
    sp=""; [ $p = train ] && sp="--speed-perturb"
    fbank_part mini_st $p data/fbank/mini_st_cuts_$p.jsonl.gz $nj $sp
  done
fi

if [ $stage -le 3 ] && [ $stop_stage -ge 3 ]; then
  log "Stage 3: one BPE model over transcripts and translations, with language tags <en> <es>"
  if [ -f data/lang_bpe/tokenizer.yaml ]; then skip data/lang_bpe; else
    auden-kit data tokenizer data/manifests/mini_st_supervisions_train.jsonl.gz --out-dir data/lang_bpe \
      --vocab-size $bpe_size --translations --lang-tags
  fi
fi

if [ $stage -le 4 ] && [ $stop_stage -ge 4 ]; then
  log "Stage 4: train (TensorBoard: tensorboard --logdir $(pwd)/exp/tensorboard)"
  train_model conf/train.yaml exp $num_epochs "" $extra
fi

if [ $stage -le 5 ] && [ $stop_stage -ge 5 ]; then
  log "Stage 5: average checkpoints into a model folder"
  average_model exp $num_epochs $avg
fi

if [ $stage -le 6 ] && [ $stop_stage -ge 6 ]; then
  log "Stage 6: translate and transcribe the held-out test sentences (BLEU, chrF, WER, language ID)"
  for m in beam_search greedy; do
    name=test-$m; [ $m = beam_search ] && name=test-beam$beam
    name=$name$sfx
    if up_to_date exp/decode/metrics-$name.json exp/model-avg/config.yaml; then skip "decode $m"; continue; fi
    auden-kit decode --model exp/model-avg --cuts data/fbank/mini_st_cuts_test.jsonl.gz --method $m \
      --beam $beam --asr-method $asr_method --out-dir exp/decode --name $name
  done
  cat exp/decode/bleu-summary-$main_name.txt
fi

if [ $stage -le 7 ] && [ $stop_stage -ge 7 ]; then
  log "Stage 7: the monotone word-by-word gloss baseline on the same sentences"
  python3 local/gloss_baseline.py data/manifests/mini_st_supervisions_test.jsonl.gz --out exp/decode/gloss.json
fi

if [ $stage -le 8 ] && [ $stop_stage -ge 8 ]; then
  log "Stage 8: summary against the goals (exp/decode/summary.json)"
  python3 local/summary.py --metrics exp/decode/metrics-$main_name.json --gloss exp/decode/gloss.json \
    --out exp/decode/summary.json
fi
