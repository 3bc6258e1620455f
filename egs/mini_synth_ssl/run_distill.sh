#!/usr/bin/env bash
# Distillation: a smaller Zipformer student learns the quick start's ASR encoder (the teacher, all
# labels of mini_synth) on unlabeled audio, then is fine-tuned on the small labeled subset; the
# same student from scratch on the same labels and steps, and the teacher itself, are decoded on
# the same test set. Uses run.sh's data (stages 0-3; run first if absent) and builds the teacher
# with ../mini_synth/run.sh if it is absent.
# Usage: ./run_distill.sh [--stage N] [--stop-stage M] [--cached true [--codebooks 8 [--code-loss true]]]
set -euo pipefail
cd "$(dirname "$0")"

stage=0
stop_stage=100
teacher=../mini_synth/exp/model-avg
distill_epochs=4
finetune_epochs=12
cached=false   # true: store the teacher's layers once (`data teacher-cache`) and distill from them
codebooks=0    # with --cached true: store vector-quantised codes (this many codebooks per layer) instead
code_loss=false  # with --codebooks M: cross-entropy on the codes (icefall's MVQ) instead of regressing their values
teacher_layers=2,4  # the teacher's taps to learn (0-3 its four stacks, 4 its output; negative: from the end) ...
student_taps=2,4    # ... and the student's taps that learn them, in the same order
extra=""
help_message="Distil a smaller Zipformer from an ASR teacher, fine-tune it, compare. Example: ./run_distill.sh --stage 2"
__options="stage stop_stage teacher distill_epochs finetune_epochs cached codebooks code_loss teacher_layers student_taps extra"
. ../../tools/parse_options.sh
. ../../tools/recipe_lib.sh

if [ $stage -le 0 ] && [ $stop_stage -ge 0 ]; then
  log "Stage 0: data (run.sh stages 0-3) and the teacher ($teacher)"
  ./run.sh --stop-stage 3
  if [ ! -f $teacher/config.yaml ]; then
    [ "$teacher" = ../mini_synth/exp/model-avg ] || { echo "teacher '$teacher' is not a model folder" >&2; exit 1; }
    (cd ../mini_synth && ./run.sh --stop-stage 5)
  fi
fi

if [ $stage -le 1 ] && [ $stop_stage -ge 1 ]; then
  log "Stage 1: distil the student on the unlabeled audio (TensorBoard: exp/distill/tensorboard)"
  over="model.teachers.0.path=$teacher model.teachers.0.layers=[$teacher_layers] model.teachers.0.student_taps=[$student_taps]"
  if [ "$cached" = true ]; then
    tc=data/fbank/unlabeled_cuts_teacher.jsonl.gz
    [ "$codebooks" -gt 0 ] && tc=data/fbank/unlabeled_cuts_teacher_vq$codebooks.jsonl.gz
    vc=data/fbank/labeled_cuts_dev_teacher.jsonl.gz  # validation needs the teacher's targets too (exact values ...
    vq=""; [ "$code_loss" = true ] && vc=data/fbank/labeled_cuts_dev_teacher_vq$codebooks.jsonl.gz vq="--codebooks-from $tc"
    if up_to_date $tc $teacher/config.yaml; then skip teacher cache; else
      auden-kit data teacher-cache --teacher $teacher --name asr --layers $teacher_layers \
        --cuts data/fbank/unlabeled_cuts.jsonl.gz --out $tc --codebooks $codebooks
    fi
    if up_to_date $vc $tc; then skip teacher cache of the dev set; else  # ... or codes of the same codebooks
      auden-kit data teacher-cache --teacher $teacher --name asr --layers $teacher_layers \
        --cuts data/fbank/labeled_cuts_dev.jsonl.gz --out $vc $vq
    fi
    n=$(echo $teacher_layers | tr ',' ' ' | wc -w)  # the cache holds those layers, in order
    over="$over model.teachers.0.kind=cached model.teachers.0.layers=[$(seq -s, 0 $((n - 1)))]"
    over="$over data.train_cuts=[$tc] data.valid_cuts=[$vc]"
    [ "$code_loss" = true ] && over="$over model.teachers.0.loss=codes"
  fi
  train_model conf/distill.yaml exp/distill $distill_epochs "" $over $extra
  average_model exp/distill $distill_epochs 1
fi

if [ $stage -le 2 ] && [ $stop_stage -ge 2 ]; then
  log "Stage 2: the student's ASR on the labeled subset: from the distilled encoder, and from scratch"
  train_model conf/finetune_student.yaml exp/student_finetune $finetune_epochs exp/distill/model-avg $extra
  average_model exp/student_finetune $finetune_epochs 1
  train_model conf/finetune_student.yaml exp/student_scratch $finetune_epochs "" $extra
  average_model exp/student_scratch $finetune_epochs 1
fi

if [ $stage -le 3 ] && [ $stop_stage -ge 3 ]; then
  log "Stage 3: decode the labeled test set with the teacher, the distilled student and the scratch student"
  for e in teacher student_finetune student_scratch; do
    m=exp/$e/model-avg method=ctc_greedy; [ $e = teacher ] && m=$teacher method=greedy  # the teacher: its own best
    if up_to_date exp/$e/decode/wer-summary-labeled_cuts_test-$method.txt $m/config.yaml; then skip $e; continue; fi
    auden-kit decode --model $m --cuts data/fbank/labeled_cuts_test.jsonl.gz --method $method --out-dir exp/$e/decode
  done
  for e in teacher student_finetune student_scratch; do
    printf '%-18s %s\n' $e "$(tail -qn1 exp/$e/decode/wer-summary-labeled_cuts_test-*greedy.txt | cut -f2)"
  done
fi
