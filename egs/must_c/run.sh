#!/usr/bin/env bash
# MuST-C En->X speech translation from a local copy (the corpus needs a licence: nothing
# downloads): manifests with transcript + translation -> fbank -> shared BPE with language tags ->
# train (optionally from an English ASR encoder) -> average -> BLEU on tst-COMMON and tst-HE,
# case-sensitive detokenised and lowercased without punctuation, chrF, transcript WER.
# Usage: ./run.sh --corpus-dir /data/MUSTC_v1.0 --tgt-lang de [--asr-model ../librispeech/exp/model-avg]
set -euo pipefail
cd "$(dirname "$0")"

stage=0
stop_stage=100
corpus_dir=""
tgt_lang=de
nj=8
bpe_size=8000          # fairseq/ESPnet use 8k (unigram) for MuST-C En-De
num_epochs=40
avg=10
beam=10
config=conf/train.yaml
asr_model=""           # an ASR model folder with the same encoder (e.g. ../librispeech/exp/model-avg)
extra=""
help_message="MuST-C speech translation. Example: ./run.sh --corpus-dir /data/MUSTC_v1.0 --tgt-lang de"
__options="stage stop_stage corpus_dir tgt_lang nj bpe_size num_epochs avg beam config asr_model extra"
. ../../tools/parse_options.sh
. ../../tools/recipe_lib.sh
pair=en-$tgt_lang
parts="train dev tst-COMMON tst-HE"

if [ $stage -le 0 ] && [ $stop_stage -ge 0 ]; then
  log "Stage 0: manifests from the local MuST-C copy ($corpus_dir, $pair)"
  if [ -f data/manifests/.done-$pair ]; then skip data/manifests; else
    [ -n "$corpus_dir" ] || { echo "run.sh: stage 0 needs --corpus-dir (MuST-C is not downloadable without a licence)" >&2; exit 2; }
    auden-kit data must-c $corpus_dir --tgt-lang $tgt_lang --out-dir data/manifests --jobs $nj
    validate_parts must_c "$(for p in $parts; do echo ${pair}_$p; done)"
    touch data/manifests/.done-$pair
  fi
fi

if [ $stage -le 1 ] && [ $stop_stage -ge 1 ]; then
  log "Stage 1: fbank features (segments cut from the talks; train speed-perturbed)"
  for p in $parts; do
    sp=""; [ $p = train ] && sp="--speed-perturb"
    fbank_part must_c ${pair}_$p data/fbank/must_c_cuts_$p.jsonl.gz $nj $sp
  done
fi

if [ $stage -le 2 ] && [ $stop_stage -ge 2 ]; then
  log "Stage 2: one BPE model over transcripts and translations, with language tags"
  bpe_model data/manifests/must_c_supervisions_${pair}_train.jsonl.gz $bpe_size --translations --lang-tags
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
  log "Stage 5: translate tst-COMMON and tst-HE (beam $beam): BLEU both ways, chrF, transcript WER"
  for p in tst-COMMON tst-HE; do
    if up_to_date exp/decode/metrics-$p-beam$beam.json exp/model-avg/config.yaml; then skip "decode $p"; else
      auden-kit decode --model exp/model-avg --cuts data/fbank/must_c_cuts_$p.jsonl.gz --method beam_search \
        --beam $beam --out-dir exp/decode --name $p-beam$beam
    fi
    cat exp/decode/bleu-summary-$p-beam$beam.txt
  done
fi
