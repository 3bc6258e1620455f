import os
import subprocess
import sys
from pathlib import Path

import torch

from conftest import tiny_train_config


def _weights(exp: Path, name: str) -> dict:
    return torch.load(exp / name, map_location="cpu", weights_only=False)["model"]


def test_interrupted_run_resumes_exactly(fbank_cuts, bpe_dir, tmp_path):
    from auden_kit.training.trainer import Trainer

    a = tmp_path / "a"
    Trainer(tiny_train_config(a, fbank_cuts, bpe_dir, max_steps=4)).train()
    b = tmp_path / "b"
    Trainer(tiny_train_config(b, fbank_cuts, bpe_dir, max_steps=2)).train()
    assert (b / "checkpoint-2.pt").is_file()
    Trainer(tiny_train_config(b, fbank_cuts, bpe_dir, max_steps=4)).train()  # resumes from step 2
    wa, wb = _weights(a, "checkpoint-4.pt"), _weights(b, "checkpoint-4.pt")
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)
    start = _weights(b, "checkpoint-2.pt")
    assert any(not torch.allclose(start[k], wb[k]) for k in wb if start[k].dtype.is_floating_point)


def test_tensorboard_and_model_folder(trained_model):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from auden_kit.hub import load_pretrained

    exp = trained_model.parent
    ea = EventAccumulator(str(exp / "tensorboard"))
    ea.Reload()
    tags = set(ea.Tags()["scalars"])
    for t in ("train/loss", "train/pruned_loss", "train/simple_loss", "train/ctc_loss", "train/lr",
              "train/grad_norm", "train/frames_per_s", "valid/loss", "valid/wer"):
        assert t in tags, t
    for f in ("config.yaml", "model.safetensors", "tokenizers/text/tokenizer.yaml", "tokenizers/text/bpe.model"):
        assert (trained_model / f).is_file()
    lm = load_pretrained(trained_model)
    assert lm.model_cfg.encoder.encoder_dim == (32, 48) and lm.features.num_mel_bins == 80


def test_unknown_config_key_names_the_nearest(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("task: asr\ntrainer:\n  num_epoch: 3\n")
    r = subprocess.run([sys.executable, "-m", "auden_kit.cli.main", "train", "--config", str(cfg)],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "unknown config key 'trainer.num_epoch'" in r.stderr
    assert "did you mean 'num_epochs'" in r.stderr and "Traceback" not in r.stderr
    cfg.write_text("task: asr\n")
    r = subprocess.run([sys.executable, "-m", "auden_kit.cli.main", "train", "--config", str(cfg),
                        "trainer.num_epochs=2", "model.encoder.encoder_dimm=4"], capture_output=True, text=True)
    assert r.returncode == 1 and "did you mean 'encoder_dim'" in r.stderr


def test_ddp_two_cpu_processes(fbank_cuts, bpe_dir, tmp_path):
    import yaml

    from auden_kit.config import to_dict

    cfg = tiny_train_config(tmp_path / "exp", fbank_cuts, bpe_dir, max_steps=2, num_threads=1)
    f = tmp_path / "ddp.yaml"
    f.write_text(yaml.safe_dump(to_dict(cfg)))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                        "--master_port", "29517", "-m", "auden_kit.cli.main", "train", "--config", str(f)],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "world size 2" in r.stderr
    assert (tmp_path / "exp" / "checkpoint-2.pt").is_file()
