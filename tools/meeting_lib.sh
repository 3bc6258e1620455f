#!/usr/bin/env bash
# Stages shared by the diarized-ASR (tagspeech) recipes; source after recipe_lib.sh:
#   meeting_refs CUTS OUT_PREFIX                  reference OUT_PREFIX.{rttm,stm} of a cut manifest
#   meeting_streams CONF ASR VOICE CUTS...        cache the frozen encoders' outputs beside each
#                                                 data/fbank/X_cuts_P.jsonl.gz as X_streams_P.jsonl.gz
#   meeting_table NAME METRICS_JSON ...          one summary line per system
#   meeting_models ASR VOICE ASR_HINT VOICE_HINT  both model folders exist, or say what to give
#   meeting_train CONF EXP EPOCHS ASR VOICE TRAIN [OVERRIDES]   tagspeech training (skipped when done)
#   meeting_decode EXP PREFIX PART...             decode data/fbank/PREFIX_cuts_PART.jsonl.gz, scored
#   meeting_cascade VOICE ASR "THRESHOLDS" DEV TEST OUT_DIR
#                                                 the cascade baseline, its clustering threshold
#                                                 tuned on DEV (lowest DER; OUT_DIR/tune-threshold.json),
#                                                 scored on TEST
#   meeting_tune EXP KEY "VALUES" DEV             a decoding key of EXP/model-avg (model.KEY) chosen
#                                                 on DEV (lowest cpWER) and written into its config

# seconds of meetings per decoding batch: the search steps until a batch's longest output ends, so
# on CPU small batches are faster (40 test meetings of mini_synth_meeting, up to 60 s each: 300 /
# 150 / 60 s a batch: 52.2 / 43.0 / 45.3 s; cpWER 25.88 / 25.88 / 25.91)
meeting_batch=150

meeting_refs() {
  local cuts="$1" out="$2" f
  for f in rttm stm; do
    if up_to_date $out.$f "$cuts"; then continue; fi
    auden-kit data export-segments "$cuts" --format $f --out $out.$f
  done
}

meeting_streams() {
  local conf="$1" asr="$2" voice="$3" cuts out; shift 3
  for cuts in "$@"; do
    out=${cuts/_cuts_/_streams_}
    if up_to_date $out $cuts $asr/model.safetensors $voice/model.safetensors; then skip $out; continue; fi
    auden-kit data stream-cache --config $conf $cuts --out $out --semantic-model $asr --voice-model $voice
  done
}

meeting_cascade() {
  local voice="$1" asr="$2" thresholds="$3" dev="$4" test="$5" out="$6" th args=()
  if up_to_date $out/metrics-test.json $asr/config.yaml $voice/config.yaml $test; then skip $out; return; fi
  # the clustering threshold is tuned on dev (lowest DER), as one tunes pyannote's: each dev meeting
  # embedded once and clustered at every threshold, no words (DER needs none; one threshold: its dev
  # figures); then the test
  for th in $thresholds; do args+=(--threshold $th); done
  auden-kit diarize --voice-model $voice --asr-model $asr "${args[@]}" --tune-cuts $dev --cuts $test --out-dir $out \
    --name test
}

# meeting_tune EXP KEY "VALUES" DEV: decode DEV with EXP/model-avg at model.KEY = each value (a folder
# of links beside it, its own config.yaml) and write the value of lowest dev cpWER (the first on a tie)
# into EXP/model-avg/config.yaml: a decoding setting chosen for this run's model, as the cascade's
# threshold is (EXP/tune-KEY/ keeps each value's dev figures)
meeting_tune() {
  local exp="$1" key="$2" values="$3" dev="$4" v d f cpwer best="" best_cp=1e9
  [ -n "$values" ] || { log "model.$key kept as configured (no values to try)"; return 0; }
  if up_to_date $exp/tune-$key/chosen $exp/model-avg/model.safetensors $dev; then skip $exp/tune-$key; return; fi
  for v in $values; do
    d=$exp/tune-$key/$v
    rm -rf $d && mkdir -p $d/folder
    for f in "$(cd $exp/model-avg && pwd)"/*; do  # the folder's files, its config.yaml excepted
      [ "$(basename "$f")" = config.yaml ] || ln -s "$f" $d/folder/
    done
    python - $exp/model-avg/config.yaml $d/folder/config.yaml "$key" "$v" <<'PY'
import sys
import yaml
cfg = yaml.safe_load(open(sys.argv[1]))
if sys.argv[3] not in cfg["model"]:
    sys.exit(f"meeting_tune: model.{sys.argv[3]} is not a key of {sys.argv[1]}")
cfg["model"][sys.argv[3]] = yaml.safe_load(sys.argv[4])
open(sys.argv[2], "w").write(yaml.safe_dump(cfg, sort_keys=False))
PY
    auden-kit decode --model $d/folder --cuts $dev --out-dir $d --name dev --max-duration $meeting_batch
    cpwer=$(python -c "import json; print(json.load(open('$d/metrics-dev.json'))['cpwer'])")
    log "  model.$key $v: dev cpWER $cpwer"
    if python -c "import sys; sys.exit(0 if $cpwer < $best_cp else 1)"; then best=$v; best_cp=$cpwer; fi
  done
  cp $exp/tune-$key/$best/folder/config.yaml $exp/model-avg/config.yaml.tmp
  mv $exp/model-avg/config.yaml.tmp $exp/model-avg/config.yaml
  echo $best > $exp/tune-$key/chosen
  log "model.$key $best (dev cpWER $best_cp) written into $exp/model-avg/config.yaml"
}

# meeting_table NAME METRICS_JSON ...: one summary line per system (those whose file exists)
meeting_table() {
  python - "$@" <<'PY'
import json, sys
from pathlib import Path
from auden_kit.metrics.diarization import summary_line
for name, path in zip(sys.argv[1::2], sys.argv[2::2]):
    if Path(path).is_file():
        print(f"{name:12} {summary_line(json.loads(Path(path).read_text()))}")
PY
}

# meeting_models ASR VOICE "ASR HINT" "VOICE HINT": both model folders exist, or say which to give
meeting_models() {
  [ -n "$1" ] && [ -f "$1/config.yaml" ] || { echo "run.sh: give --asr-model DIR, $3" >&2; exit 1; }
  [ -n "$2" ] && [ -f "$2/config.yaml" ] || { echo "run.sh: give --voice-model DIR, $4" >&2; exit 1; }
}


# meeting_train CONFIG EXP EPOCHS ASR VOICE TRAIN_MANIFESTS(comma-separated) [OVERRIDES...]
meeting_train() {
  local conf="$1" exp="$2" epochs="$3" asr="$4" voice="$5" train="$6"; shift 6
  train_model $conf $exp $epochs "" model.semantic_model=$asr model.voice_model=$voice "data.train_cuts=[$train]" "$@"
}

# meeting_decode EXP CUTS_PREFIX PART...: decode data/fbank/CUTS_PREFIX_cuts_PART.jsonl.gz with EXP/model-avg
meeting_decode() {
  local exp="$1" prefix="$2" part; shift 2
  for part in "$@"; do
    if up_to_date $exp/decode/metrics-$part.json $exp/model-avg/config.yaml; then skip $exp/decode $part; continue; fi
    auden-kit decode --model $exp/model-avg --cuts data/fbank/${prefix}_cuts_$part.jsonl.gz --out-dir $exp/decode \
      --name $part --max-duration $meeting_batch
  done
}
