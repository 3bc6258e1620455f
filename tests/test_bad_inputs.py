"""Bad input and honest failure: every case gets a one-line error naming the file, cut or config
key, a non-zero exit, no traceback, and nothing written half-way."""

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from conftest import TINY_ENCODER, tiny_train_config

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "auden_kit.cli.main"]


def run(*args, env=None, cwd=None):
    return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True, env=env, cwd=cwd)


def fails(r, *needles):
    """Exit 1, an `error:` line holding every needle, no traceback."""
    assert r.returncode == 1, (r.returncode, r.stdout[-500:], r.stderr[-2000:])
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    err = r.stderr
    for n in needles:
        assert n in err, (n, err[-1500:])
    return err


def _speech(synth_corpus) -> np.ndarray:
    from auden_kit.data.audio import load_audio

    return load_audio(sorted(synth_corpus.glob("dev-clean/*/*/*.flac"))[0]).numpy()


def _train_yaml(tmp_path, fbank_cuts, bpe_dir, model=None, trainer=None, data=None, optim=None) -> Path:
    from auden_kit.config import to_dict

    # the CPU even on a GPU machine: the cases below (float16 among them) are errors on the CPU
    cfg = to_dict(tiny_train_config(tmp_path / "exp", fbank_cuts, bpe_dir, max_steps=2, device="cpu"))
    for sec, upd in (("model", model), ("trainer", trainer), ("data", data), ("optim", optim)):
        if upd:
            cfg[sec].update(upd)
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump(cfg))
    return f


# ---------------------------------------------------------------------------- audio files


def test_nan_samples_are_an_error_naming_the_file(trained_model, synth_corpus, tmp_path):
    x = _speech(synth_corpus)
    good = tmp_path / "good.wav"
    sf.write(good, x, 16000)
    y = x.copy()
    y[500:520] = np.nan
    bad = tmp_path / "nan.wav"
    sf.write(bad, y, 16000, subtype="FLOAT")
    r = run("decode", "--model", trained_model, bad, good)
    err = fails(r, "nan.wav", "non-finite")
    assert "1 of 2 file(s) failed" in err and r.stdout.startswith(str(good))  # the good one still decoded


def test_truncated_wav_warns(trained_model, synth_corpus, tmp_path):
    p = tmp_path / "t.wav"
    sf.write(p, _speech(synth_corpus), 16000, subtype="PCM_16")
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    r = run("decode", "--model", trained_model, p)
    assert r.returncode == 0 and "truncated" in r.stderr and "t.wav" in r.stderr


def test_empty_and_missing_audio(trained_model, tmp_path):
    e = tmp_path / "empty.wav"
    sf.write(e, np.zeros(0, dtype=np.float32), 16000)
    fails(run("decode", "--model", trained_model, e), "empty.wav")
    fails(run("decode", "--model", trained_model, tmp_path / "gone.flac"), "gone.flac' does not exist")
    short = tmp_path / "short.wav"
    sf.write(short, np.zeros(800, dtype=np.float32), 16000)
    fails(run("decode", "--model", trained_model, short), "short.wav", "too short")


def test_decode_on_cuda_without_a_gpu(trained_model, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    fails(run("decode", "--model", trained_model, "--device", "cuda", tmp_path / "x.wav"), "no GPU")
    fails(run("decode", "--model", trained_model, "--device", "tpu", tmp_path / "x.wav"), "--device")


# ---------------------------------------------------------------------------- manifests


def test_validate_empty_manifest_fails(tmp_path):
    p = tmp_path / "empty.jsonl.gz"
    with gzip.open(p, "wt"):
        pass
    fails(run("data", "validate", p), "hold no items")


def test_validate_decode_finds_damage_behind_a_good_header(synth_cuts, tmp_path):
    import shutil

    cuts = [json.loads(line) for line in gzip.open(synth_cuts["dev-clean"], "rt")][:3]
    src = Path(cuts[0]["recording"]["sources"][0]["source"])
    dst = tmp_path / "damaged.flac"
    shutil.copy(src, dst)
    data = bytearray(dst.read_bytes())
    for i in range(len(data) // 2, len(data) - 10, 7):  # garble the frames, keep the header
        data[i] ^= 0x5A
    dst.write_bytes(bytes(data))
    cuts[0]["recording"]["sources"][0]["source"] = str(dst)
    p = tmp_path / "m.jsonl.gz"
    with gzip.open(p, "wt") as f:
        f.writelines(json.dumps(c) + "\n" for c in cuts)
    assert run("data", "validate", p).returncode == 0  # headers alone look fine
    fails(run("data", "validate", "--decode", p), cuts[0]["id"], "damaged.flac")


def test_decode_manifest_without_texts_lists_hypotheses_without_a_wer(trained_model, fbank_cuts, tmp_path):
    """An unlabeled manifest is decoded and its hypotheses written, never scored (a WER over empty
    references would be meaningless)."""
    cuts = [json.loads(line) for line in gzip.open(fbank_cuts["test-clean"], "rt")]
    for c in cuts:
        for s in c["supervisions"]:
            s["text"] = ""
    p = tmp_path / "notext.jsonl.gz"
    with gzip.open(p, "wt") as f:
        f.writelines(json.dumps(c) + "\n" for c in cuts)
    r = run("decode", "--model", trained_model, "--cuts", p, "--out-dir", tmp_path / "d")
    assert r.returncode == 0 and "no reference text, so nothing is scored" in r.stdout, r.stdout + r.stderr
    assert not list((tmp_path / "d").glob("wer-summary-*")) and not list((tmp_path / "d").glob("ref-*"))
    assert len(next((tmp_path / "d").glob("hyp-*.txt")).read_text().splitlines()) == len(cuts)
    with gzip.open(tmp_path / "none.jsonl.gz", "wt"):
        pass
    fails(run("decode", "--model", trained_model, "--cuts", tmp_path / "none.jsonl.gz"), "holds no cuts")


def test_manifests_that_cannot_be_decoded_name_the_cut(trained_model, synth_cuts, fbank_cuts, tmp_path):
    """A recording manifest given as cuts says how to make cuts; a cut whose audio (relative path,
    another working directory) or feature file is missing or damaged is named with its file."""
    from lhotse import CutSet

    cuts = CutSet.from_file(synth_cuts["test-clean"]).subset(first=3).to_eager()
    cuts.decompose()[0].to_file(tmp_path / "recs.jsonl.gz")
    fails(run("decode", "--model", trained_model, "--cuts", tmp_path / "recs.jsonl.gz"), "is a recording manifest",
          "auden-kit data fbank")
    (tmp_path / "audio").mkdir()
    rows = [json.loads(line) for line in gzip.open(synth_cuts["test-clean"], "rt")][:3]
    for i, c in enumerate(rows):  # audio beside the manifest, named relatively
        src = c["recording"]["sources"][0]
        sf.write(tmp_path / "audio" / f"{i}.wav", sf.read(src["source"])[0], 16000)
        src["source"] = f"audio/{i}.wav"
    with gzip.open(tmp_path / "rel.jsonl.gz", "wt") as f:
        f.writelines(json.dumps(c) + "\n" for c in rows)
    assert run("decode", "--model", trained_model, "--cuts", "rel.jsonl.gz", "--out-dir", "d", cwd=tmp_path).returncode == 0
    fails(run("decode", "--model", trained_model, "--cuts", tmp_path / "rel.jsonl.gz", "--out-dir", tmp_path / "d"),
          f"cut '{rows[0]['id']}'", "'audio/0.wav'", "no such file", "relative paths are read from the working directory")
    feats = [json.loads(line) for line in gzip.open(fbank_cuts["test-clean"], "rt")][:3]
    store = Path(feats[0]["features"]["storage_path"])
    bad = tmp_path / "feats.lca"
    bad.write_bytes(store.read_bytes()[:200] if store.is_file() else b"garbage")
    for c in feats:
        c["features"]["storage_path"] = str(bad)
    with gzip.open(tmp_path / "feats.jsonl.gz", "wt") as f:
        f.writelines(json.dumps(c) + "\n" for c in feats)
    fails(run("decode", "--model", trained_model, "--cuts", tmp_path / "feats.jsonl.gz", "--out-dir", tmp_path / "d"),
          "cannot read its features", str(bad))


def test_features_of_another_size_than_the_model(trained_model, fbank_cuts, tmp_path):
    from lhotse import CutSet

    from auden_kit.data.features import FbankSettings, compute_fbank

    cuts = CutSet.from_file(fbank_cuts["test-clean"]).drop_features().subset(first=2)
    cuts = compute_fbank(cuts, tmp_path, "f40", FbankSettings(num_mel_bins=40), num_jobs=1)
    cuts.to_file(tmp_path / "f40.jsonl.gz")
    fails(run("decode", "--model", trained_model, "--cuts", tmp_path / "f40.jsonl.gz"), "40-dim", "80-dim")


# ---------------------------------------------------------------------------- training


def test_training_set_smaller_than_one_batch(fbank_cuts, bpe_dir, tmp_path):
    from lhotse import CutSet

    tiny = tmp_path / "one.jsonl.gz"
    CutSet.from_file(fbank_cuts["train-clean-100"]).subset(first=1).to_file(tiny)
    f = _train_yaml(tmp_path, fbank_cuts, bpe_dir, data={"train_cuts": [str(tiny)], "max_duration": 100})
    fails(run("train", "--config", f), "no training batch", "data.max_duration", "data.drop_last")
    assert not list((tmp_path / "exp").glob("*.pt"))  # nothing written


def test_overlapping_supervisions_in_an_asr_cut(fbank_cuts, bpe_dir, tmp_path):
    cuts = [json.loads(line) for line in gzip.open(fbank_cuts["train-clean-100"], "rt")]
    s0 = cuts[0]["supervisions"][0]
    cuts[0]["supervisions"].append(dict(s0, id=s0["id"] + "-b", start=0.5, duration=0.5, speaker="other"))
    p = tmp_path / "overlap.jsonl.gz"
    with gzip.open(p, "wt") as f:
        f.writelines(json.dumps(c) + "\n" for c in cuts)
    f = _train_yaml(tmp_path, fbank_cuts, bpe_dir, data={"train_cuts": [str(p)], "max_duration": 1000,
                                                           "drop_last": False})
    fails(run("train", "--config", f), f"cut '{cuts[0]['id']}'", "overlap")


def test_several_supervisions_of_one_speaker_are_joined(bpe_dir):
    from lhotse import MonoCut, SupervisionSegment

    from auden_kit.hub import get_task
    from auden_kit.tasks.asr import AsrModelConfig
    from auden_kit.tasks.base import ModelAssets
    from auden_kit.tokenizers import load_tokenizer

    task = get_task("asr").setup(AsrModelConfig(), ModelAssets(tokenizers={"text": load_tokenizer(bpe_dir)}))
    cut = MonoCut("c1", 0, 4.0, 0, supervisions=[
        SupervisionSegment("b", "r", 2.0, 1.5, text="THE DOG"), SupervisionSegment("a", "r", 0.2, 1.5, text="A CAT")])
    assert task.batch_targets([cut], train=True)["texts"] == ["A CAT THE DOG"]


@pytest.mark.parametrize("section,key,value,needle", [
    ("model", "encoder", dict(TINY_ENCODER, cnn_module_kernel=[8]), "model.encoder.cnn_module_kernel"),
    ("model", "decoder_dim", 30, "model.decoder_dim"),
    ("model", "encoder", dict(TINY_ENCODER, encoder_dimm=[3]), "did you mean 'encoder_dim'"),
    ("trainer", "average_period", 0, "trainer.average_period"),
    ("trainer", "log_interval", 0, "trainer.log_interval"),
    ("trainer", "accum_grad", 0, "trainer.accum_grad"),
    ("optim", "lr_batches", 0, "optim.lr_batches"),
    ("data", "max_duration", -1, "data.max_duration"),
    ("data", "min_cut_duration", 50.0, "data.min_cut_duration"),
    ("trainer", "dtype", "float16", "trainer.dtype"),
    ("trainer", "init_from", "/no/such/model", "trainer.init_from"),
])
def test_config_values_that_break_the_model(fbank_cuts, bpe_dir, tmp_path, section, key, value, needle):
    f = _train_yaml(tmp_path, fbank_cuts, bpe_dir, **{section: {key: value}})
    fails(run("train", "--config", f), needle)
    assert not list((tmp_path / "exp").glob("*.pt"))


def test_bad_overrides_and_unknown_task(tmp_path):
    fails(run("train", "trainer.num_epochs"), "key=value")
    fails(run("train", "task=nope"), "unknown task 'nope'")
    fails(run("train", "trainer.device=cuda") if not torch.cuda.is_available() else run("train", "task=nope"),
          "cuda" if not torch.cuda.is_available() else "nope")


def test_more_processes_than_gpus_is_an_error_naming_the_fix(fbank_cuts, bpe_dir, tmp_path, monkeypatch):
    """torchrun --nproc_per_node 2 on a 1-GPU machine (seen on an H200: "invalid device ordinal" deep in
    CUDA) stops before anything is written, saying what to change."""
    from auden_kit.errors import UserError
    from auden_kit.training.trainer import Trainer

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(UserError, match="only 1 GPU.*nproc_per_node.*trainer.device=cpu"):
        Trainer(tiny_train_config(tmp_path / "exp", fbank_cuts, bpe_dir, max_steps=1))
    assert not (tmp_path / "exp").exists()


# ---------------------------------------------------------------------------- checkpoints and model folders


def test_corrupt_checkpoint_resumes_from_the_previous_one(fbank_cuts, bpe_dir, tmp_path):
    from auden_kit.training.trainer import Trainer

    cfg = tiny_train_config(tmp_path / "exp", fbank_cuts, bpe_dir, num_epochs=2)
    Trainer(cfg).train()
    last = tmp_path / "exp" / "epoch-2.pt"
    last.write_bytes(last.read_bytes()[:1000])  # a crash half-way through a copy
    t = Trainer(cfg)
    assert t.epoch == 2  # resumed from epoch-1.pt
    r = run("average", "--exp-dir", tmp_path / "exp", "--out", tmp_path / "m")
    fails(r, "epoch-2.pt", "cannot be read")
    assert not (tmp_path / "m" / "config.yaml").exists()


def test_corrupt_model_folder_and_icefall_checkpoint(trained_model, tmp_path):
    import shutil

    m = tmp_path / "m"
    shutil.copytree(trained_model, m)
    (m / "model.safetensors").write_bytes(b"garbage")
    fails(run("decode", "--model", m, "x.wav"), "model.safetensors")
    # the training folder or one of its checkpoints instead of the model folder: the error names it
    exp = trained_model.parent
    fails(run("decode", "--model", exp, "x.wav"), "not a model folder", f"model folders here: {trained_model}")
    fails(run("decode", "--model", exp / "epoch-2.pt", "x.wav"), f"model folders here: {trained_model}")
    (tmp_path / "pretrained.pt").write_bytes(b"\x80\x04not a checkpoint")
    fails(run("import-icefall", "--checkpoint", tmp_path / "pretrained.pt", "--tokenizer",
              trained_model / "tokenizers" / "text", "--out", tmp_path / "o"), "pretrained.pt", "cannot be read")
    fails(run("import-icefall", "--checkpoint", tmp_path / "none.pt", "--tokenizer", trained_model, "--out",
              tmp_path / "o"), "tokenizer")


def test_recipe_download_without_network_says_what_to_do(tmp_path):
    env = dict(os.environ, https_proxy="http://127.0.0.1:9", http_proxy="http://127.0.0.1:9",
               HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9")
    r = run("data", "download", "librispeech", tmp_path / "dl", "--parts", "mini_librispeech", "--recipe-hint",
            "./run.sh --stage 1 --corpus-dir DIR", env=env)
    fails(r, "downloading librispeech", "--corpus-dir")


def test_vocabulary_larger_than_the_data_allows(synth_cuts, tmp_path):
    r = run("data", "tokenizer", synth_cuts["dev-clean"], "--out-dir", tmp_path / "lang", "--vocab-size", "5000")
    assert r.returncode == 0, r.stderr
    assert "largest valid size" in r.stderr
    n = int(r.stdout.split("bpe, ")[1].split(" ")[0])
    assert 30 < n < 5000
    r = run("data", "tokenizer", synth_cuts["dev-clean"], "--out-dir", tmp_path / "auto", "--vocab-size", "0")
    assert r.returncode == 0 and "distinct words" in r.stderr


@pytest.mark.parametrize("args", [["data", "folder", "x", "y", "z"], ["embed", "--bogus"], ["score"]])
def test_usage_errors_print_a_line_not_a_traceback(args):
    """Unknown options, extra arguments and missing ones: click's message and exit 2, whichever
    copy of click typer uses."""
    r = subprocess.run(CLI + args, capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "Error" in r.stderr, r.stderr
