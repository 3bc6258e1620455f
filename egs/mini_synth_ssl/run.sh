#!/usr/bin/env bash
# Offline self-supervised pretraining: synthesized unlabeled audio (other voices and sentences than
# the labeled set) -> BEST-RQ pretraining -> ASR fine-tuned on a small labeled subset (10 % of the
# quick start's) against the same ASR from scratch (same config and steps) -> WER of both ->
# kNN/linear probes of the frozen encoders (keyword, speaker, frame-level phone) against a randomly initialised
# one -> the same for MAE pretraining -> summary against the goals.
# Usage: ./run.sh [--stage N] [--stop-stage M] [--nj 2]
set -euo pipefail
cd "$(dirname "$0")"

stage=0
stop_stage=100
nj=2
num_speakers=20        # labeled corpus: as the quick start ...
train_utts=6           # ... with 10 % of its 60 training utterances per speaker
unlabeled_speakers=40  # pretraining corpus: other voices ...
unlabeled_utts=60      # ... and other sentences
vocab_size=150
bpe_size=200
pretrain_epochs=15
mae_epochs=4
finetune_epochs=12
freeze_steps=100       # fine-tuning: the pretrained encoder stays frozen while the new heads learn
mae=false              # true: also pretrain with objective=mae and probe it (~7 more minutes)
extra=""               # extra key=value overrides for every training, e.g. --extra "trainer.max_steps=5"
help_message="Offline BEST-RQ pretraining, fine-tuning vs from scratch, and probes. Example: ./run.sh --stage 5"
__options="stage stop_stage nj num_speakers train_utts unlabeled_speakers unlabeled_utts vocab_size bpe_size pretrain_epochs mae_epochs finetune_epochs freeze_steps mae extra"
. ../../tools/parse_options.sh
. ../../tools/recipe_lib.sh
dl_dir=download

if [ $stage -le 0 ] && [ $stop_stage -ge 0 ]; then
  log "Stage 0: synthesize the labeled, unlabeled and keyword sets with espeak-ng"
  if [ ! -f $dl_dir/.labeled.done ]; then
    auden-kit data synth $dl_dir/labeled --num-speakers $num_speakers --train-utts $train_utts --dev-utts 5 \
      --test-utts 10 --vocab-size $vocab_size --jobs $nj --format lhotse --manifest-dir data/manifests/labeled
    touch $dl_dir/.labeled.done
  fi
  if [ ! -f $dl_dir/.unlabeled.done ]; then  # voices after the labeled set's in the same order; other sentences
    auden-kit data synth $dl_dir/unlabeled --num-speakers $unlabeled_speakers --train-utts $unlabeled_utts \
      --dev-utts 0 --test-utts 0 --vocab-size $vocab_size --seed 1 --voice-seed 0 --voice-offset $num_speakers \
      --jobs $nj --format lhotse --manifest-dir data/manifests/unlabeled
    touch $dl_dir/.unlabeled.done
  fi
  if [ ! -f $dl_dir/keywords/keywords_cuts.jsonl.gz ]; then  # the labeled set's voices
    auden-kit data synth-keywords $dl_dir/keywords --num-speakers $num_speakers --reps 4 --jobs $nj
  fi
fi

if [ $stage -le 1 ] && [ $stop_stage -ge 1 ]; then
  log "Stage 1: the unlabeled set (audio only, no labeled dev/test sentence)"
  if up_to_date data/manifests/unlabeled_cuts.jsonl.gz $dl_dir/.unlabeled.done; then skip unlabeled; else
    python local/split_sets.py --unlabeled data/manifests/unlabeled/synth_cuts_train-clean-100.jsonl.gz \
      --labeled-heldout data/manifests/labeled/synth_cuts_{dev,test}-clean.jsonl.gz --out-dir data/manifests
  fi
fi

if [ $stage -le 2 ] && [ $stop_stage -ge 2 ]; then
  log "Stage 2: fbank features, the probe sets, the global mean/variance of the unlabeled set"
  mk() { [ -f "$2" ] && { skip "$2"; return; }; auden-kit data fbank "$1" --out "$2" --jobs $nj "${@:3}"; }
  mk data/manifests/unlabeled_cuts.jsonl.gz data/fbank/unlabeled_cuts.jsonl.gz
  mk data/manifests/labeled/synth_cuts_train-clean-100.jsonl.gz data/fbank/labeled_cuts_train.jsonl.gz --speed-perturb
  mk data/manifests/labeled/synth_cuts_dev-clean.jsonl.gz data/fbank/labeled_cuts_dev.jsonl.gz
  mk data/manifests/labeled/synth_cuts_test-clean.jsonl.gz data/fbank/labeled_cuts_test.jsonl.gz
  mk $dl_dir/keywords/keywords_cuts.jsonl.gz data/fbank/keywords_cuts.jsonl.gz
  if up_to_date data/fbank/probe_speaker_test_cuts.jsonl.gz data/fbank/keywords_cuts.jsonl.gz; then skip probe sets; else
    python local/split_sets.py --keywords data/fbank/keywords_cuts.jsonl.gz --out-dir data/fbank
  fi
  if up_to_date data/fbank/feature_stats.json data/fbank/unlabeled_cuts.jsonl.gz; then skip feature_stats; else
    auden-kit data cmvn data/fbank/unlabeled_cuts.jsonl.gz --out data/fbank/feature_stats.json
  fi
fi

if [ $stage -le 3 ] && [ $stop_stage -ge 3 ]; then
  log "Stage 3: BPE tokenizer from the labeled transcripts"
  if [ ! -f data/lang_bpe/tokenizer.yaml ]; then
    auden-kit data tokenizer data/manifests/labeled/synth_cuts_train-clean-100.jsonl.gz --out-dir data/lang_bpe \
      --vocab-size $bpe_size
  fi
fi

if [ $stage -le 4 ] && [ $stop_stage -ge 4 ]; then
  log "Stage 4: BEST-RQ pretraining on the unlabeled audio (TensorBoard: exp/ssl/tensorboard)"
  train_model conf/pretrain.yaml exp/ssl $pretrain_epochs "" $extra
  average_model exp/ssl $pretrain_epochs 1
fi

if [ $stage -le 5 ] && [ $stop_stage -ge 5 ]; then
  log "Stage 5: ASR on the labeled subset, fine-tuned from the BEST-RQ encoder and from scratch"
  freeze=""; [ "$freeze_steps" -gt 0 ] && freeze="trainer.freeze=[encoder.*] trainer.freeze_steps=$freeze_steps"
  train_model conf/finetune.yaml exp/finetune $finetune_epochs exp/ssl/model-avg $freeze $extra
  average_model exp/finetune $finetune_epochs 1
  train_model conf/finetune.yaml exp/scratch $finetune_epochs "" $extra
  average_model exp/scratch $finetune_epochs 1
fi

if [ $stage -le 6 ] && [ $stop_stage -ge 6 ]; then
  log "Stage 6: decode the held-out test set with both (CTC greedy)"
  for e in finetune scratch; do
    if up_to_date exp/$e/decode/wer-summary-labeled_cuts_test-ctc_greedy.txt exp/$e/model-avg/config.yaml; then skip $e; else
      auden-kit decode --model exp/$e/model-avg --cuts data/fbank/labeled_cuts_test.jsonl.gz --method ctc_greedy \
        --out-dir exp/$e/decode
    fi
  done
fi

probe() {  # probe NAME MODEL [--random-init]: keyword across speakers, speaker across words, frame-level phones
  local name=$1 model=$2 f=data/fbank/probe; shift 2
  if up_to_date exp/probes/$name.json $model/config.yaml; then skip probe $name; return; fi
  mkdir -p exp/probes
  # phones: every encoder frame of the labeled dev sentences (fit) and test sentences (score), labelled with
  # the phone espeak-ng was saying under it (the corpus's alignment): SUPERB's phone probe, unseen sentences
  auden-kit probe --model $model --methods knn,linear --out exp/probes/$name.json --frame-stride 1 \
    --label custom.keyword --train-cuts ${f}_content_train_cuts.jsonl.gz --test-cuts ${f}_content_test_cuts.jsonl.gz \
    --label speaker --train-cuts ${f}_speaker_train_cuts.jsonl.gz --test-cuts ${f}_speaker_test_cuts.jsonl.gz \
    --label alignment.phone --train-cuts data/fbank/labeled_cuts_dev.jsonl.gz \
    --test-cuts data/fbank/labeled_cuts_test.jsonl.gz "$@"
}

if [ $stage -le 7 ] && [ $stop_stage -ge 7 ]; then
  log "Stage 7: probes of the frozen encoders: BEST-RQ, random init (keyword across speakers; speaker across words; phones)"
  probe bestrq exp/ssl/model-avg
  probe random exp/ssl/model-avg --random-init
fi

if [ $stage -le 8 ] && [ $stop_stage -ge 8 ] && [ "$mae" = true ]; then
  log "Stage 8: MAE pretraining (objective=mae) and its probes, for comparison"
  train_model conf/pretrain.yaml exp/mae $mae_epochs "" model.objective=mae model.mask_prob=0.05 $extra
  average_model exp/mae $mae_epochs 1
  probe mae exp/mae/model-avg
fi

if [ $stage -le 9 ] && [ $stop_stage -ge 9 ]; then
  log "Stage 9: summary against the goals"
  python local/summary.py
fi
