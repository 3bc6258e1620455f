#!/usr/bin/env bash
# LibriSpeech self-supervised pretraining (BEST-RQ, Zipformer-M) on the 960 h audio without its
# transcripts, read as Lhotse Shar shards; then ASR fine-tuning on train-clean-100 from the
# pretrained encoder (trainer.init_from) and decoding of test-clean/test-other.
#   ./run_pretrain.sh --corpus-dir /data/LibriSpeech --world-size 4
#   ./run_pretrain.sh --stage 3 --shar-dir s3://bucket/librispeech-shar   # shards elsewhere (any Lhotse URL)
# Uses run.sh for the download (stage 0), the manifests (its stage 1) and the fine-tuning data.
set -euo pipefail
cd "$(dirname "$0")"

stage=0
stop_stage=100
dl_dir=download
corpus_dir=""
pretrain_parts="train-clean-100 train-clean-360 train-other-500"
finetune_part=train-clean-100
nj=4
shard_size=1000
shar_dir=data/shar/pretrain
world_size=1
pretrain_epochs=20
finetune_epochs=30
avg=9
bpe_size=500
pretrain_config=conf/pretrain.yaml
finetune_config=conf/train.yaml
extra=""            # extra overrides for pretraining
finetune_extra=""   # extra overrides for fine-tuning
help_message="LibriSpeech BEST-RQ pretraining + fine-tuning. Example: ./run_pretrain.sh --corpus-dir /data/LibriSpeech"
__options="stage stop_stage dl_dir corpus_dir pretrain_parts finetune_part nj shard_size shar_dir world_size pretrain_epochs finetune_epochs avg bpe_size pretrain_config finetune_config extra finetune_extra"
. ../../tools/parse_options.sh
. ../../tools/recipe_lib.sh
corpus_dir=${corpus_dir:-$dl_dir/LibriSpeech}

train() {  # train CONFIG OVERRIDES...: one process, or torchrun over --world-size processes
  if [ "$world_size" -gt 1 ]; then
    torchrun --nproc_per_node $world_size -m auden_kit.cli.main train --config "$@"
  else
    auden-kit train --config "$@"
  fi
}

if [ $stage -le 0 ] && [ $stop_stage -ge 0 ]; then
  log "Stage 0: download (run.sh stage 0) and Lhotse manifests (run.sh stage 1)"
  ./run.sh --stage 0 --stop-stage 1 --dl-dir $dl_dir --corpus-dir "$corpus_dir" --full true --nj $nj
fi

if [ $stage -le 1 ] && [ $stop_stage -ge 1 ]; then
  log "Stage 1: fbank of the pretraining audio (no speed perturbation; transcripts unused)"
  for p in $pretrain_parts; do
    if [ ! -f data/manifests/librispeech_recordings_$p.jsonl.gz ]; then log "  $p is not in the corpus; skipping it"; continue; fi
    if [ -f data/fbank/pretrain_cuts_$p.jsonl.gz ]; then skip $p; continue; fi
    auden-kit data fbank data/manifests/librispeech_recordings_$p.jsonl.gz --out data/fbank/pretrain_cuts_$p.jsonl.gz \
      --jobs $nj
  done
fi

if [ $stage -le 2 ] && [ $stop_stage -ge 2 ]; then
  log "Stage 2: Shar shards ($shar_dir) and the global feature statistics"
  parts=$(for p in $pretrain_parts; do [ -f data/fbank/pretrain_cuts_$p.jsonl.gz ] && echo data/fbank/pretrain_cuts_$p.jsonl.gz; done)
  [ -n "$parts" ] || { echo "run_pretrain.sh: no pretraining features (stage 1)" >&2; exit 1; }
  if [ -f $shar_dir/shar_index.json ]; then skip $shar_dir; else
    auden-kit data shar $parts --out $shar_dir --shard-size $shard_size --jobs $nj
  fi
  if [ -f data/fbank/pretrain_stats.json ]; then skip pretrain_stats; else
    auden-kit data cmvn $parts --out data/fbank/pretrain_stats.json --max-cuts 5000
  fi
  ./run.sh --stage 3 --stop-stage 3 --corpus-dir "$corpus_dir" --nj $nj  # dev-clean (validation) and test sets
fi

if [ $stage -le 3 ] && [ $stop_stage -ge 3 ]; then
  log "Stage 3: BEST-RQ pretraining (TensorBoard: tensorboard --logdir $(pwd)/exp_pretrain/tensorboard)"
  [ -f exp_pretrain/epoch-$pretrain_epochs.pt ] || train $pretrain_config "data.train_cuts=[$shar_dir]" \
    trainer.num_epochs=$pretrain_epochs $extra
  average_model exp_pretrain $pretrain_epochs $avg
fi

if [ $stage -le 4 ] && [ $stop_stage -ge 4 ]; then
  log "Stage 4: fine-tune the ASR on $finetune_part from the pretrained encoder"
  ./run.sh --stage 3 --stop-stage 4 --corpus-dir "$corpus_dir" --nj $nj --bpe-size $bpe_size  # fbank + BPE
  [ -f exp_finetune/epoch-$finetune_epochs.pt ] || train $finetune_config exp_dir=exp_finetune \
    "data.train_cuts=[data/fbank/librispeech_cuts_$finetune_part.jsonl.gz]" tokenizer=data/lang_bpe_$bpe_size \
    trainer.num_epochs=$finetune_epochs trainer.init_from=exp_pretrain/model-avg \
    "trainer.init_prefix_map={encoder.: encoder.}" $finetune_extra
  average_model exp_finetune $finetune_epochs $avg
fi

if [ $stage -le 5 ] && [ $stop_stage -ge 5 ]; then
  log "Stage 5: decode test-clean / test-other"
  for p in test-clean test-other; do
    [ -f data/fbank/librispeech_cuts_$p.jsonl.gz ] || continue
    if up_to_date exp_finetune/decode/wer-summary-librispeech_cuts_$p-greedy.txt exp_finetune/model-avg/config.yaml; then
      skip $p; continue
    fi
    auden-kit decode --model exp_finetune/model-avg --cuts data/fbank/librispeech_cuts_$p.jsonl.gz --method greedy \
      --out-dir exp_finetune/decode
  done
  grep -h "" exp_finetune/decode/wer-summary-* || true
fi
