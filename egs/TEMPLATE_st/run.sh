#!/usr/bin/env bash
# Speech-translation recipe skeleton: your folder of audio + text (transcript) + text.<lang>
# (translations) -> manifests -> fbank -> one BPE with language tags -> train (transducer + CTC on
# the transcript, attention decoder on the translation) -> average -> BLEU/chrF/WER on test.
# Usage: ./run.sh --corpus-dir /path/to/corpus --language en [--stage N] [--stop-stage M]
set -euo pipefail
cd "$(dirname "$0")"

stage=0
stop_stage=100
corpus_dir=""
corpus_parts="train dev test"  # the corpus folders of train, dev, test; rename with name=folder (train=train.en-de)
language=""         # the spoken language where no utt2lang map says it (e.g. en)
nj=2
bpe_size=0          # 0: from the data (about one piece per distinct word, 30..500)
num_epochs=30
avg=9
beam=4
prefix=mydata
config=conf/train.yaml
asr_model=""        # start the encoder from an ASR model folder with the same encoder (init_from)
extra=""
help_message="Speech-translation recipe for your own data (see README.md). Example: ./run.sh --corpus-dir /data/mytalks --language en"
__options="stage stop_stage corpus_dir corpus_parts language nj bpe_size num_epochs avg beam prefix config asr_model extra"
. ../../tools/parse_options.sh
. ../../tools/recipe_lib.sh
parts="train dev test"

if [ $stage -le 0 ] && [ $stop_stage -ge 0 ]; then
  log "Stage 0: prepare manifests from your corpus (audio + text + text.<lang>)"
  if [ -f data/manifests/.done ]; then skip data/manifests; else
    [ -n "$corpus_dir" ] || { echo "run.sh: stage 0 needs --corpus-dir" >&2; exit 2; }
    auden-kit data folder "$corpus_dir" --parts "$corpus_parts" --prefix $prefix --out-dir data/manifests \
      --language "$language"
    validate_parts $prefix "$parts"
    touch data/manifests/.done
  fi
fi

if [ $stage -le 1 ] && [ $stop_stage -ge 1 ]; then
  log "Stage 1: compute fbank features (train with 0.9x/1.1x speed copies)"
  fbank_parts $prefix "$parts" $nj
fi

if [ $stage -le 2 ] && [ $stop_stage -ge 2 ]; then
  log "Stage 2: one BPE model over transcripts and translations, with language tags"
  bpe_model data/manifests/${prefix}_supervisions_train.jsonl.gz $bpe_size --translations --lang-tags
fi

if [ $stage -le 3 ] && [ $stop_stage -ge 3 ]; then
  log "Stage 3: train (TensorBoard: tensorboard --logdir $(pwd)/exp/tensorboard)"
  train_model $config exp $num_epochs "$asr_model" $extra
fi

if [ $stage -le 4 ] && [ $stop_stage -ge 4 ]; then
  log "Stage 4: average checkpoints into a model folder"
  average_model exp $num_epochs $avg
fi

if [ $stage -le 5 ] && [ $stop_stage -ge 5 ]; then
  log "Stage 5: translate and transcribe the test set (beam $beam): BLEU, chrF, transcript WER, language ID"
  if up_to_date exp/decode/metrics-test-beam$beam.json exp/model-avg/config.yaml; then skip "decode test"; else
    auden-kit decode --model exp/model-avg --cuts data/fbank/${prefix}_cuts_test.jsonl.gz --method beam_search \
      --beam $beam --out-dir exp/decode --name test-beam$beam
  fi
  cat exp/decode/bleu-summary-test-beam$beam.txt
fi
