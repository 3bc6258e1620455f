#!/usr/bin/env bash
# Self-supervised pretraining on your own data: your unlabeled audio (any length) -> BEST-RQ
# pretraining -> ASR fine-tuned from the pretrained encoder on your labeled folders (and, with
# --scratch true, the same ASR from scratch to compare) -> WER on test.
# Usage: ./run.sh --corpus-dir /path/to/corpus [--stage N] [--stop-stage M]
set -euo pipefail
cd "$(dirname "$0")"

stage=0
stop_stage=100
corpus_dir=""
unlabeled_parts="unlabeled"    # folders of audio only (any number; name=folder renames)
corpus_parts="train dev test"  # labeled folders (audio + text) of train, dev, test; rename with name=folder
nj=2
window=20            # unlabeled recordings are cut into windows of this many seconds
bpe_size=0           # 0: from the data (about one piece per distinct word, 30..500)
pretrain_epochs=30
finetune_epochs=30
avg=5
freeze_steps=500     # fine-tuning: the pretrained encoder stays frozen while the new heads learn
scratch=false        # true: also train the same ASR from scratch (same config and steps) to compare
prefix=mydata
extra=""             # extra key=value overrides for every training, e.g. --extra "trainer.max_steps=5"
help_message="Pretraining on your own unlabeled audio, fine-tuning on your labeled data (see README.md). Example: ./run.sh --corpus-dir /data/mycorpus"
__options="stage stop_stage corpus_dir unlabeled_parts corpus_parts nj window bpe_size pretrain_epochs finetune_epochs avg freeze_steps scratch prefix extra"
. ../../tools/parse_options.sh
. ../../tools/recipe_lib.sh
parts="train dev test"
unlabeled=$(for x in ${unlabeled_parts//,/ }; do echo -n "${x%%=*} "; done)  # their manifest names

if [ $stage -le 0 ] && [ $stop_stage -ge 0 ]; then
  log "Stage 0: prepare manifests from your corpus (unlabeled: audio only; labeled: audio + text)"
  if [ -f data/manifests/.done ]; then skip data/manifests; else
    [ -n "$corpus_dir" ] || { echo "run.sh: stage 0 needs --corpus-dir" >&2; exit 2; }
    auden-kit data folder "$corpus_dir" --parts "$unlabeled_parts" --prefix unlabeled --out-dir data/manifests
    validate_parts unlabeled "$unlabeled" --no-text
    auden-kit data folder "$corpus_dir" --parts "$corpus_parts" --prefix $prefix --out-dir data/manifests
    validate_parts $prefix "$parts"
    touch data/manifests/.done
  fi
fi

if [ $stage -le 1 ] && [ $stop_stage -ge 1 ]; then
  log "Stage 1: fbank features (unlabeled audio in windows of $window s; labeled train speed-perturbed)"
  for p in $unlabeled; do
    fbank_part unlabeled $p data/fbank/unlabeled_cuts_$p.jsonl.gz $nj --split windows --window $window
  done
  fbank_parts $prefix "$parts" $nj
  if up_to_date data/fbank/feature_stats.json data/fbank/unlabeled_cuts_*.jsonl.gz; then skip feature_stats; else
    auden-kit data cmvn data/fbank/unlabeled_cuts_*.jsonl.gz --out data/fbank/feature_stats.json
  fi
fi

if [ $stage -le 2 ] && [ $stop_stage -ge 2 ]; then
  log "Stage 2: BPE tokenizer from the labeled transcripts"
  bpe_model data/manifests/${prefix}_supervisions_train.jsonl.gz $bpe_size
fi

if [ $stage -le 3 ] && [ $stop_stage -ge 3 ]; then
  log "Stage 3: BEST-RQ pretraining on the unlabeled audio (TensorBoard: tensorboard --logdir $(pwd)/exp/ssl/tensorboard)"
  train_cuts=$(for p in $unlabeled; do echo -n "data/fbank/unlabeled_cuts_$p.jsonl.gz,"; done)
  train_model conf/pretrain.yaml exp/ssl $pretrain_epochs "" "data.train_cuts=[${train_cuts%,}]" $extra
  average_model exp/ssl $pretrain_epochs $avg
fi

if [ $stage -le 4 ] && [ $stop_stage -ge 4 ]; then
  log "Stage 4: ASR fine-tuned from the pretrained encoder (with --scratch true also from scratch, to compare)"
  freeze=""; [ "$freeze_steps" -gt 0 ] && freeze="trainer.freeze=[encoder.*] trainer.freeze_steps=$freeze_steps"
  train_model conf/finetune.yaml exp/finetune $finetune_epochs exp/ssl/model-avg $freeze $extra
  average_model exp/finetune $finetune_epochs $avg
  if [ $scratch = true ]; then
    train_model conf/finetune.yaml exp/scratch $finetune_epochs "" $extra
    average_model exp/scratch $finetune_epochs $avg
  fi
fi

if [ $stage -le 5 ] && [ $stop_stage -ge 5 ]; then
  log "Stage 5: decode the test set (CTC greedy)"
  for e in finetune scratch; do
    [ -f exp/$e/model-avg/config.yaml ] || continue
    if up_to_date exp/$e/decode/wer-summary-${prefix}_cuts_test-ctc_greedy.txt exp/$e/model-avg/config.yaml; then
      skip "decode $e"
    else
      auden-kit decode --model exp/$e/model-avg --cuts data/fbank/${prefix}_cuts_test.jsonl.gz --method ctc_greedy \
        --out-dir exp/$e/decode
    fi
    echo "$e: $(tail -n 1 exp/$e/decode/wer-summary-${prefix}_cuts_test-ctc_greedy.txt)"
  done
fi
