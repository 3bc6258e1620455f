#!/usr/bin/env bash
# Offline quick start: synthesized speech -> manifests -> fbank -> BPE -> train -> average -> decode.
# Runs on a laptop CPU in minutes; no network. Usage: ./run.sh [--stage N] [--stop-stage M] [--nj 2]
set -euo pipefail
cd "$(dirname "$0")"

stage=0
stop_stage=100
nj=2
num_speakers=20
train_utts=60
vocab_size=150
bpe_size=200
num_epochs=4
avg=1
extra=""   # extra key=value overrides for training, e.g. --extra "trainer.max_steps=5"
help_message="Offline ASR quick start on a synthesized corpus. Example: ./run.sh --stage 4"
__options="stage stop_stage nj num_speakers train_utts vocab_size bpe_size num_epochs avg extra"
. ../../tools/parse_options.sh
. ../../tools/recipe_lib.sh
dl_dir=download
parts="train-clean-100 dev-clean test-clean"

if [ $stage -le 0 ] && [ $stop_stage -ge 0 ]; then
  log "Stage 0: synthesize the corpus with espeak-ng"
  if [ ! -f $dl_dir/.synth.done ]; then
    auden-kit data synth $dl_dir --num-speakers $num_speakers --train-utts $train_utts --dev-utts 5 \
      --test-utts 10 --vocab-size $vocab_size --jobs $nj
    touch $dl_dir/.synth.done
  fi
fi

if [ $stage -le 1 ] && [ $stop_stage -ge 1 ]; then
  log "Stage 1: prepare Lhotse manifests"
  if [ ! -f data/manifests/.done ]; then
    lhotse prepare librispeech -j $nj $dl_dir/LibriSpeech data/manifests
    validate_parts librispeech "$parts"
    touch data/manifests/.done
  fi
fi

if [ $stage -le 2 ] && [ $stop_stage -ge 2 ]; then
  log "Stage 2: compute fbank features"
  for p in $parts; do
    sp=""; [ $p = train-clean-100 ] && sp="--speed-perturb"
    fbank_part librispeech $p data/fbank/librispeech_cuts_$p.jsonl.gz $nj $sp
  done
fi

if [ $stage -le 3 ] && [ $stop_stage -ge 3 ]; then
  log "Stage 3: train the BPE tokenizer"
  if [ ! -f data/lang_bpe/tokenizer.yaml ]; then
    auden-kit data tokenizer data/manifests/librispeech_supervisions_train-clean-100.jsonl.gz \
      --out-dir data/lang_bpe --vocab-size $bpe_size
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
  log "Stage 6: decode the held-out test set"
  for m in greedy modified_beam_search ctc_greedy; do
    sfx=$m; [ $m = modified_beam_search ] && sfx=$m-beam4
    if up_to_date exp/decode/wer-summary-librispeech_cuts_test-clean-$sfx.txt exp/model-avg/config.yaml; then
      skip "decode $m"; grep -h "" exp/decode/wer-summary-librispeech_cuts_test-clean-$sfx.txt | tail -1; continue
    fi
    auden-kit decode --model exp/model-avg --cuts data/fbank/librispeech_cuts_test-clean.jsonl.gz \
      --method $m --out-dir exp/decode
  done
  log "TensorBoard logs: $(pwd)/exp/tensorboard   results: $(pwd)/exp/decode"
fi

if [ $stage -le 7 ] && [ $stop_stage -ge 7 ]; then
  log "Stage 7: export TorchScript (encoder, decoder, joiner, CTC) to exp/jit"
  if up_to_date exp/jit/encoder.pt exp/model-avg/config.yaml; then skip exp/jit; else
    auden-kit export --model exp/model-avg --out exp/jit
  fi
fi
