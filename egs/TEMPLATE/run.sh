#!/usr/bin/env bash
# ASR recipe skeleton: your data -> manifests -> fbank -> BPE -> train -> average -> decode.
# Usage: ./run.sh --corpus-dir /path/to/corpus [--stage N] [--stop-stage M]
set -euo pipefail
cd "$(dirname "$0")"

stage=0
stop_stage=100
corpus_dir=""
corpus_parts="train dev test"  # the corpus folders of train, dev, test; rename with name=folder (train=train_nodev)
nj=2
bpe_size=0          # 0: from the data (about one piece per distinct word, 30..500)
num_epochs=30
avg=9
prefix=mydata
config=conf/train.yaml
extra=""
help_message="ASR recipe for your own data (see README.md). Example: ./run.sh --corpus-dir /data/mycorpus"
__options="stage stop_stage corpus_dir corpus_parts nj bpe_size num_epochs avg prefix config extra"
. ../../tools/parse_options.sh
. ../../tools/recipe_lib.sh
parts="train dev test"

if [ $stage -le 0 ] && [ $stop_stage -ge 0 ]; then
  log "Stage 0: prepare manifests from your corpus (edit local/prepare.py)"
  if [ -f data/manifests/.done ]; then skip data/manifests; else
    [ -n "$corpus_dir" ] || { echo "run.sh: stage 0 needs --corpus-dir" >&2; exit 2; }
    python local/prepare.py --corpus-dir "$corpus_dir" --out-dir data/manifests --prefix $prefix --parts $corpus_parts
    validate_parts $prefix "$parts"
    touch data/manifests/.done
  fi
fi

if [ $stage -le 1 ] && [ $stop_stage -ge 1 ]; then
  log "Stage 1: compute fbank features (train with 0.9x/1.1x speed copies)"
  fbank_parts $prefix "$parts" $nj
fi

if [ $stage -le 2 ] && [ $stop_stage -ge 2 ]; then
  log "Stage 2: train the BPE tokenizer"
  bpe_model data/manifests/${prefix}_supervisions_train.jsonl.gz $bpe_size
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
  log "Stage 5: decode the test set"
  for m in greedy modified_beam_search; do
    sfx=$m; [ $m = modified_beam_search ] && sfx=$m-beam4
    if up_to_date exp/decode/wer-summary-${prefix}_cuts_test-$sfx.txt exp/model-avg/config.yaml; then
      skip "decode $m"; continue
    fi
    auden-kit decode --model exp/model-avg --cuts data/fbank/${prefix}_cuts_test.jsonl.gz --method $m --out-dir exp/decode
  done
fi

if [ $stage -le 6 ] && [ $stop_stage -ge 6 ]; then
  log "Stage 6: export TorchScript to exp/jit"
  if up_to_date exp/jit/encoder.pt exp/model-avg/config.yaml; then skip exp/jit; else
    auden-kit export --model exp/model-avg --out exp/jit
  fi
fi
