#!/usr/bin/env bash
# AliMeeting (Mandarin meetings, M2MeT), TagSpeech-style diarized ASR from a local copy: Lhotse
# manifests (far-field array, one channel: SDM) -> utterance groups (<= 80 s) -> fbank -> optional
# simulated meetings from the training speakers' solo segments -> frozen semantic + voice encoder
# streams cached -> train the decoder -> decode Eval/Test (cpWER, tcpWER, DER, speaker count) ->
# the cascade baseline (voice clustering + ASR) on the same groups.
#   ./run.sh --stage 0 --dl-dir /data/alimeeting --asr-model DIR --voice-model DIR
#   ./run.sh --stage 1 --corpus-dir /data/alimeeting --asr-model DIR --voice-model DIR   # an existing copy
# The semantic stream must be a Mandarin ASR model folder (character or BPE tokens).
set -euo pipefail
cd "$(dirname "$0")"

stage=0
stop_stage=100
dl_dir=download
corpus_dir=""          # default: $dl_dir (the layout: {Train,Eval,Test}_Ali_far/{audio_dir,textgrid_dir})
channel=0              # the array channel read (single distant microphone)
nj=4
max_pause=2.0          # utterance groups: segments joined across pauses shorter than this
max_group=80           # ... and split between segments into parts of at most this many seconds
sim_meetings=0         # extra simulated training meetings from AliMeeting's own solo segments (0: none)
sim_min_seconds=10     # ... lasting sim_min_seconds to max_group seconds
asr_model=""           # semantic stream: a Mandarin ASR model folder
voice_model=""         # voice stream: a voice model folder (e.g. ../voxceleb/exp/model-avg)
thresholds="0.4 0.55 0.7"  # the cascade's clustering thresholds tried on Eval
num_epochs=20
avg=5
config=conf/train.yaml
extra=""               # extra key=value training overrides
help_message="AliMeeting diarized ASR (TagSpeech-style). Example: ./run.sh --stage 1 --corpus-dir /data/alimeeting --asr-model DIR --voice-model DIR"
__options="stage stop_stage dl_dir corpus_dir channel nj max_pause max_group sim_meetings sim_min_seconds asr_model voice_model thresholds num_epochs avg config extra"
. ../../tools/parse_options.sh
. ../../tools/recipe_lib.sh
. ../../tools/meeting_lib.sh
corpus_dir=${corpus_dir:-$dl_dir}
exp=exp/tagspeech
p=alimeeting-sdm

if [ $stage -le 0 ] && [ $stop_stage -ge 0 ]; then
  log "Stage 0: download AliMeeting (Train, Eval, Test; far and near field)"
  if [ ! -f $dl_dir/.download.done ]; then
    lhotse download ali-meeting $dl_dir || {
      echo "run.sh: downloading AliMeeting failed; with a local copy run: ./run.sh --stage 1 --corpus-dir DIR" >&2; exit 1; }
    touch $dl_dir/.download.done
  fi
fi

if [ $stage -le 1 ] && [ $stop_stage -ge 1 ]; then
  log "Stage 1: Lhotse manifests (far field, M2MeT text normalisation; overlapping segments kept)"
  [ -d "$corpus_dir" ] || { echo "run.sh: no AliMeeting at '$corpus_dir' (use --corpus-dir or stage 0)" >&2; exit 1; }
  python -c "import textgrid" 2>/dev/null || { echo "run.sh: Lhotse reads AliMeeting's TextGrids with the 'textgrid' package: pip install textgrid" >&2; exit 1; }
  if [ ! -f data/manifests/.$p.done ]; then
    lhotse prepare ali-meeting --mic sdm --normalize-text m2met "$corpus_dir" data/manifests
    touch data/manifests/.$p.done
  fi
  validate_parts $p "train eval test"
fi

if [ $stage -le 2 ] && [ $stop_stage -ge 2 ]; then
  log "Stage 2: utterance groups (pauses < $max_pause s, at most $max_group s) with fbank; reference RTTM/STM"
  for part in train eval test; do
    fbank_part $p $part data/fbank/alimeeting_cuts_$part.jsonl.gz $nj --split groups --max-pause $max_pause \
      --max-group $max_group --channel $channel
  done
  for part in eval test; do meeting_refs data/fbank/alimeeting_cuts_$part.jsonl.gz data/ref_$part; done
fi

if [ $stage -le 3 ] && [ $stop_stage -ge 3 ]; then
  log "Stage 3: simulated training meetings from the solo segments of AliMeeting ($sim_meetings; 0 = none)"
  if [ "$sim_meetings" -gt 0 ] && [ ! -f data/fbank/alisim_cuts_train.jsonl.gz ]; then
    auden-kit data simulate-meetings data/manifests/${p}_{recordings,supervisions}_train.jsonl.gz \
      --out-dir data/manifests --audio-dir $dl_dir/simulated --prefix alisim --part train \
      --num-meetings $sim_meetings --min-duration $sim_min_seconds --max-duration $max_group --seed 1
    fbank_part alisim train data/fbank/alisim_cuts_train.jsonl.gz $nj --split windows --window $max_group \
      --channel $channel
  fi
fi

check_models() { meeting_models "$asr_model" "$voice_model" "a Mandarin ASR model folder" "a voice model folder (e.g. ../voxceleb/exp/model-avg)"; }

if [ $stage -le 4 ] && [ $stop_stage -ge 4 ]; then
  log "Stage 4: cache the streams of the frozen encoders (training then runs the decoder only)"
  check_models
  meeting_streams $config $asr_model $voice_model data/fbank/alimeeting_cuts_train.jsonl.gz \
    $(ls data/fbank/alisim_cuts_train.jsonl.gz 2>/dev/null) data/fbank/alimeeting_cuts_eval.jsonl.gz
fi

if [ $stage -le 5 ] && [ $stop_stage -ge 5 ]; then
  log "Stage 5: train (TensorBoard: tensorboard --logdir $(pwd)/$exp/tensorboard)"
  check_models
  train=$( (ls data/fbank/{alimeeting,alisim}_streams_train.jsonl.gz 2>/dev/null || true) | paste -sd, -)
  meeting_train $config $exp $num_epochs $asr_model $voice_model "$train" $extra
fi

if [ $stage -le 6 ] && [ $stop_stage -ge 6 ]; then
  log "Stage 6: average checkpoints into a model folder"
  average_model $exp $num_epochs $avg
fi

if [ $stage -le 7 ] && [ $stop_stage -ge 7 ]; then
  log "Stage 7: decode Eval and Test (cpWER, tcpWER, DER at collar 0.25 and 0, speaker count; RTTM/STM/SegLST)"
  meeting_decode $exp alimeeting eval test
fi

if [ $stage -le 8 ] && [ $stop_stage -ge 8 ]; then
  log "Stage 8: the cascade baseline on the same groups (voice clustering + ASR)"
  check_models
  meeting_cascade $voice_model $asr_model "$thresholds" data/fbank/alimeeting_cuts_eval.jsonl.gz \
    data/fbank/alimeeting_cuts_test.jsonl.gz exp/cascade
  meeting_table tagspeech $exp/decode/metrics-test.json cascade exp/cascade/metrics-test.json
fi
