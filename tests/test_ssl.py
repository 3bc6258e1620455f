"""Self-supervised pretraining (BEST-RQ, MAE), distillation (model, Hugging Face and cached
teachers), probes, and the data they read (unlabeled audio)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TINY_ENCODER, free_port, tiny_hf_teacher

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "auden_kit.cli.main"]


def run(*args, cwd=None):
    return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True, cwd=cwd)


def train_config(task, exp_dir, fbank_cuts, model, **trainer):
    from auden_kit.config import from_dict
    from auden_kit.training.trainer import TrainConfig

    return from_dict(TrainConfig, {
        "task": task, "exp_dir": str(exp_dir), "model": {"encoder": TINY_ENCODER, **model},
        "data": {"train_cuts": [str(fbank_cuts["train-clean-100"])], "valid_cuts": [str(fbank_cuts["dev-clean"])],
                 "max_duration": 12, "num_buckets": 2, "num_workers": 0, "spec_augment": False},
        "optim": {"base_lr": 0.05, "warmup_batches": 2, "lr_batches": 100},
        "trainer": {"num_epochs": 1, "log_interval": 1, "average_period": 1, "progress": False,
                    "schedule_speedup": 20, **trainer},
    })


# ------------------------------------------------------------------------------------ masking
def test_span_mask_respects_padding_minimum_and_rate():
    from auden_kit.tasks.ssl import span_mask, stack_frames

    lens = torch.tensor([400, 250, 30, 0])
    g = torch.Generator().manual_seed(0)
    m = span_mask(lens, 400, prob=0.01, span=40, min_masks=2, generator=g)
    for i, n in enumerate(lens.tolist()):
        assert not m[i, n:].any()  # never on padding
    assert m[2, :30].any() and not m[3].any()
    # at least two spans where there is room; the first row covers about 1 - 0.99^40 = 33 % on average
    assert m[1].sum() >= 40
    big = span_mask(torch.full((200,), 1000), 1000, 0.01, 40, 0, torch.Generator().manual_seed(1))
    assert 0.28 < big.float().mean() < 0.38
    x = torch.arange(2 * 10 * 3, dtype=torch.float).reshape(2, 10, 3)
    s = stack_frames(x, 4, 3)  # 12 frames needed: zero-padded
    assert s.shape == (2, 3, 12) and torch.equal(s[0, 0], x[0, :4].flatten()) and s[0, 2, 6:].abs().sum() == 0


def test_quantizer_is_fixed_by_its_seed():
    from auden_kit.tasks.ssl import RandomProjectionQuantizer

    a, b = RandomProjectionQuantizer(320, 2, 512, 16, seed=3), RandomProjectionQuantizer(320, 2, 512, 16, seed=3)
    c = RandomProjectionQuantizer(320, 2, 512, 16, seed=4)
    x = torch.randn(3, 50, 320)
    assert torch.equal(a(x), b(x)) and not torch.equal(a(x), c(x))
    assert a(x).shape == (3, 50, 2) and a(x).max() < 512
    assert not list(a.parameters()) and set(dict(a.named_buffers())) == {"projection", "codebooks"}
    # the chunked search equals the direct one
    assert torch.equal(a(x, chunk=7), a(x))


def test_kmeans_codebooks_use_every_code_where_random_ones_do_not():
    """Speech patches fill a narrow cone of the projected sphere: random unit vectors leave most
    codes unused (the mini_synth_ssl run used 86 of 512); k-means centroids use them all."""
    from auden_kit.tasks.ssl import RandomProjectionQuantizer

    g = torch.Generator().manual_seed(0)
    x = torch.randn(4000, 320, generator=g) @ (0.1 * torch.randn(320, 320, generator=g)) + \
        3 * torch.randn(1, 320, generator=g)
    q = RandomProjectionQuantizer(320, 2, 64, 16, seed=3)
    random_used = [len(q(x[None])[0, :, k].unique()) for k in range(2)]
    projection = q.projection.clone()
    assert q.fit_codebooks(x, seed=3) == [64, 64] and max(random_used) < 40, random_used
    assert torch.equal(q.projection, projection)  # only the codebooks change
    assert torch.allclose(q.codebooks.norm(dim=-1), torch.ones(2, 64))
    r = RandomProjectionQuantizer(320, 2, 64, 16, seed=3)
    r.fit_codebooks(x, seed=3)
    assert torch.equal(r.codebooks, q.codebooks)  # reproducible


def test_kmeans_codebooks_are_fitted_once_and_kept(fbank_cuts, tmp_path):
    """codebook_init=kmeans fits the codebooks on the training cuts when a run starts; they are
    saved with the model and a resumed run keeps them (no refit). The code heads sit behind a
    projection layer (head_hidden), saved with the model too."""
    import yaml

    from auden_kit.hub import load_pretrained
    from auden_kit.tasks.ssl import RandomProjectionQuantizer
    from auden_kit.training.trainer import Trainer, export_model_folder

    model = {"codebook_size": 32, "mask_prob": 0.04, "mask_span": 10, "codebook_init": "kmeans",
             "kmeans_max_cuts": 20, "head_hidden": 24}
    t = Trainer(train_config("ssl", tmp_path / "exp", fbank_cuts, model))
    books = t.model.quantizer.codebooks.detach().cpu().clone()
    random = RandomProjectionQuantizer(*t.model.quantizer.projection.shape[1:2], 1, 32, 16, seed=1234).codebooks
    assert not torch.equal(books, random)
    t.train()
    folder = export_model_folder(tmp_path / "exp", tmp_path / "model", avg=1)
    # the statistics file named in the config is read for training only: the folder keeps the statistics
    cfg = yaml.safe_load((folder / "config.yaml").read_text())
    cfg["model"]["feature_stats"] = "data/fbank/feature_stats.json"  # relative to a recipe folder
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg))
    loaded = load_pretrained(folder).model
    assert torch.equal(loaded.quantizer.codebooks, books)
    assert loaded.head_proj[0].weight.shape[0] == 24 and loaded.heads[0].weight.shape == (32, 24)
    # a refit on other cuts would give other codebooks: the resumed run keeps the saved ones
    again = Trainer(train_config("ssl", tmp_path / "exp", fbank_cuts, {**model, "kmeans_max_cuts": 5}, num_epochs=2))
    assert again.epoch == 2 and torch.equal(again.model.quantizer.codebooks.cpu(), books)


# ------------------------------------------------------------------------------------ BEST-RQ
@pytest.fixture(scope="module")
def bestrq_model(fbank_cuts, tmp_path_factory):
    """A tiny BEST-RQ model trained on the corpus without its labels, averaged into a folder."""
    from auden_kit.training.trainer import Trainer, export_model_folder

    exp = tmp_path_factory.mktemp("bestrq") / "exp"
    cfg = train_config("ssl", exp, fbank_cuts, {"codebook_size": 64, "mask_prob": 0.04, "mask_span": 10,
                                                "num_codebooks": 2}, num_epochs=6)
    t = Trainer(cfg)
    t.train()
    return exp, export_model_folder(exp, exp / "model", avg=2), t


def test_bestrq_learns_and_its_codes_survive_save_load_and_averaging(bestrq_model, fbank_cuts):
    from lhotse import CutSet

    from auden_kit.hub import load_pretrained
    from auden_kit.training import checkpoint as ckpt

    exp, folder, trainer = bestrq_model
    hist = ckpt.load_checkpoint(sorted(exp.glob("epoch-*.pt"))[-1])
    losses = [h["loss"] for h in hist["history"]]
    assert losses[-1] < losses[0] - 0.2, losses  # masked prediction learns (ln 64 = 4.16 at chance)
    accs = [h["masked_acc"] for h in hist["history"]]
    assert accs[-1] > accs[0]
    lm = load_pretrained(folder)
    live = trainer.model
    for k in ("quantizer.projection", "quantizer.codebooks", "feature_mean", "feature_std"):
        assert torch.equal(lm.model.state_dict()[k], live.state_dict()[k].cpu()), k
    cut = next(iter(CutSet.from_file(fbank_cuts["dev-clean"])))
    x = torch.from_numpy(cut.load_features()).unsqueeze(0)
    T_out = int(lm.model.encoder.output_lengths(torch.tensor(x.shape[1])))
    codes = lm.model.targets(x, T_out)
    assert torch.equal(codes, live.cpu().targets(x, T_out))
    assert len(codes.unique()) > 3  # not a collapsed quantizer
    res = lm.task.infer(lm.model, {"inputs": x, "input_lens": torch.tensor([x.shape[1]]), "cut_ids": [cut.id]})
    assert len(res) == 1 and len(res[0].embedding) == 48 and res[0].cut_id == cut.id
    # the statistics are the stored global ones, and no feature-sized list was logged
    assert len(lm.assets.data_stats["feature_mean"]) == 80


def test_pretrained_encoder_initialises_an_asr_model(bestrq_model, fbank_cuts, bpe_dir, tmp_path):
    from safetensors.torch import load_file

    from conftest import tiny_train_config

    from auden_kit.training.trainer import Trainer

    _, folder, _ = bestrq_model
    cfg = tiny_train_config(tmp_path / "ft", fbank_cuts, bpe_dir, max_steps=1, init_from=str(folder),
                            init_prefix_map={"encoder.": "encoder."})
    t = Trainer(cfg)
    ssl = load_file(str(folder / "model.safetensors"))
    enc = {k: v.cpu() for k, v in t.model.state_dict().items() if k.startswith("encoder.")}
    assert enc and all(torch.equal(v, ssl[k]) for k, v in enc.items())


def test_mae_objective_trains(fbank_cuts, tmp_path):
    from auden_kit.training.trainer import Trainer

    cfg = train_config("ssl", tmp_path / "mae", fbank_cuts, {"objective": "mae", "mask_prob": 0.06, "mask_span": 10,
                                                             "mae_decoder_dim": 32, "mae_decoder_heads": 2},
                       num_epochs=3)
    t = Trainer(cfg)
    t.train()
    hist = [h["loss"] for h in t.history]
    assert hist[-1] < hist[0], hist  # normalised-patch MSE goes down (1.0 = predicting the mean)
    assert not hasattr(t.model, "quantizer")


def test_ssl_config_errors_name_the_key(fbank_cuts, tmp_path):
    from auden_kit.errors import UserError
    from auden_kit.training.trainer import Trainer

    for model, key in (({"objective": "hubert"}, "model.objective"), ({"mask_prob": 0}, "model.mask_prob"),
                       ({"head_hidden": -1}, "model.head_hidden"),
                       ({"feature_stats": str(tmp_path / "none.json")}, "model.feature_stats")):
        with pytest.raises(UserError, match=key.replace(".", r"\.")):
            Trainer(train_config("ssl", tmp_path / "x", fbank_cuts, model, max_steps=1))


def test_cmvn_command_and_unlabeled_audio(synth_cuts, tmp_path):
    """`data fbank` keeps audio without supervisions (cut into windows when long) and `data cmvn`
    stores the statistics an ssl config reads."""
    from lhotse import CutSet
    from lhotse.utils import fastcopy

    import numpy as np
    import soundfile as sf
    from lhotse import Recording

    src = CutSet.from_file(synth_cuts["dev-clean"])
    un = CutSet.from_cuts(fastcopy(c, supervisions=[]) for c in src)
    wav = np.concatenate([c.load_audio()[0] for c in list(un)[:3]])  # ~7 s without supervisions
    sf.write(tmp_path / "long.wav", wav, 16000)
    long = Recording.from_file(tmp_path / "long.wav", recording_id="long").to_cut()
    (un + CutSet.from_cuts([long])).to_file(tmp_path / "un.jsonl.gz")
    r = run("data", "fbank", tmp_path / "un.jsonl.gz", "--out", tmp_path / "f.jsonl.gz", "--jobs", "1",
            "--window", "3")
    assert r.returncode == 0, r.stderr[-2000:]
    out = CutSet.from_file(tmp_path / "f.jsonl.gz")
    assert len(out) > len(un) and all(c.duration <= 3.01 and not c.supervisions for c in out)
    r = run("data", "cmvn", tmp_path / "f.jsonl.gz", "--out", tmp_path / "st.json")
    assert r.returncode == 0, r.stderr[-2000:]
    st = json.loads((tmp_path / "st.json").read_text())
    assert len(st["mean"]) == 80 and all(s > 0 for s in st["std"])


# ------------------------------------------------------------------------------------ distillation
def test_distill_from_model_and_hf_teachers_never_saves_them(trained_model, fbank_cuts, tmp_path):
    pytest.importorskip("transformers")
    from safetensors.torch import load_file

    from auden_kit.training.trainer import Trainer, export_model_folder

    hf = tiny_hf_teacher(tmp_path / "wavlm")
    teachers = [{"name": "asr", "kind": "model", "path": str(trained_model), "layers": [1, 2], "student_taps": [0, 2]},
                {"name": "wavlm", "kind": "hf", "path": str(hf), "layers": [1, 2], "student_taps": [1, 2],
                 "domains": ["speech"]}]
    cfg = train_config("distill", tmp_path / "d", fbank_cuts, {"teachers": teachers, "head_hidden": 32}, num_epochs=3)
    t = Trainer(cfg)
    n_opt = sum(p.numel() for g in t.optimizer.param_groups for p in g["params"])
    assert n_opt == sum(p.numel() for p in t.model.parameters())  # no teacher in the optimizer
    t.train()
    losses = [h["loss"] for h in t.history]
    assert losses[-1] < losses[0], losses
    teachers_live = t.model.teachers()
    folder = export_model_folder(tmp_path / "d", tmp_path / "d" / "model", avg=1)
    saved = load_file(str(folder / "model.safetensors"))
    teacher_keys = set(load_file(str(trained_model / "model.safetensors")))
    hf_keys = set(load_file(str(hf / "model.safetensors")))
    assert not any(k in hf_keys or k.startswith(("feature_extractor", "feature_projection", "teacher")) for k in saved)
    assert not any(k in teacher_keys and not k.startswith("encoder.") for k in saved)
    assert all(k.startswith(("encoder.", "heads.", "stat_")) for k in saved)
    assert sum(v.numel() for v in saved.values()) < sum(p.numel() for p in t.model.parameters()) + 10_000
    assert all(not p.requires_grad for tm in teachers_live.values() for p in tm.module.parameters())
    # the student folder loads without its teachers (their sizes are in its config)
    from auden_kit.hub import load_pretrained

    lm = load_pretrained(folder)
    assert lm.model._teachers is None and lm.model_cfg.teachers[1]["dims"] == [32, 32, 32]


def test_hf_teacher_normalises_waveforms_when_its_feature_extractor_does(tmp_path):
    """WavLM Large / wav2vec 2.0 large-lv60 were trained on zero-mean unit-variance waveforms
    (`do_normalize` in preprocessor_config.json): the teacher sees them so, each over its own
    samples, padding excluded; a model without that setting gets the raw waveform. A text model,
    a folder without weights or a broken config.json: errors naming the folder."""
    pytest.importorskip("transformers")
    from auden_kit.tasks.distill import HfTeacher

    hf = tiny_hf_teacher(tmp_path / "wavlm")
    torch.manual_seed(0)
    a, b = 0.3 + 0.1 * torch.randn(16000), 0.05 * torch.randn(8000)
    wav = torch.zeros(2, 16000)
    wav[0], wav[1, :8000] = a, b
    batch = {"targets": {"audio": wav, "audio_lens": torch.tensor([16000, 8000])}}
    seen = []

    def fed(teacher):  # the waveforms the Hugging Face model is given
        teacher.model.module.register_forward_pre_hook(lambda mod, args: seen.append(args[0].clone()))
        return teacher

    fed(HfTeacher(str(hf)))(batch)
    assert torch.equal(seen[-1], wav)  # no do_normalize: the raw waveform
    (hf / "preprocessor_config.json").write_text(json.dumps({"do_normalize": True, "sampling_rate": 16000}))
    teacher = fed(HfTeacher(str(hf)))
    got, _ = teacher(batch)
    x = seen[-1]
    assert abs(float(x[0].mean())) < 1e-4 and abs(float(x[0].std(unbiased=False)) - 1) < 1e-3
    assert abs(float(x[1, :8000].std(unbiased=False)) - 1) < 1e-3 and not x[1, 8000:].any()  # padding left out
    # folders that are not speech encoders, or have no weights: errors naming the folder
    from auden_kit.errors import UserError
    from transformers import BertConfig

    BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64).save_pretrained(
        tmp_path / "bert")
    with pytest.raises(UserError, match="is a 'bert' model; a Hugging Face teacher must be a speech encoder"):
        HfTeacher(str(tmp_path / "bert"))
    (tmp_path / "noweights").mkdir()
    (tmp_path / "noweights" / "config.json").write_text((hf / "config.json").read_text())
    with pytest.raises(UserError, match="noweights': its weights cannot be loaded"):
        HfTeacher(str(tmp_path / "noweights"))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    with pytest.raises(UserError, match="broken': its config.json cannot be read"):
        HfTeacher(str(tmp_path / "broken"))
    model = teacher.model.module
    norm = ((a - a.mean()) / torch.sqrt(a.var(unbiased=False) + 1e-7))[None]
    want = model(norm, attention_mask=torch.ones(1, 16000, dtype=torch.long), output_hidden_states=True).hidden_states
    assert torch.allclose(got[-1][0], want[-1][0], atol=1e-4)


def test_teacher_weights_follow_the_domain():
    from auden_kit.tasks.distill import DistillModelConfig, DistillTask
    from auden_kit.tasks.base import ModelAssets

    teachers = [{"name": "a", "kind": "cached", "layers": [0], "student_taps": [0], "domains": ["speech"]},
                {"name": "b", "kind": "cached", "layers": [0], "student_taps": [0], "domains": ["music"]}]
    task = DistillTask().setup(DistillModelConfig(encoder=TINY_ENCODER, teachers=teachers), ModelAssets())
    w = task.teacher_weights(["speech", "music", None, "sound"], "cpu")
    assert torch.allclose(w[0], torch.tensor([10 / 11, 1 / 11])) and torch.allclose(w[1], torch.tensor([1 / 11, 10 / 11]))
    assert torch.allclose(w[2], torch.tensor([0.5, 0.5])) and torch.allclose(w[3], torch.tensor([0.5, 0.5]))


def test_cached_teacher_targets(trained_model, fbank_cuts, tmp_path):
    """`data teacher-cache` stores a teacher's layers compressed; a `cached` teacher trains from them
    without running the teacher, and gets what the live teacher gives (to the compression's step)."""
    from lhotse import CutSet

    from auden_kit.hub import load_pretrained
    from auden_kit.training.trainer import Trainer

    out = tmp_path / "cached.jsonl.gz"
    r = run("data", "teacher-cache", "--teacher", trained_model, "--name", "big", "--layers", "2,0",
            "--cuts", fbank_cuts["train-clean-100"], "--out", out)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "smaller than float32" in r.stdout
    cut = next(iter(CutSet.from_file(out)))
    arr = torch.from_numpy(cut.load_custom("teacher_big"))
    enc = load_pretrained(trained_model).model.encoder
    x = torch.from_numpy(cut.load_features()).unsqueeze(0)
    y, lens, layers = enc(x, torch.tensor([x.shape[1]]), return_layers=True)
    live = torch.cat([y[0], layers[0][0]], dim=-1)
    assert arr.shape == live.shape and (arr - live).abs().max() < 2 ** -8
    teachers = [{"name": "big", "kind": "cached", "layers": [0, 1], "student_taps": [2, 0]}]
    cfg = train_config("distill", tmp_path / "c", fbank_cuts, {"teachers": teachers, "head_hidden": 32}, max_steps=2)
    cfg.data.train_cuts = [str(out)]
    t = Trainer(cfg)
    t.train()
    assert t.model.cfg.teachers[0]["dims"] == [48, 32]
    r = run("data", "teacher-cache", "--teacher", trained_model, "--name", "big", "--layers", "7",
            "--cuts", fbank_cuts["train-clean-100"], "--out", tmp_path / "x.jsonl.gz")
    assert r.returncode != 0 and "--layers" in r.stderr and "Traceback" not in r.stderr


def test_vector_quantised_teacher_cache(trained_model, fbank_cuts, tmp_path):
    """`teacher-cache --codebooks M`: per-layer residual-VQ codes instead of values, far smaller,
    the codes stored exactly, more codebooks lose less, and a `cached` teacher trains from them."""
    from lhotse import CutSet

    from auden_kit.nn.vq import ResidualVQ
    from auden_kit.training.trainer import Trainer

    g = torch.Generator().manual_seed(0)  # the quantiser alone: clustered data is found again
    centres = torch.randn(8, 6, generator=g) * 4
    x = centres[torch.arange(400) % 8] + 0.01 * torch.randn(400, 6, generator=g)
    q = ResidualVQ.fit(x, codebooks=1, size=8)
    assert ((q.decode(q.encode(x)) - x) ** 2).mean() < 1e-3
    errs = {}
    for m in (1, 4):
        out = tmp_path / f"vq{m}.jsonl.gz"
        r = run("data", "teacher-cache", "--teacher", trained_model, "--name", "big", "--layers", "2,0", "--cuts",
                fbank_cuts["train-clean-100"], "--out", out, "--codebooks", m, "--codebook-size", 32)
        assert r.returncode == 0, r.stderr[-2000:]
        errs[m] = [float(v.split()[0]) for v in r.stdout.split("codes lose ")[1].split(" of the")[0].split(", ")]
        cut = next(iter(CutSet.from_file(out)))
        assert "teacher_big" not in cut.custom and not list(tmp_path.glob("vq*_teacher/teacher_big.lca"))
        codes = cut.load_custom("teacher_big_codes")
        assert codes.shape[1] == 2 * m and codes.dtype == np.uint8 and codes.max() < 32
        q0 = ResidualVQ.load(cut.custom["teacher_big_vq"][0])
        assert q0.codebooks.shape == (m, 32, 48)
    assert all(a < b for a, b in zip(errs[4], errs[1])), errs
    plain = tmp_path / "plain.jsonl.gz"
    assert run("data", "teacher-cache", "--teacher", trained_model, "--name", "big", "--layers", "2,0", "--cuts",
               fbank_cuts["train-clean-100"], "--out", plain).returncode == 0
    size = {k: sum(f.stat().st_size for f in (tmp_path / f"{k}_teacher").iterdir()) for k in ("vq4", "plain")}
    assert size["vq4"] < size["plain"] / 2, size
    teachers = [{"name": "big", "kind": "cached", "layers": [0, 1], "student_taps": [2, 0]}]
    cfg = train_config("distill", tmp_path / "c", fbank_cuts, {"teachers": teachers, "head_hidden": 32}, max_steps=2)
    cfg.data.train_cuts = [str(tmp_path / "vq4.jsonl.gz")]
    t = Trainer(cfg)
    t.train()
    assert t.model.cfg.teachers[0]["dims"] == [48, 32]
    # MVQ-style: cross-entropy on the codes themselves; the dev set quantised with the training codebooks
    dev = tmp_path / "dev_vq.jsonl.gz"
    r = run("data", "teacher-cache", "--teacher", trained_model, "--name", "big", "--layers", "2,0", "--cuts",
            fbank_cuts["dev-clean"], "--out", dev, "--codebooks-from", tmp_path / "vq4.jsonl.gz")
    assert r.returncode == 0, r.stderr[-2000:]
    books = next(iter(CutSet.from_file(tmp_path / "vq4.jsonl.gz"))).custom["teacher_big_vq"]
    assert all(c.custom["teacher_big_vq"] == books for c in CutSet.from_file(dev))
    teachers = [{"name": "big", "kind": "cached", "layers": [0, 1], "student_taps": [2, 0], "loss": "codes"}]
    cfg = train_config("distill", tmp_path / "mvq", fbank_cuts, {"teachers": teachers, "head_hidden": 32},
                       num_epochs=4)
    cfg.data.train_cuts, cfg.data.valid_cuts = [str(tmp_path / "vq4.jsonl.gz")], [str(dev)]
    t = Trainer(cfg)
    t.train()
    assert t.model.cfg.teachers[0]["code_shapes"] == [[4, 32], [4, 32]]
    from auden_kit.training import checkpoint as ckpt

    hist = ckpt.load_checkpoint(tmp_path / "mvq" / "epoch-4.pt")["history"]
    losses, accs = [h["loss"] for h in hist], [h["code_acc_big"] for h in hist]
    # validation CE below chance (ln 32 = 3.47) and falling every epoch (measured: 3.45, 3.42, 3.34, 3.26)
    assert losses[0] < np.log(32) and all(b < a for a, b in zip(losses, losses[1:])) and losses[-1] < losses[0] - 0.1, losses
    assert accs[-1] > accs[0] and accs[-1] > 1 / 32, accs
    bad = [{"name": "big", "kind": "model", "path": str(trained_model), "layers": [0], "student_taps": [0],
            "loss": "codes"}]
    from auden_kit.errors import UserError

    with pytest.raises(UserError, match="loss' is codes, which needs kind: cached"):
        Trainer(train_config("distill", tmp_path / "bad", fbank_cuts, {"teachers": bad}))
    r = run("data", "teacher-cache", "--teacher", trained_model, "--name", "big", "--layers", "0", "--cuts",
            fbank_cuts["dev-clean"], "--out", tmp_path / "y.jsonl.gz", "--codebooks-from", plain)
    assert r.returncode != 0 and "holds no vector-quantised cache" in r.stderr
    r = run("data", "teacher-cache", "--teacher", trained_model, "--name", "big", "--layers", "0", "--cuts",
            fbank_cuts["train-clean-100"], "--out", tmp_path / "x.jsonl.gz", "--codebooks", 2, "--codebook-size", 999)
    assert r.returncode != 0 and "--codebook-size" in r.stderr and "Traceback" not in r.stderr


# ------------------------------------------------------------------------------------ probes
def test_knn_and_linear_probes_on_known_data():
    from auden_kit.probe import ProbeFeatures, knn_probe, run_probes

    g = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 16, generator=g) * 3
    y = torch.arange(200) % 4
    x = centres[y] + torch.randn(200, 16, generator=g)
    pred = knn_probe(x[:100], y[:100], x[100:], 4)
    assert (pred == y[100:]).float().mean() > 0.95
    noise = torch.randn(200, 16, generator=g)
    tr = ProbeFeatures([noise[:100], x[:100]], [str(int(v)) for v in y[:100]], [])
    te = ProbeFeatures([noise[100:], x[100:]], [str(int(v)) for v in y[100:]], [])
    rows = {(r["method"], r["layer"]): r for r in run_probes(tr, te, ("knn", "linear"), layers="all")}
    assert rows[("linear", "1")]["accuracy"] > 95 and rows[("knn", "0")]["accuracy"] < 50
    w = run_probes(tr, te, ("linear",), layers="weighted")[0]
    assert w["accuracy"] > 95 and w["layer_weights"][1] > w["layer_weights"][0]  # learns which layer holds it
    te2 = ProbeFeatures([noise[100:], x[100:]], ["unseen"] * 100, [])
    assert run_probes(tr, te2, ("knn",))[0]["accuracy"] == 0.0


def test_probe_cli_and_random_init_baseline(bestrq_model, fbank_cuts, tmp_path, capsys):
    from auden_kit.probe import extract, load_encoder, run_probes

    _, folder, _ = bestrq_model
    out = tmp_path / "p.json"
    train, test = fbank_cuts["train-clean-100"], fbank_cuts["test-clean"]
    # each label on its own split (the second one reversed): one encoder load for both
    r = run("probe", "--model", folder, "--label", "speaker", "--train-cuts", train, "--test-cuts", test,
            "--label", "gender", "--train-cuts", test, "--test-cuts", train, "--layers", "weighted",
            "--methods", "knn,linear", "--epochs", "20", "--out", out)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert {(x["label"], x["method"]) for x in rows} == {(a, b) for a in ("speaker", "gender") for b in ("knn", "linear")}
    assert all(0 <= x["accuracy"] <= 100 for x in rows)
    assert {(x["label"], x["train"], x["test"]) for x in rows} == {("speaker", 32, 8), ("gender", 8, 32)}
    from auden_kit.cli.main import main

    rc = main(["probe", "--model", str(folder), "--label", "speaker", "--label", "gender", "--train-cuts", str(train),
               "--train-cuts", str(test), "--train-cuts", str(test), "--test-cuts", str(test)])
    assert rc == 1 and "--train-cuts is given 3 times for 2 --label" in capsys.readouterr().err
    r = run("probe", "--model", folder, "--train-cuts", fbank_cuts["train-clean-100"], "--test-cuts",
            fbank_cuts["test-clean"], "--label", "custom.nothing")
    assert r.returncode != 0 and "custom.nothing" in r.stderr and "Traceback" not in r.stderr
    # the baseline: same architecture, fresh weights (different from the trained ones); frame level
    trained, lm = load_encoder(str(folder))
    fresh, _ = load_encoder(str(folder), random_init=True)
    k = "encoder_embed.conv.0.weight"
    assert not torch.equal(dict(trained.named_parameters())[k], dict(fresh.named_parameters())[k])
    tr = extract(fresh, lm, str(fbank_cuts["train-clean-100"]), "speaker", level="frame", progress=False)
    te = extract(fresh, lm, str(fbank_cuts["test-clean"]), "speaker", level="frame", progress=False)
    assert len(tr.labels) > 32 and len(tr.labels) == tr.layers[0].shape[0]
    assert run_probes(tr, te, ("knn",))[0]["test"] == len(te.labels)


def test_frame_phone_probe_reads_the_corpus_alignment(bestrq_model, fbank_cuts):
    from types import SimpleNamespace

    from lhotse import CutSet

    from auden_kit.metrics.timing import aligned_items
    from auden_kit.probe import extract, load_encoder, output_frame_times

    feats = SimpleNamespace(frame_shift=0.01, frame_length=0.025)
    # Zipformer: 107 input frames -> 25 output frames, 4 per frame, 3.5 frames of front-end context
    assert output_frame_times(torch.tensor([0, 10]), 107, 25, feats) == pytest.approx([0.0625, 0.4625])
    _, folder, _ = bestrq_model
    enc, lm = load_encoder(str(folder))
    test = str(fbank_cuts["test-clean"])
    te = extract(enc, lm, test, "alignment.phone", level="clip", frame_stride=1, progress=False)  # always per frame
    cuts = {c.id: c for c in CutSet.from_file(test)}
    assert len(te.labels) == te.layers[-1].shape[0] > 10 * len(cuts)
    # every frame's label is the phone under the centre of its input span, and gaps are left out
    first = te.cut_ids[0]
    items = aligned_items(cuts[first], "phone")
    mine = [lab for lab, cid in zip(te.labels, te.cut_ids) if cid == first]
    x = torch.from_numpy(cuts[first].load_features()).unsqueeze(0)
    with torch.no_grad():
        n_out = int(enc(x, torch.tensor([x.shape[1]]))[1][0])
    times = output_frame_times(torch.arange(n_out), x.shape[1], n_out, feats)
    expect = [next((p for p, s, e in items if s <= t < e), None) for t in times]
    assert mine == [x for x in expect if x is not None] and len(set(te.labels)) > 10
    r = run("probe", "--model", folder, "--label", "alignment.phone", "--train-cuts", fbank_cuts["train-clean-100"],
            "--test-cuts", test, "--methods", "knn", "--frame-stride", "2")
    assert r.returncode == 0 and "alignment.phone" in r.stdout, r.stderr[-2000:]
    r = run("probe", "--model", folder, "--label", "alignment.syllable", "--train-cuts", test, "--test-cuts", test)
    assert r.returncode == 1 and "no cut" in r.stderr and "'syllable' alignment" in r.stderr
    assert "Traceback" not in r.stderr


# ------------------------------------------------------------------------------------ Shar at scale
def test_shar_two_ranks_see_disjoint_data(fbank_cuts, tmp_path):
    """`data shar` exports features; two gloo ranks train one epoch from the shards (Lhotse's
    reader, rank-split shards) and no cut is seen twice; an unequal split ends the epoch together."""
    import os

    import yaml

    from conftest import TINY_ENCODER as enc

    r = run("data", "shar", fbank_cuts["train-clean-100"], "--out", tmp_path / "shar", "--shard-size", "5")
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(list((tmp_path / "shar").glob("features.*.tar"))) == 7  # 32 cuts
    cfg = {"task": "ssl", "exp_dir": str(tmp_path / "exp"),
           "model": {"encoder": enc, "codebook_size": 32, "mask_prob": 0.05, "mask_span": 10},
           "data": {"train_cuts": [str(tmp_path / "shar")], "max_duration": 6, "num_buckets": 1,
                    "num_workers": 1, "spec_augment": False},
           "optim": {"base_lr": 0.03, "warmup_batches": 1, "lr_batches": 100},
           "trainer": {"num_epochs": 1, "progress": False, "average_period": 1, "num_threads": 1,
                       "record_cuts": True, "device": "cpu"}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                        str(free_port()), "-m", "auden_kit.cli.main", "train", "--config", str(tmp_path / "c.yaml")],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    seen = [(tmp_path / "exp" / f"cuts-epoch1-rank{k}.txt").read_text().split() for k in (0, 1)]
    assert seen[0] and seen[1]
    both = seen[0] + seen[1]
    assert len(both) == len(set(both))  # no cut twice in the epoch, within or across ranks
    assert not set(seen[0]) & set(seen[1])
    assert (tmp_path / "exp" / "epoch-1.pt").is_file()
