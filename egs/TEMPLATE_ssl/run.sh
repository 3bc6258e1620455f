#!/usr/bin/env bash
# Self-supervised pretraining on your own data: your unlabeled audio (any length) -> BEST-RQ
# pretraining (or, with --teacher DIR, distillation from a teacher model) -> ASR fine-tuned from the
# pretrained encoder on your labeled folders (and, with --scratch true, the same ASR from scratch to
# compare) -> WER on test (and the teacher's).
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
teacher=""           # model folder(s): stage 3 distils them (conf/distill.yaml) instead of BEST-RQ. An auden-kit folder
                     # (your ASR, an imported icefall model: same fbank) or a local Hugging Face WavLM/HuBERT/wav2vec 2.0;
                     # several, comma-separated: one student learns them all (USAD: e.g. a speech and a sound model)
teacher_layers="-3,-1"  # the teacher's layers to learn (auden-kit: its stacks then its output; Hugging Face: the
                        # hidden states); negative: from the end ...
student_taps="-3,-1"    # ... and the student's taps learning them (its stacks, then its output: -3,-1 = 2,4 here)
cache=false          # true: run each teacher once (data teacher-cache) and distil from its stored layers, not every epoch
codebooks=0          # with --cache true: store this many vector-quantised codebooks per layer (a byte each per frame)
                     # and learn the codes by cross-entropy (icefall's MVQ); 0: compressed values, regression
prefix=mydata
extra=""             # extra key=value overrides for every training, e.g. --extra "trainer.max_steps=5"
help_message="Pretraining (BEST-RQ, or distillation with --teacher DIR) on your own unlabeled audio, fine-tuning on your labeled data (see README.md). Examples: ./run.sh --corpus-dir /data/mycorpus   |   ./run.sh --corpus-dir /data/mycorpus --teacher ../mydata/exp/model-avg"
__options="stage stop_stage corpus_dir unlabeled_parts corpus_parts nj window bpe_size pretrain_epochs finetune_epochs avg freeze_steps scratch teacher teacher_layers student_taps cache codebooks prefix extra"
. ../../tools/parse_options.sh
. ../../tools/recipe_lib.sh
parts="train dev test"
unlabeled=$(for x in ${unlabeled_parts//,/ }; do echo -n "${x%%=*} "; done)  # their manifest names
pre=ssl ft=finetune  # the pretrained and the fine-tuned folders under exp/ (with a teacher: distill, student)
if [ -z "$teacher" ] && { [ "$cache" = true ] || [ "$codebooks" -gt 0 ]; }; then
  echo "run.sh: --cache and --codebooks store a teacher's layers: give --teacher DIR" >&2; exit 2
fi
if [ "$codebooks" -gt 0 ] && [ "$cache" != true ]; then
  echo "run.sh: --codebooks $codebooks quantises the stored layers: add --cache true" >&2; exit 2
fi
teachers=() kinds=()  # absolute paths (recorded in exp/distill/config.yaml) and model or hf
teacher_list=""  # model.teachers for conf/distill.yaml
if [ -n "$teacher" ]; then
  pre=distill ft=student
  IFS=, read -ra given <<< "$teacher"
  for t in "${given[@]}"; do
    if [ -f "$t/config.yaml" ]; then kind=model
    elif [ -f "$t/config.json" ]; then kind=hf
    else echo "run.sh: --teacher '$t' is not a model folder (an auden-kit one has config.yaml, a Hugging Face one config.json)" >&2; exit 2
    fi
    t=$(cd "$t" && pwd)
    teacher_list+="{name: t${#teachers[@]}, kind: $kind, path: '$t', layers: [$teacher_layers], student_taps: [$student_taps]}, "
    teachers+=("$t") kinds+=($kind)
  done
fi

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
  log "Stage 3: pretraining on the unlabeled audio: BEST-RQ, or distillation from --teacher (TensorBoard: exp/ssl or exp/distill)"
  train_cuts=$(for p in $unlabeled; do echo -n "data/fbank/unlabeled_cuts_$p.jsonl.gz,"; done)
  if [ -z "$teacher" ]; then
    train_model conf/pretrain.yaml exp/ssl $pretrain_epochs "" "data.train_cuts=[${train_cuts%,}]" $extra
  elif [ "$cache" != true ]; then
    train_model conf/distill.yaml exp/distill $pretrain_epochs "" "data.train_cuts=[${train_cuts%,}]" \
      "model.teachers=[${teacher_list%, }]" $extra
  else  # each teacher run once over the unlabeled windows and dev; codes everywhere from the first part's codebooks
    n=$(echo $teacher_layers | tr ',' ' ' | wc -w) cached_list="" train_cuts=""
    loss=""; [ "$codebooks" -gt 0 ] && loss=", loss: codes"
    for i in "${!teachers[@]}"; do
      cached_list+="{name: t$i, kind: cached, layers: [$(seq -s, 0 $((n - 1)))], student_taps: [$student_taps]$loss}, "
    done
    first=""
    for p in $unlabeled ${prefix}_dev; do
      src=data/fbank/unlabeled_cuts_$p.jsonl.gz; [ $p = ${prefix}_dev ] && src=data/fbank/${prefix}_cuts_dev.jsonl.gz
      cur=$src
      for i in "${!teachers[@]}"; do
        t=${teachers[$i]} kind=${kinds[$i]} out=data/teacher_cache/${p}_t$i.jsonl.gz vq=""
        [ -n "$first" ] && [ "$codebooks" -gt 0 ] && vq="--codebooks-from data/teacher_cache/${first}_t$i.jsonl.gz"
        made="$t layers $teacher_layers codebooks $codebooks"  # what the cache holds: another teacher redoes it
        if up_to_date $out $cur && [ "$(cat ${out%.jsonl.gz}.made 2>/dev/null)" = "$made" ]; then skip $out; else
          auden-kit data teacher-cache --teacher "$t" --kind $kind --name t$i --layers $teacher_layers --cuts $cur \
            --out $out --codebooks $codebooks $vq
          echo "$made" > ${out%.jsonl.gz}.made
        fi
        cur=$out
      done
      first=${first:-$p}
      if [ $p = ${prefix}_dev ]; then valid=$cur; else train_cuts+="$cur,"; fi
    done
    train_model conf/distill.yaml exp/distill $pretrain_epochs "" "data.train_cuts=[${train_cuts%,}]" \
      "data.valid_cuts=[$valid]" "model.teachers=[${cached_list%, }]" $extra
  fi
  average_model exp/$pre $pretrain_epochs $avg
fi

if [ $stage -le 4 ] && [ $stop_stage -ge 4 ]; then
  log "Stage 4: ASR fine-tuned from the pretrained encoder (with --scratch true also from scratch, to compare)"
  freeze=""; [ "$freeze_steps" -gt 0 ] && freeze="trainer.freeze=[encoder.*] trainer.freeze_steps=$freeze_steps"
  train_model conf/finetune.yaml exp/$ft $finetune_epochs exp/$pre/model-avg $freeze $extra
  average_model exp/$ft $finetune_epochs $avg
  if [ $scratch = true ]; then
    train_model conf/finetune.yaml exp/scratch $finetune_epochs "" $extra
    average_model exp/scratch $finetune_epochs $avg
  fi
fi

if [ $stage -le 5 ] && [ $stop_stage -ge 5 ]; then
  log "Stage 5: decode the test set (CTC greedy; an ASR teacher with its own best search; all scored case-folded)"
  for i in "${!teachers[@]}"; do  # the ASR teachers, each with its own best search
    t=${teachers[$i]} out=exp/teacher$i
    grep -q '^task: asr' "$t/config.yaml" 2>/dev/null || continue
    if [ "$(cat $out/path 2>/dev/null)" = "$t" ]; then skip "decode teacher $t"; else
      rm -rf $out
      auden-kit decode --model "$t" --cuts data/fbank/${prefix}_cuts_test.jsonl.gz --out-dir $out/decode \
        --normalize  # a teacher trained on other casing (LibriSpeech's upper case) is scored alike
      echo "$t" > $out/path
    fi
    echo "teacher$i: $(tail -qn 1 $out/decode/wer-summary-${prefix}_cuts_test-*.txt | head -n 1)  ($t)"
  done
  for e in $ft scratch; do
    [ -f exp/$e/model-avg/config.yaml ] || continue
    if up_to_date exp/$e/decode/wer-summary-${prefix}_cuts_test-ctc_greedy.txt exp/$e/model-avg/config.yaml; then
      skip "decode $e"
    else
      auden-kit decode --model exp/$e/model-avg --cuts data/fbank/${prefix}_cuts_test.jsonl.gz --method ctc_greedy \
        --out-dir exp/$e/decode --normalize
    fi
    echo "$e: $(tail -n 1 exp/$e/decode/wer-summary-${prefix}_cuts_test-ctc_greedy.txt)"
  done
fi
