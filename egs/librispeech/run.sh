#!/usr/bin/env bash
# LibriSpeech ASR (icefall-grade): download, manifests, MUSAN, fbank, BPE 500, Zipformer-M transducer+CTC,
# averaging and decoding of test-clean/test-other with greedy and modified beam search.
#   ./run.sh --dl-dir /data/librispeech                   # everything from the download on
#   ./run.sh --stage 1 --corpus-dir /data/LibriSpeech     # an existing copy
#   ./run.sh --stage 5 --world-size 4                     # train on 4 GPUs (torchrun)
set -euo pipefail
cd "$(dirname "$0")"

stage=0
stop_stage=100
dl_dir=download
corpus_dir=""        # default: $dl_dir/LibriSpeech
mini=false           # true: mini LibriSpeech (train-clean-5, dev-clean-2) for a smoke test
full=false           # true: train on all 960 h (train-clean-100 + train-clean-360 + train-other-500)
musan_dir=""         # a MUSAN folder to mix noise in training (optional)
nj=4
bpe_size=500
world_size=1
num_epochs=30
avg=9
config=conf/train.yaml
extra=""             # extra key=value training overrides
help_message="LibriSpeech ASR recipe. Example: ./run.sh --stage 1 --corpus-dir /data/LibriSpeech"
__options="stage stop_stage dl_dir corpus_dir mini full musan_dir nj bpe_size world_size num_epochs avg config extra"
. ../../tools/parse_options.sh
. ../../tools/recipe_lib.sh
corpus_dir=${corpus_dir:-$dl_dir/LibriSpeech}
if [ "$mini" = true ]; then
  train_parts="train-clean-5"; test_parts="dev-clean-2"; valid_part=dev-clean-2
else
  train_parts="train-clean-100"; [ "$full" = true ] && train_parts="train-clean-100 train-clean-360 train-other-500"
  test_parts="test-clean test-other"; valid_part=dev-clean
fi

if [ $stage -le 0 ] && [ $stop_stage -ge 0 ]; then
  log "Stage 0: download LibriSpeech"
  if [ ! -f $dl_dir/.download.done ]; then
    if [ "$mini" = true ]; then parts=mini_librispeech; else parts=librispeech; fi
    auden-kit data download librispeech $dl_dir --parts $parts --recipe-hint "./run.sh --stage 1 --corpus-dir DIR"
    touch $dl_dir/.download.done
  fi
fi

if [ $stage -le 1 ] && [ $stop_stage -ge 1 ]; then
  log "Stage 1: prepare Lhotse manifests"
  [ -d "$corpus_dir" ] || { echo "run.sh: no LibriSpeech at '$corpus_dir' (use --corpus-dir or stage 0)" >&2; exit 1; }
  if [ ! -f data/manifests/.librispeech.done ]; then
    lhotse prepare librispeech -j $nj "$corpus_dir" data/manifests
    touch data/manifests/.librispeech.done
  fi
fi

if [ $stage -le 2 ] && [ $stop_stage -ge 2 ]; then
  log "Stage 2: prepare MUSAN (optional)"
  if [ -n "$musan_dir" ] && [ ! -f data/manifests/.musan.done ]; then
    lhotse prepare musan "$musan_dir" data/manifests
    auden-kit data fbank data/manifests/musan_recordings_{music,noise}.jsonl.gz --out data/fbank/musan_cuts.jsonl.gz \
      --jobs $nj
    touch data/manifests/.musan.done
  fi
fi

if [ $stage -le 3 ] && [ $stop_stage -ge 3 ]; then
  log "Stage 3: compute fbank features"
  for p in $train_parts $valid_part $test_parts; do
    if [ ! -f data/manifests/librispeech_recordings_$p.jsonl.gz ]; then
      log "  $p is not in $corpus_dir; skipping it"; continue
    fi
    sp=""; case $p in train-*) sp="--speed-perturb" ;; esac
    fbank_part librispeech $p data/fbank/librispeech_cuts_$p.jsonl.gz $nj $sp
  done
fi

if [ $stage -le 4 ] && [ $stop_stage -ge 4 ]; then
  log "Stage 4: train the BPE tokenizer (vocab $bpe_size)"
  if [ ! -f data/lang_bpe_$bpe_size/tokenizer.yaml ]; then
    sups=""; for p in $train_parts; do sups="$sups data/manifests/librispeech_supervisions_$p.jsonl.gz"; done
    auden-kit data tokenizer $sups --out-dir data/lang_bpe_$bpe_size --vocab-size $bpe_size
  fi
fi

if [ $stage -le 5 ] && [ $stop_stage -ge 5 ]; then
  log "Stage 5: train (TensorBoard: tensorboard --logdir $(pwd)/exp/tensorboard)"
  train_cuts=$(printf 'data/fbank/librispeech_cuts_%s.jsonl.gz,' $train_parts)
  overrides="data.train_cuts=[${train_cuts%,}] data.valid_cuts=[data/fbank/librispeech_cuts_$valid_part.jsonl.gz]"
  overrides="$overrides tokenizer=data/lang_bpe_$bpe_size trainer.num_epochs=$num_epochs"
  [ -n "$musan_dir" ] && overrides="$overrides data.noise_cuts=data/fbank/musan_cuts.jsonl.gz"
  if [ ! -f exp/epoch-$num_epochs.pt ]; then
    if [ "$world_size" -gt 1 ]; then
      torchrun --nproc_per_node $world_size -m auden_kit.cli.main train --config $config $overrides $extra
    else
      auden-kit train --config $config $overrides $extra
    fi
  fi
fi

if [ $stage -le 6 ] && [ $stop_stage -ge 6 ]; then
  log "Stage 6: average and decode ${test_parts}"
  average_model exp $num_epochs $avg
  for p in $test_parts; do
    [ -f data/fbank/librispeech_cuts_$p.jsonl.gz ] || continue
    for m in greedy modified_beam_search; do
      sfx=$m; [ $m = modified_beam_search ] && sfx=$m-beam4
      if up_to_date exp/decode/wer-summary-librispeech_cuts_$p-$sfx.txt exp/model-avg/config.yaml; then
        skip "decode $p $m"; continue
      fi
      auden-kit decode --model exp/model-avg --cuts data/fbank/librispeech_cuts_$p.jsonl.gz --method $m \
        --out-dir exp/decode
    done
  done
  grep -h "" exp/decode/wer-summary-* || true
fi

if [ $stage -le 7 ] && [ $stop_stage -ge 7 ]; then
  log "Stage 7: export TorchScript to exp/jit (--format onnx needs: pip install 'auden-kit[onnx]')"
  if up_to_date exp/jit/encoder.pt exp/model-avg/config.yaml; then skip exp/jit; else
    auden-kit export --model exp/model-avg --out exp/jit
  fi
fi
