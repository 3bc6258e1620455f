#!/usr/bin/env bash
# Diarized multi-speaker ASR (TagSpeech-style: who spoke what and when) on your own meetings:
# audio folders + segments.stm (or SegLST json) -> manifests -> utterance groups with fbank
# -> frozen semantic (ASR) and voice encoder streams cached -> train the decoder -> decode dev/test
# (cpWER, tcpWER, DER, speaker count; RTTM/STM/SegLST) -> the cascade baseline on the same groups.
# Usage: ./run.sh --corpus-dir /path/to/meetings --asr-model DIR --voice-model DIR [--stage N] [--stop-stage M]
set -euo pipefail
cd "$(dirname "$0")"

stage=0
stop_stage=100
corpus_dir=""
nj=2
prefix=mydata
max_pause=2.0          # utterance groups: segments joined across pauses shorter than this
max_group=60           # ... and split between segments into groups of at most this many seconds
asr_model=""           # semantic stream: an ASR model folder for your language (e.g. ../mini_synth/exp/model-avg)
voice_model=""         # voice stream: a voice model folder (e.g. ../mini_synth_voice/exp/model-avg)
thresholds="0.4 0.55 0.7"  # the cascade's clustering thresholds tried on dev
num_epochs=10
avg=2
config=conf/train.yaml
extra=""               # extra key=value training overrides, e.g. --extra "trainer.max_steps=5"
help_message="Diarized ASR on your own meetings (see README.md). Example: ./run.sh --corpus-dir /data/mymeetings --asr-model ../mini_synth/exp/model-avg --voice-model ../mini_synth_voice/exp/model-avg"
__options="stage stop_stage corpus_dir nj prefix max_pause max_group asr_model voice_model thresholds num_epochs avg config extra"
. ../../tools/parse_options.sh
. ../../tools/recipe_lib.sh
. ../../tools/meeting_lib.sh
exp=exp/tagspeech
parts="train dev test"

if [ $stage -le 0 ] && [ $stop_stage -ge 0 ]; then
  log "Stage 0: manifests from your meetings (each part: audio files + segments.stm or segments.json)"
  if [ -f data/manifests/.done ]; then skip data/manifests; else
    [ -n "$corpus_dir" ] || { echo "run.sh: stage 0 needs --corpus-dir" >&2; exit 2; }
    auden-kit data folder "$corpus_dir" --parts "$parts" --prefix $prefix --out-dir data/manifests
    validate_parts $prefix "$parts"
    touch data/manifests/.done
  fi
fi

if [ $stage -le 1 ] && [ $stop_stage -ge 1 ]; then
  log "Stage 1: utterance groups (pauses < $max_pause s, at most $max_group s) with fbank; reference RTTM/STM"
  for part in $parts; do
    fbank_part $prefix $part data/fbank/${prefix}_cuts_$part.jsonl.gz $nj --split groups --max-pause $max_pause \
      --max-group $max_group
  done
  for part in dev test; do meeting_refs data/fbank/${prefix}_cuts_$part.jsonl.gz data/ref_$part; done
fi

check_models() { meeting_models "$asr_model" "$voice_model" "an ASR model folder for the language of your meetings" "a voice model folder (e.g. from egs/TEMPLATE_voice on your speakers)"; }

if [ $stage -le 2 ] && [ $stop_stage -ge 2 ]; then
  log "Stage 2: cache the streams of the frozen encoders (training then runs the decoder only)"
  check_models
  meeting_streams $config $asr_model $voice_model data/fbank/${prefix}_cuts_{train,dev}.jsonl.gz
fi

if [ $stage -le 3 ] && [ $stop_stage -ge 3 ]; then
  log "Stage 3: train (TensorBoard: tensorboard --logdir $(pwd)/$exp/tensorboard)"
  check_models
  meeting_train $config $exp $num_epochs $asr_model $voice_model data/fbank/${prefix}_streams_train.jsonl.gz \
    "data.valid_cuts=[data/fbank/${prefix}_streams_dev.jsonl.gz]" model.max_window=$max_group \
    data.max_cut_duration=$max_group $extra
fi

if [ $stage -le 4 ] && [ $stop_stage -ge 4 ]; then
  log "Stage 4: average checkpoints into a model folder"
  average_model $exp $num_epochs $avg
fi

if [ $stage -le 5 ] && [ $stop_stage -ge 5 ]; then
  log "Stage 5: decode dev and test (cpWER, tcpWER, DER at collar 0.25 and 0, speaker count; RTTM/STM/SegLST)"
  meeting_decode $exp $prefix dev test
fi

if [ $stage -le 6 ] && [ $stop_stage -ge 6 ]; then
  log "Stage 6: the cascade baseline on the same groups (voice clustering + ASR)"
  check_models
  meeting_cascade $voice_model $asr_model "$thresholds" data/fbank/${prefix}_cuts_dev.jsonl.gz \
    data/fbank/${prefix}_cuts_test.jsonl.gz exp/cascade
  meeting_table tagspeech $exp/decode/metrics-test.json cascade exp/cascade/metrics-test.json
  log "Decode any recording: auden-kit decode --model $exp/model-avg meeting.wav --output rttm"
fi
