"""Core v2: tasks that are not ASR, model folders v2, plugins, init_from / freeze / frozen
sub-models, gradient accumulation, exact resume with data-loader workers."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from conftest import TINY_ENCODER, free_port, tiny_train_config

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "auden_kit.cli.main"]


def run(*args, env=None, cwd=None):
    return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True, env=env, cwd=cwd)


def classify_config(exp_dir, fbank_cuts, **trainer):
    from auden_kit.config import from_dict
    from auden_kit.training.trainer import TrainConfig

    return from_dict(TrainConfig, {
        "task": "classify", "exp_dir": str(exp_dir),
        "model": {"encoder": TINY_ENCODER, "label_key": "speaker", "pooling": "mean_std", "dropout": 0.0},
        "data": {"train_cuts": [str(fbank_cuts["train-clean-100"])], "valid_cuts": [str(fbank_cuts["dev-clean"])],
                 "max_duration": 12, "num_buckets": 2, "num_workers": 0, "spec_augment": False},
        "optim": {"base_lr": 0.05, "warmup_batches": 2, "lr_batches": 100},
        "trainer": {"num_epochs": 6, "log_interval": 5, "average_period": 1, "progress": False,
                    "schedule_speedup": 20, **trainer},
    })


@pytest.fixture(scope="session")
def classifier_exp(fbank_cuts, tmp_path_factory):
    """A speaker classifier (4 speakers) trained through `auden-kit train`, averaged by its best
    validation accuracy."""
    exp = tmp_path_factory.mktemp("cls") / "exp"
    from auden_kit.config import to_dict

    cfg = tmp_path_factory.mktemp("clscfg") / "c.yaml"
    cfg.write_text(yaml.safe_dump(to_dict(classify_config(exp, fbank_cuts))))
    r = run("train", "--config", cfg)
    assert r.returncode == 0, r.stderr[-3000:]
    r = run("average", "--exp-dir", exp, "--best", "--avg", "2", "--out", exp / "model-best")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "best 2 epochs by accuracy" in r.stderr
    return exp


def test_classification_task_learns_and_decodes(classifier_exp, fbank_cuts, synth_corpus):
    """The second core task: label map from the manifests into the model folder, validation
    accuracy per epoch, checkpoints chosen by that metric, decoding with probabilities."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(classifier_exp / "tensorboard"))
    ea.Reload()
    acc = [e.value for e in ea.Scalars("valid/accuracy")]
    print("valid accuracy per epoch:", acc)
    assert len(acc) == 6 and max(acc) >= 0.75 and max(acc) > acc[0]  # 4 speakers: chance is 0.25
    folder = classifier_exp / "model-best"
    cfg = yaml.safe_load((folder / "config.yaml").read_text())
    assert cfg["format_version"] == 2 and cfg["task"] == "classify" and cfg["label_maps"] == ["labels"]
    labels = (folder / "labels" / "labels.txt").read_text().split()
    assert len(labels) == 4 and labels == sorted(labels)
    r = run("decode", "--model", folder, "--cuts", fbank_cuts["dev-clean"], "--out-dir", classifier_exp / "dec")
    assert r.returncode == 0, r.stderr
    res = [json.loads(x) for x in next((classifier_exp / "dec").glob("results-*.jsonl")).read_text().splitlines()]
    assert len(res) == 8 and all(r["refs"]["speaker"] in labels for r in res)
    right = sum(r["speaker"][0]["label"] == r["refs"]["speaker"] for r in res)
    assert f"accuracy {right / 8:.4g}" in r.stdout
    wav = sorted(synth_corpus.glob("dev-clean/*/*/*.flac"))[0]
    r = run("decode", "--model", folder, "--output", "json", wav)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    probs = [x["prob"] for x in d["speaker"]]
    assert d["file"] == str(wav) and probs == sorted(probs, reverse=True) and abs(sum(probs) - 1) < 0.01


def test_missing_labels_are_masked_not_guessed(fbank_cuts, tmp_path):
    from lhotse import CutSet

    from auden_kit.data.datamodule import make_loader
    from auden_kit.training.trainer import Trainer

    cuts = CutSet.from_file(fbank_cuts["train-clean-100"]).to_eager()
    cut_list = list(cuts)
    for c in cut_list[::2]:
        c.supervisions[0].speaker = "Null" if c.id.endswith("1") else ""
    path = tmp_path / "partial.jsonl.gz"
    CutSet.from_cuts(cut_list).to_file(path)
    cfg = classify_config(tmp_path / "exp", fbank_cuts, max_steps=2)
    cfg.data.train_cuts = [str(path)]
    cfg.data.drop_last = False
    t = Trainer(cfg)
    assert "" not in t.task.labels and "Null" not in t.task.labels
    loader, _ = make_loader(cfg.data, [str(path)], train=True, task=t.task)
    n_missing = 0
    for b in loader:
        y = b["targets"]["labels"]
        refs = b["targets"]["refs"]
        assert all((yy == -100) == (r is None) for yy, r in zip(y.tolist(), refs))
        n_missing += int((y == -100).sum())
    assert n_missing == len(cut_list[::2])
    t.train()


def test_external_plugin_task_trains_with_the_cli(fbank_cuts, tmp_path):
    """A package installed with pip (entry point `auden_kit.tasks`) is found by `auden-kit train`:
    clean inputs for its targets, a Frozen teacher that never reaches the optimizer, checkpoints or
    the model folder, loss-only validation."""
    site = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                        "--target", str(site), str(ROOT / "tests" / "plugin_pkg")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    env = dict(os.environ, PYTHONPATH=str(site))
    cfg = {"task": "toy_regress", "exp_dir": str(tmp_path / "exp"),
           "model": {"encoder": TINY_ENCODER, "target_dim": 4},
           "data": {"train_cuts": [str(fbank_cuts["train-clean-100"])], "valid_cuts": [str(fbank_cuts["dev-clean"])],
                    "max_duration": 12, "num_buckets": 2, "num_workers": 0},
           "trainer": {"num_epochs": 2, "progress": False, "average_period": 1, "log_interval": 1}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    r = run("train", "--config", tmp_path / "c.yaml", env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "validation: loss" in r.stderr
    st = torch.load(tmp_path / "exp" / "epoch-2.pt", map_location="cpu", weights_only=False)
    assert st["model"] and not any("teacher" in k for k in st["model"])
    assert not any("teacher" in k for k in st["model_avg"])
    sys.path.insert(0, str(site))
    try:
        from auden_kit_toy import ToyConfig, ToyModel

        m = ToyModel(ToyConfig(encoder=TINY_ENCODER, target_dim=4))
    finally:
        sys.path.remove(str(site))
    assert set(st["model"]) == set(m.state_dict())  # the teacher is not in the state at all
    n_opt = sum(len(g["params"]) for g in st["optimizer"]["param_groups"])
    assert n_opt == len(list(m.parameters()))
    hist = st["history"]
    assert [h["epoch"] for h in hist] == [1, 2] and hist[-1]["loss"] < hist[0]["loss"]
    r = run("average", "--exp-dir", tmp_path / "exp", "--out", tmp_path / "model", env=env)
    assert r.returncode == 0, r.stderr
    from safetensors.torch import load_file

    assert not any("teacher" in k for k in load_file(str(tmp_path / "model" / "model.safetensors")))
    # without the plugin on the path the task is unknown, and the message says how plugins register
    r = run("train", "--config", tmp_path / "c.yaml")
    assert r.returncode == 1 and "unknown task 'toy_regress'" in r.stderr and "entry-point" in r.stderr


def test_ddp_equals_a_single_process_with_accumulation(fbank_cuts, tmp_path):
    """Two gloo ranks each take every other batch; one process accumulating two batches per step
    takes the same pairs: with a deterministic model (an encoder from the plugin's entry point)
    both runs end with the same weights."""
    site = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                        "--target", str(site), str(ROOT / "tests" / "plugin_pkg")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    env = dict(os.environ, PYTHONPATH=str(site), OMP_NUM_THREADS="1")

    def cfg(exp, accum):
        c = {"task": "classify", "exp_dir": str(tmp_path / exp),
             "model": {"encoder_type": "toy_linear", "encoder": {"dim": 16}, "label_key": "speaker", "dropout": 0.0,
                       "pooling": "mean_std"},
             "data": {"train_cuts": [str(fbank_cuts["train-clean-100"])], "max_duration": 6, "num_buckets": 1,
                      "num_workers": 0, "spec_augment": False},
             "optim": {"base_lr": 0.05, "warmup_batches": 1, "lr_batches": 100},
             "trainer": {"num_epochs": 1, "max_steps": 3, "accum_grad": accum, "progress": False,
                         "average_period": 1, "num_threads": 1, "device": "cpu"}}
        (tmp_path / f"{exp}.yaml").write_text(yaml.safe_dump(c))
        return tmp_path / f"{exp}.yaml"

    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                        str(free_port()), "-m", "auden_kit.cli.main", "train", "--config", str(cfg("ddp", 1))],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    r = run("train", "--config", cfg("single", 2), env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    a = torch.load(tmp_path / "ddp" / "checkpoint-3.pt", map_location="cpu", weights_only=False)["model"]
    b = torch.load(tmp_path / "single" / "checkpoint-3.pt", map_location="cpu", weights_only=False)["model"]
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a), max((a[k] - b[k]).abs().max() for k in a)
    # the comparison can tell: one batch per step (half the data per step) ends elsewhere
    r = run("train", "--config", cfg("single1", 1), env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    c = torch.load(tmp_path / "single1" / "checkpoint-3.pt", map_location="cpu", weights_only=False)["model"]
    assert not all(torch.allclose(a[k], c[k], atol=1e-5) for k in a)


def test_init_from_prefix_map_and_freeze(trained_model, fbank_cuts, tmp_path):
    """The classifier's encoder starts from an ASR model folder (prefix map), frozen for 2 steps
    and then unfrozen; the head trains from the start."""
    from safetensors.torch import load_file

    from auden_kit.errors import UserError
    from auden_kit.training.trainer import Trainer

    asr = load_file(str(trained_model / "model.safetensors"))
    cfg = classify_config(tmp_path / "a", fbank_cuts, max_steps=2, init_from=str(trained_model),
                          init_prefix_map={"encoder.": "encoder."}, freeze=["encoder.*"])
    t = Trainer(cfg)
    enc = {k: v.cpu() for k, v in t.model.state_dict().items() if k.startswith("encoder.")}
    assert enc and all(torch.equal(v, asr[k]) for k, v in enc.items())
    head0 = t.model.classifier[1].weight.detach().cpu().clone()
    t.train()
    after = {k: v.cpu() for k, v in t.model.state_dict().items()}
    assert all(torch.equal(after[k], asr[k]) for k in enc)  # frozen: not one step
    assert not torch.equal(after["classifier.1.weight"], head0)
    cfg = classify_config(tmp_path / "b", fbank_cuts, max_steps=4, init_from=str(trained_model),
                          init_prefix_map={"encoder.": "encoder."}, freeze=["encoder.*"], freeze_steps=2)
    t = Trainer(cfg)
    t.train()
    assert any(not torch.equal(t.model.state_dict()[k].cpu(), asr[k]) for k in enc)  # unfrozen after 2 steps
    with pytest.raises(UserError, match="matches no parameter"):
        Trainer(classify_config(tmp_path / "c", fbank_cuts, freeze=["nothing.*"]))
    with pytest.raises(UserError, match="init_prefix_map"):
        Trainer(classify_config(tmp_path / "d", fbank_cuts, init_from=str(trained_model),
                                init_prefix_map={"decoder.": "encoder."}))


def test_gradient_accumulation_normalises_by_the_total_count(fbank_cuts, bpe_dir, tmp_path):
    """Two accumulated batches give the gradient of their summed loss over their summed count,
    and one optimizer step per two batches."""
    from auden_kit.training.trainer import Trainer

    t = Trainer(tiny_train_config(tmp_path / "e", fbank_cuts, bpe_dir, max_steps=3, accum_grad=2))
    import random

    t.model.eval()  # no dropout; the gradient regularizers (Whiten, Balancer) draw from `random`
    it = iter(t.train_loader)
    b1, b2 = t._to_device(next(it)), t._to_device(next(it))
    t.optimizer.zero_grad()
    random.seed(0)
    _, count = t._forward_backward([b1, b2])
    g_acc = [p.grad.clone() for p in t.model.parameters() if p.grad is not None]
    t.optimizer.zero_grad()
    random.seed(0)
    l1, _, n1 = t.task.compute_loss(t.model, b1, t.step)
    l2, _, n2 = t.task.compute_loss(t.model, b2, t.step)
    ((l1 + l2) / (n1 + n2)).backward()
    g_ref = [p.grad.clone() for p in t.model.parameters() if p.grad is not None]
    assert count == n1 + n2
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(g_acc, g_ref))
    t2 = Trainer(tiny_train_config(tmp_path / "f", fbank_cuts, bpe_dir, max_steps=3, accum_grad=2))
    t2.train()
    assert t2.step == 3 and t2.train_sampler.consumed == 6


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_is_exact_with_workers_and_augmentation(fbank_cuts, bpe_dir, tmp_path, workers):
    """Killed after step 2 and resumed, a run with SpecAugment and data-loader workers ends with
    the weights of an uninterrupted run."""
    from auden_kit.training.trainer import Trainer

    def cfg(exp, steps):
        c = tiny_train_config(exp, fbank_cuts, bpe_dir, max_steps=steps, device="cpu")  # see test_trainer.py
        c.data.num_workers = workers
        c.data.spec_augment = True
        c.data.max_duration = 6
        return c

    Trainer(cfg(tmp_path / "a", 4)).train()
    Trainer(cfg(tmp_path / "b", 2)).train()
    Trainer(cfg(tmp_path / "b", 4)).train()
    wa = torch.load(tmp_path / "a" / "checkpoint-4.pt", map_location="cpu", weights_only=False)["model"]
    wb = torch.load(tmp_path / "b" / "checkpoint-4.pt", map_location="cpu", weights_only=False)["model"]
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)


def test_v1_model_folder_still_loads(trained_model, tmp_path):
    """A folder written before format version 2 (tokenizer/ beside config.yaml) loads and decodes."""
    import shutil

    from auden_kit.hub import load_pretrained

    v1 = tmp_path / "v1"
    shutil.copytree(trained_model, v1)
    shutil.move(str(v1 / "tokenizers" / "text"), str(v1 / "tokenizer"))
    shutil.rmtree(v1 / "tokenizers")
    cfg = yaml.safe_load((v1 / "config.yaml").read_text())
    for k in ("format_version", "tokenizers", "label_maps"):
        cfg.pop(k)
    enc = cfg["model"].pop("encoder")
    cfg["model"].pop("encoder_type")
    cfg["model"]["encoder"] = enc
    (v1 / "config.yaml").write_text(yaml.safe_dump(cfg))
    a, b = load_pretrained(trained_model), load_pretrained(v1)
    assert b.tokenizer.vocab_size == a.tokenizer.vocab_size
    assert all(torch.equal(v, b.model.state_dict()[k]) for k, v in a.model.state_dict().items())
    cfg["format_version"] = 9
    (v1 / "config.yaml").write_text(yaml.safe_dump(cfg))
    r = run("decode", "--model", v1, "x.wav")
    assert r.returncode == 1 and "version-9 model folder" in r.stderr


@pytest.mark.parametrize("causal,ctc", [(False, True), (True, False)])
def test_import_icefall_reads_sizes_from_the_weights(bpe_dir, tmp_path, causal, ctc):
    """`auden-kit import-icefall` takes icefall's bpe.model directly and infers the sizes, causality and
    CTC head from the checkpoint; the imported model gives the source model's outputs."""
    from auden_kit.encoders.zipformer import ZipformerConfig
    from auden_kit.hub import load_pretrained
    from auden_kit.tasks.asr import AsrModel, AsrModelConfig
    from auden_kit.tokenizers import load_tokenizer

    tok = load_tokenizer(bpe_dir)
    torch.manual_seed(0)
    enc = ZipformerConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in TINY_ENCODER.items()},
                          causal=causal, chunk_size=(16,), left_context_frames=(64,))
    att = dict(use_attention_decoder=True, attention_decoder_layout="icefall", attention_decoder_dim=24,
               attention_decoder_layers=2, attention_decoder_heads=8, attention_decoder_ff_dim=40) if ctc else {}
    src = AsrModel(AsrModelConfig(encoder=enc, vocab_size=tok.vocab_size, decoder_dim=16, joiner_dim=24,
                                  use_ctc=ctc, **att)).eval()
    state = {(k[len("encoder."):] if k.startswith("encoder.encoder_embed.") else k): v
             for k, v in src.state_dict().items()}
    torch.save({"model": state, "epoch": 30}, tmp_path / "pretrained.pt")
    r = run("import-icefall", "--checkpoint", tmp_path / "pretrained.pt", "--tokenizer", bpe_dir / "bpe.model",
            "--out", tmp_path / "m")
    assert r.returncode == 0, r.stderr
    lm = load_pretrained(tmp_path / "m")
    c = lm.model_cfg
    assert c.encoder.causal == causal and c.use_ctc == ctc and c.decoder_dim == 16 and c.joiner_dim == 24
    assert c.encoder.encoder_dim == (32, 48) and c.encoder.num_heads == (2, 2) and c.encoder.embed_channels == (4, 8, 16)
    x = torch.randn(2, 150, 80)
    lens = torch.tensor([150, 120])
    enc_out, enc_lens = src.encode(x, lens)
    assert torch.allclose(enc_out, lm.model.encode(x, lens)[0], atol=1e-6)
    assert c.use_attention_decoder == ctc
    if ctc:  # icefall's attention decoder comes along: same sizes, same rescoring scores
        assert (c.attention_decoder_dim, c.attention_decoder_layers, c.attention_decoder_ff_dim) == (24, 2, 40)
        toks = [[5, 6, 7], [8]]
        with torch.no_grad():
            assert torch.allclose(src.attention_decoder.score(enc_out, enc_lens, toks),
                                  lm.model.attention_decoder.score(enc_out, enc_lens, toks), atol=1e-5)
