"""Shared fixtures: one small synthetic corpus per test session (seconds to build)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    # pytest -n N: the cores shared out between the workers (and the processes they start). Two
    # workers with two OpenMP threads each on two cores spin against each other and run slower
    # than one process; one thread each halves the suite's time (measured: 652 s against 1182 s).
    _threads = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ["OMP_NUM_THREADS"] = str(_threads)
    import torch

    torch.set_num_threads(_threads)
os.environ.setdefault("OMP_NUM_THREADS", "2")


def free_port() -> int:
    """A TCP port nothing listens on (torchrun's rendezvous in tests that may run side by side)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def synth_corpus(tmp_path_factory) -> Path:
    """LibriSpeech-layout corpus: 4 speakers, 8/2/2 utterances each."""
    from auden_kit.data.corpora.synthetic import SynthOptions, synthesize_corpus

    out = tmp_path_factory.mktemp("corpus")
    return synthesize_corpus(out, SynthOptions(num_speakers=4, train_utts=8, dev_utts=2, test_utts=2,
                                               utts_per_chapter=4, jobs=2), progress=False)


@pytest.fixture(scope="session")
def voice_corpus(tmp_path_factory) -> Path:
    """Voice-corpus layout (parts train/dev/test with utt2spk, utt2gender, utt2style): 3 training
    variants x 2 speakers x 4 utterances, 2 unseen test variants x 2 speakers x 3 utterances."""
    from auden_kit.data.corpora.voices import VoiceSynthOptions, synthesize_voice_corpus

    out = tmp_path_factory.mktemp("voices")
    return synthesize_voice_corpus(out, VoiceSynthOptions(
        train_variants=3, test_variants=2, train_speakers_per_variant=2, test_speakers_per_variant=2,
        train_utts=4, dev_utts=2, test_utts=3, jobs=2), progress=False)


@pytest.fixture(scope="session")
def synth_cuts(synth_corpus, tmp_path_factory) -> dict:
    """{part: cut manifest path} of :func:`synth_corpus` (audio only, no features)."""
    from auden_kit.data.corpora.synthetic import corpus_to_cuts

    return corpus_to_cuts(synth_corpus, tmp_path_factory.mktemp("manifests"))


@pytest.fixture(scope="session")
def fbank_cuts(synth_cuts, tmp_path_factory) -> dict:
    """{part: cut manifest with lilcom fbank}."""
    from lhotse import CutSet

    from auden_kit.data.features import compute_fbank
    from auden_kit.io import save_cuts_atomic

    out = tmp_path_factory.mktemp("fbank")
    paths = {}
    for part, p in synth_cuts.items():
        cuts = compute_fbank(CutSet.from_file(p), out, part, num_jobs=1)
        paths[part] = out / f"cuts_{part}.jsonl.gz"
        save_cuts_atomic(cuts, paths[part])
    return paths


TINY_ENCODER = {
    "downsampling_factor": [1, 2], "num_encoder_layers": [1], "encoder_dim": [32, 48],
    "encoder_unmasked_dim": [32], "feedforward_dim": [64], "num_heads": [2], "cnn_module_kernel": [7],
    "query_head_dim": [8], "value_head_dim": [4], "pos_dim": 16, "embed_channels": [4, 8, 16],
}


@pytest.fixture(scope="session")
def bpe_dir(synth_corpus, tmp_path_factory) -> Path:
    from auden_kit.tokenizers import train_sentencepiece

    texts = [line.split(" ", 1)[1] for f in synth_corpus.rglob("*.trans.txt") for line in f.read_text().splitlines()]
    d = tmp_path_factory.mktemp("lang")
    train_sentencepiece(texts, d, vocab_size=60)
    return d


def tiny_train_config(exp_dir, fbank_cuts, bpe_dir, **trainer):
    from auden_kit.config import from_dict
    from auden_kit.training.trainer import TrainConfig

    return from_dict(TrainConfig, {
        "task": "asr", "exp_dir": str(exp_dir), "tokenizer": str(bpe_dir),
        "model": {"encoder": TINY_ENCODER, "decoder_dim": 32, "joiner_dim": 32, "use_ctc": True, "warm_step": 2},
        "data": {"train_cuts": [str(fbank_cuts["train-clean-100"])], "valid_cuts": [str(fbank_cuts["dev-clean"])],
                 "max_duration": 12, "num_buckets": 2, "num_workers": 0},
        "optim": {"base_lr": 0.03, "warmup_batches": 2, "lr_batches": 50},
        "trainer": {"num_epochs": 1, "log_interval": 1, "average_period": 1, "progress": False, **trainer},
    })


@pytest.fixture(scope="session")
def trained_model(fbank_cuts, bpe_dir, tmp_path_factory) -> Path:
    """A (barely) trained tiny ASR model folder, from 2 epochs."""
    from auden_kit.training.trainer import Trainer, export_model_folder

    exp = tmp_path_factory.mktemp("exp")
    Trainer(tiny_train_config(exp, fbank_cuts, bpe_dir, num_epochs=2)).train()
    return export_model_folder(exp, exp / "model-avg", avg=1)


@pytest.fixture(scope="session")
def learned_ctc(fbank_cuts, bpe_dir, tmp_path_factory):
    """A tiny CTC model trained until it knows its 32 training utterances (valid = train), and its
    model folder: what tests that need a model that really transcribes use (learning curve, long
    audio, API). ~30 s on 2 cores."""
    from auden_kit.training.trainer import Trainer, export_model_folder

    exp = tmp_path_factory.mktemp("learned") / "exp"
    cfg = tiny_train_config(exp, fbank_cuts, bpe_dir, num_epochs=30, max_steps=600, log_interval=50,
                            schedule_speedup=50)
    cfg.model["use_transducer"] = False
    cfg.data.valid_cuts = cfg.data.train_cuts
    cfg.data.spec_augment = False
    cfg.data.max_duration = 4
    cfg.optim.base_lr = 0.05
    cfg.optim.lr_batches = 5000
    Trainer(cfg).train()
    steps = bool(list(exp.glob("checkpoint-*.pt")))
    return exp, export_model_folder(exp, exp / "model", avg=1, use_averaged_model=False, step_checkpoints=steps)


def tiny_causal_asr(vocab_size: int, blank_shift: float = 2.0, seed: int = 0):
    """A random causal (streaming) transducer with chunks of 8 and 16 frames of left context; the
    blank logit is lowered by ``blank_shift`` so that random weights emit tokens."""
    import torch

    from auden_kit.encoders.zipformer import ZipformerConfig
    from auden_kit.tasks.asr import AsrModel, AsrModelConfig

    torch.manual_seed(seed)
    enc = ZipformerConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in TINY_ENCODER.items()},
                          causal=True, chunk_size=(8,), left_context_frames=(16,))
    model = AsrModel(AsrModelConfig(encoder=enc, vocab_size=vocab_size, decoder_dim=16, joiner_dim=16)).eval()
    with torch.no_grad():
        model.joiner.output_linear.bias[0] -= blank_shift
    return model


def voice_config(exp_dir, fbank_cuts, **model):
    return {
        "task": "voice", "exp_dir": str(exp_dir),
        "model": {"encoder": TINY_ENCODER, "embed_dim": 32, "heads": ["gender"], "head_weights": {"gender": 2.0},
                  "aam_scale": 16.0, "aam_margin": 0.2, "margin_end_step": 40, "crop_seconds": 1.5, **model},
        "data": {"train_cuts": [str(fbank_cuts["train-clean-100"])], "valid_cuts": [str(fbank_cuts["dev-clean"])],
                 "max_duration": 12, "num_buckets": 2, "num_workers": 0, "spec_augment": False},
        "optim": {"base_lr": 0.05, "warmup_batches": 2, "lr_batches": 100},
        "trainer": {"num_epochs": 6, "log_interval": 5, "average_period": 1, "progress": False,
                    "schedule_speedup": 20},
    }


@pytest.fixture(scope="session")
def voice_model(fbank_cuts, tmp_path_factory):
    import yaml

    d = tmp_path_factory.mktemp("voice")
    (d / "c.yaml").write_text(yaml.safe_dump(voice_config(d / "exp", fbank_cuts)))
    cli = [sys.executable, "-m", "auden_kit.cli.main"]
    r = subprocess.run(cli + ["train", "--config", str(d / "c.yaml")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    r = subprocess.run(cli + ["average", "--exp-dir", str(d / "exp"), "--out", str(d / "model")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    return d


@pytest.fixture(scope="session")
def meetings(fbank_cuts, tmp_path_factory):
    """6 simulated 2-3-speaker meetings (4-14 s) from the tiny corpus, with fbank."""
    d = tmp_path_factory.mktemp("meetings")
    CLI = [sys.executable, "-m", "auden_kit.cli.main"]
    r = subprocess.run(CLI + ["data", "simulate-meetings", str(fbank_cuts["train-clean-100"]), "--out-dir",
                              str(d / "m"), "--audio-dir", str(d / "audio"), "--part", "train", "--num-meetings",
                              "6", "--speakers", "2,3", "--min-duration", "4", "--max-duration", "14",
                              "--max-utts-per-speaker", "2", "--seed", "1"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    out = d / "cuts.jsonl.gz"
    r = subprocess.run(CLI + ["data", "fbank", str(d / "m/meetings_recordings_train.jsonl.gz"),
                              str(d / "m/meetings_supervisions_train.jsonl.gz"), "--out", str(out), "--split",
                              "windows", "--window", "20", "--jobs", "1"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    return d, out


def tiny_hf_teacher(path: Path) -> Path:
    """A random tiny WavLM saved as a local Hugging Face folder (a distillation teacher; offline)."""
    import torch
    from transformers import WavLMConfig, WavLMModel

    cfg = WavLMConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                      conv_dim=(32, 32, 32, 32, 32, 32, 32), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
                      num_buckets=32, max_bucket_distance=64)
    torch.manual_seed(0)
    WavLMModel(cfg).save_pretrained(path)
    return path
