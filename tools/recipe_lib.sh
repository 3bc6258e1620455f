#!/usr/bin/env bash
# Helpers shared by every recipe's run.sh (source it after parse_options.sh):
#   log "Stage 3: ..."                 timestamped line (`auden-kit recipe ls` reads "Stage N: title")
#   up_to_date OUT IN...               true when OUT exists and is newer than every existing IN, so a
#                                      rerun skips finished work and redoes it when an input changed
#   validate_parts, fbank_part(s), train_model, average_model   the stages every recipe has (below)
export PATH="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.venv/bin:$PATH"

log() { echo "$(date '+%H:%M:%S') $*"; }

up_to_date() {
  local out="$1"; shift
  [ -e "$out" ] || return 1
  local f
  for f in "$@"; do
    [ -e "$f" ] || continue
    [ "$f" -nt "$out" ] && return 1
  done
  return 0
}

skip() { log "  up to date: $*"; }

# validate_parts PREFIX "PARTS" [ARGS...]: `auden-kit data validate` the recordings + supervisions
# manifests data/manifests/PREFIX_{recordings,supervisions}_PART.jsonl.gz of every part that exists
validate_parts() {
  local prefix="$1" parts="$2" p; shift 2
  for p in $parts; do
    [ -f data/manifests/${prefix}_recordings_$p.jsonl.gz ] || continue
    auden-kit data validate "$@" data/manifests/${prefix}_{recordings,supervisions}_$p.jsonl.gz
  done
}

# fbank_part PREFIX PART OUT NJ [ARGS...]: fbank features of one part's manifests into OUT (skipped
# when OUT exists); ARGS go to `auden-kit data fbank` (e.g. --speed-perturb --perturbed-speakers)
fbank_part() {
  local prefix="$1" part="$2" out="$3" nj="$4"; shift 4
  if [ -f "$out" ]; then skip "$out"; return; fi
  auden-kit data fbank data/manifests/${prefix}_{recordings,supervisions}_$part.jsonl.gz --out "$out" --jobs $nj "$@"
}

# fbank_parts PREFIX "PARTS" NJ: fbank_part of each part into data/fbank/PREFIX_cuts_PART.jsonl.gz, the
# part named train with 0.9x/1.1x speed copies
fbank_parts() {
  local prefix="$1" parts="$2" nj="$3" p sp
  for p in $parts; do
    sp=""; [ $p = train ] && sp="--speed-perturb"
    fbank_part $prefix $p data/fbank/${prefix}_cuts_$p.jsonl.gz $nj $sp
  done
}

# bpe_model SUPERVISIONS SIZE [ARGS...]: the BPE tokenizer in data/lang_bpe (skipped when there);
# ARGS go to `auden-kit data tokenizer` (e.g. --translations --lang-tags)
bpe_model() {
  local sups="$1" size="$2"; shift 2
  if [ -f data/lang_bpe/tokenizer.yaml ]; then skip data/lang_bpe; return; fi
  auden-kit data tokenizer $sups --out-dir data/lang_bpe --vocab-size $size "$@"
}

# train_model CONFIG EXP NUM_EPOCHS INIT [OVERRIDES...]: `auden-kit train` into EXP (skipped when
# EXP/epoch-NUM_EPOCHS.pt exists); INIT, a model folder or "", starts the encoder from that folder's
train_model() {
  local conf="$1" exp="$2" epochs="$3" init="$4" from=(); shift 4
  if [ -f $exp/epoch-$epochs.pt ]; then skip $exp; return; fi
  [ -z "$init" ] || from=(trainer.init_from=$init "trainer.init_prefix_map={encoder.: encoder.}")
  auden-kit train --config $conf exp_dir=$exp trainer.num_epochs=$epochs "${from[@]}" "$@"
}

# average_model EXP NUM_EPOCHS AVG: average the last AVG epoch checkpoints of EXP into EXP/model-avg
# (skipped when it is newer than the last epoch)
average_model() {
  local exp="$1" epochs="$2" avg="$3"
  if up_to_date $exp/model-avg/config.yaml $exp/epoch-$epochs.pt; then skip $exp/model-avg; else
    auden-kit average --exp-dir $exp --avg $avg --out $exp/model-avg
  fi
}
