"""Recipes run offline end to end on the synthesized corpus (tiny model, a few steps)."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import TINY_ENCODER

ROOT = Path(__file__).resolve().parents[1]


def _env():
    return dict(os.environ, PATH=f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}")  # threads: conftest


def _copy_recipe(name: str, dst: Path) -> Path:
    (dst / "egs").mkdir(parents=True)
    shutil.copytree(ROOT / "egs" / name, dst / "egs" / name,
                    ignore=shutil.ignore_patterns("data", "exp", "download"))
    shutil.copytree(ROOT / "tools", dst / "tools")
    (dst / ".venv").symlink_to(ROOT / ".venv")
    return dst / "egs" / name


def _new_recipe(root: Path, name: str, task: str) -> Path:
    """`auden-kit recipe new NAME --task TASK` in a copy of the repository's layout under ``root``."""
    egs = root / "egs"
    egs.mkdir()
    shutil.copytree(ROOT / "egs" / f"TEMPLATE_{task}", egs / f"TEMPLATE_{task}")
    shutil.copytree(ROOT / "tools", root / "tools")
    (root / ".venv").symlink_to(ROOT / ".venv")
    r = subprocess.run([str(ROOT / ".venv" / "bin" / "auden-kit"), "recipe", "new", name, "--task", task,
                        "--egs", str(egs)], capture_output=True, text=True, env=_env())
    assert r.returncode == 0, r.stderr
    return egs / name


def _tiny_config(recipe: Path, base: str) -> Path:
    cfg = yaml.safe_load((recipe / base).read_text())
    cfg["model"] = {"encoder": dict(TINY_ENCODER), "decoder_dim": 32, "joiner_dim": 32, "use_ctc": True,
                    "warm_step": 2}
    cfg["data"].update({"max_duration": 20, "num_buckets": 2, "num_workers": 0})
    cfg["trainer"] = {"progress": False, "average_period": 1}
    out = recipe / "conf" / "tiny.yaml"
    out.write_text(yaml.safe_dump(cfg))
    return out


@pytest.mark.slow
def test_librispeech_recipe_offline_from_stage_1(synth_corpus, tmp_path):
    recipe = _copy_recipe("librispeech", tmp_path)
    _tiny_config(recipe, "conf/train.yaml")
    cmd = ["./run.sh", "--stage", "1", "--corpus-dir", str(synth_corpus), "--bpe-size", "60", "--nj", "1",
           "--num-epochs", "1", "--avg", "1", "--config", "conf/tiny.yaml"]
    r = subprocess.run(cmd, cwd=recipe, capture_output=True, text=True, env=_env(), timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    for n in range(1, 8):
        assert f"Stage {n}:" in r.stdout
    assert (recipe / "exp" / "jit" / "encoder.pt").is_file()
    decode = recipe / "exp" / "decode"
    for part in ("test-clean", "test-other") if (synth_corpus / "test-other").exists() else ("test-clean",):
        assert list(decode.glob(f"wer-summary-librispeech_cuts_{part}-greedy*.txt"))
        assert list(decode.glob(f"errs-librispeech_cuts_{part}-modified_beam_search*.txt"))
    # a rerun skips finished stages: no new epoch checkpoint, manifests untouched
    mtime = (recipe / "exp" / "epoch-1.pt").stat().st_mtime
    r = subprocess.run(cmd[:2] + ["1", "--stop-stage", "5"] + cmd[3:], cwd=recipe, capture_output=True, text=True,
                       env=_env(), timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (recipe / "exp" / "epoch-1.pt").stat().st_mtime == mtime
    # averaging, decoding and export are skipped too when their outputs are newer than their inputs
    r = subprocess.run(cmd[:2] + ["6"] + cmd[3:], cwd=recipe, capture_output=True, text=True, env=_env(), timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("up to date") >= 3 and "error" not in r.stderr.lower()


@pytest.mark.slow
def test_template_recipe_with_a_folder_of_wavs(synth_corpus, tmp_path):
    """`recipe new` + README: a folder of wav files and a `text` file is all a user brings."""
    import soundfile as sf

    from auden_kit.data.audio import load_audio

    corpus = tmp_path / "corpus"
    src_parts = {"train": "train-clean-100", "dev": "dev-clean", "test": "test-clean"}
    for part, src in src_parts.items():
        (corpus / part).mkdir(parents=True)
        lines = []
        for trans in sorted((synth_corpus / src).rglob("*.trans.txt")):
            for line in trans.read_text().splitlines():
                utt, text = line.split(" ", 1)
                wav = load_audio(trans.parent / f"{utt}.flac")
                sf.write(corpus / part / f"{utt}.wav", wav.numpy(), 16000)
                lines.append(f"{utt} {text.lower()}")
        (corpus / part / "text").write_text("\n".join(lines) + "\n")
    recipe = _copy_recipe("TEMPLATE", tmp_path / "work")
    _tiny_config(recipe, "conf/train.yaml")
    r = subprocess.run(["./run.sh", "--corpus-dir", str(corpus), "--bpe-size", "50", "--nj", "1", "--num-epochs", "1",
                        "--avg", "1", "--config", "conf/tiny.yaml"],
                       cwd=recipe, capture_output=True, text=True, env=_env(), timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    summary = next((recipe / "exp" / "decode").glob("wer-summary-mydata_cuts_test-greedy*.txt")).read_text()
    assert summary.startswith("settings\tWER")
    recogs = next((recipe / "exp" / "decode").glob("recogs-mydata_cuts_test-greedy*.txt")).read_text()
    assert "ref=" in recogs and "hyp=" in recogs


@pytest.mark.slow
def test_ssl_template_pretrains_on_long_unlabeled_audio_and_fine_tunes(synth_corpus, tmp_path):
    """`recipe new NAME --task ssl`: unlabeled recordings of ~25 s (cut into windows), labeled
    folders with `text`; BEST-RQ pretraining, fine-tuning from it and from scratch, test WER; then
    `--teacher DIR` (the fine-tuned model as the teacher): distillation, the student fine-tuned
    from it, the teacher's WER beside the students'."""
    import numpy as np
    import soundfile as sf

    from auden_kit.data.audio import load_audio

    corpus = tmp_path / "corpus"
    (corpus / "unlabeled" / "talks").mkdir(parents=True)
    flacs = sorted((synth_corpus / "train-clean-100").rglob("*.flac"))
    for k in range(4):  # long recordings: 10 utterances each
        wav = np.concatenate([load_audio(f).numpy() for f in flacs[k * 10:(k + 1) * 10]])
        sf.write(corpus / "unlabeled" / "talks" / f"talk{k}.wav", wav, 16000)
    for part, src in {"train": "train-clean-100", "dev": "dev-clean", "test": "test-clean"}.items():
        (corpus / part).mkdir()
        lines = []
        for trans in sorted((synth_corpus / src).rglob("*.trans.txt"))[:8]:
            for line in trans.read_text().splitlines()[:3]:
                utt, text = line.split(" ", 1)
                (corpus / part / f"{utt}.flac").symlink_to(trans.parent / f"{utt}.flac")
                lines.append(f"{utt} {text.lower()}")
        (corpus / part / "text").write_text("\n".join(lines) + "\n")
    recipe = _new_recipe(tmp_path, "mypre", "ssl")
    for name in ("pretrain", "finetune", "distill"):
        cfg = yaml.safe_load((recipe / "conf" / f"{name}.yaml").read_text())
        cfg["model"]["encoder"] = dict(TINY_ENCODER)
        if name == "pretrain":
            cfg["model"].update({"codebook_size": 32, "codebook_dim": 8, "head_hidden": 16})
        if name == "distill":
            cfg["model"].update({"head_hidden": 16, "stats_batches": 2})
        cfg["data"].update({"max_duration": 20, "num_buckets": 2, "num_workers": 0})
        cfg["trainer"].update({"progress": False, "average_period": 1})
        (recipe / "conf" / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
    r = subprocess.run(["./run.sh", "--corpus-dir", str(corpus), "--nj", "1", "--bpe-size", "40", "--window", "8",
                        "--pretrain-epochs", "1", "--finetune-epochs", "1", "--avg", "1", "--freeze-steps", "2",
                        "--scratch", "true"], cwd=recipe, capture_output=True, text=True, env=_env(), timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    from lhotse import load_manifest

    windows = load_manifest(recipe / "data" / "fbank" / "unlabeled_cuts_unlabeled.jsonl.gz")
    assert len(windows) > 4 and max(c.duration for c in windows) <= 8.0 + 1e-6  # long recordings in windows
    assert (recipe / "data" / "fbank" / "feature_stats.json").is_file()
    for e in ("ssl", "finetune", "scratch"):
        assert (recipe / "exp" / e / "model-avg" / "config.yaml").is_file()
    assert "init_from" in (recipe / "exp" / "finetune" / "config.yaml").read_text()
    for e in ("finetune", "scratch"):  # a WER line each
        line = next(x for x in r.stdout.splitlines() if x.startswith(f"{e}: "))
        assert float(line.split()[-1]) >= 0, line

    args = ["--corpus-dir", str(corpus), "--nj", "1", "--bpe-size", "40", "--pretrain-epochs", "1",
            "--finetune-epochs", "1", "--avg", "1", "--freeze-steps", "2", "--scratch", "true", "--stage", "3"]
    r = subprocess.run(["./run.sh", *args, "--teacher", "exp/nothing"], cwd=recipe, capture_output=True, text=True,
                       env=_env(), timeout=60)
    assert r.returncode == 2 and "--teacher 'exp/nothing' is not a model folder" in r.stderr, r.stderr
    r = subprocess.run(["./run.sh", *args, "--codebooks", "8"], cwd=recipe, capture_output=True, text=True,
                       env=_env(), timeout=60)
    assert r.returncode == 2 and "give --teacher DIR" in r.stderr, r.stderr
    r = subprocess.run(["./run.sh", *args, "--teacher", "exp/finetune/model-avg", "--teacher-layers", "-1",
                        "--student-taps", "-1"], cwd=recipe, capture_output=True, text=True, env=_env(), timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    cfg = yaml.safe_load((recipe / "exp" / "distill" / "config.yaml").read_text())
    t = cfg["model"]["teachers"][0]
    assert t["kind"] == "model" and t["path"] == str(recipe / "exp" / "finetune" / "model-avg"), t
    assert t["layers"] == [2] and t["student_taps"] == [-1], t  # -1: the teacher's output (2 stacks, then it)
    assert "exp/distill/model-avg" in (recipe / "exp" / "student" / "config.yaml").read_text()  # init_from
    for e in ("teacher0", "student", "scratch"):
        line = next(x for x in r.stdout.splitlines() if x.startswith(f"{e}: ")).split("  (")[0]
        assert float(line.split()[-1]) >= 0, line

    pytest.importorskip("transformers")  # a local Hugging Face folder as the teacher: it reads each window's audio
    from conftest import tiny_hf_teacher

    shutil.rmtree(recipe / "exp" / "distill")
    hf = tiny_hf_teacher(tmp_path / "wavlm")
    r = subprocess.run(["./run.sh", *args, "--stop-stage", "3", "--teacher", f"{hf},exp/finetune/model-avg"],
                       cwd=recipe, capture_output=True, text=True, env=_env(), timeout=600)  # two teachers, USAD-style
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    hf_t, asr_t = yaml.safe_load((recipe / "exp" / "distill" / "config.yaml").read_text())["model"]["teachers"]
    assert hf_t["kind"] == "hf" and hf_t["dims"] == [32, 32, 32] and hf_t["layers"] == [0, 2], hf_t  # -3, -1 of 3
    assert asr_t["kind"] == "model" and asr_t["path"].endswith("exp/finetune/model-avg"), asr_t
    assert (recipe / "exp" / "distill" / "model-avg" / "config.yaml").is_file()

    # --cache true --codebooks 2: both teachers run once over windows and dev, codes learnt by cross-entropy
    shutil.rmtree(recipe / "exp" / "distill")
    r = subprocess.run(["./run.sh", *args, "--stop-stage", "3", "--teacher", f"{hf},exp/finetune/model-avg",
                        "--cache", "true", "--codebooks", "2"], cwd=recipe, capture_output=True, text=True,
                       env=_env(), timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    cfg = yaml.safe_load((recipe / "exp" / "distill" / "config.yaml").read_text())
    assert [(t["name"], t["kind"], t["loss"], t["layers"]) for t in cfg["model"]["teachers"]] == \
        [("t0", "cached", "codes", [0, 1]), ("t1", "cached", "codes", [0, 1])]
    assert cfg["data"]["train_cuts"] == ["data/teacher_cache/unlabeled_t1.jsonl.gz"]
    assert cfg["data"]["valid_cuts"] == ["data/teacher_cache/mydata_dev_t1.jsonl.gz"]
    cut = next(iter(load_manifest(recipe / cfg["data"]["train_cuts"][0])))
    assert {"teacher_t0_codes", "teacher_t1_codes"} <= set(cut.custom)  # the chain kept both teachers'
    made = (recipe / "data" / "teacher_cache" / "unlabeled_t1.made").read_text()
    assert made.startswith(str(recipe / "exp" / "finetune" / "model-avg")) and made.split()[-1] == "2", made


@pytest.mark.slow
def test_mini_synth_voice_recipe_tiny(tmp_path):
    """Every stage of the offline voice recipe on a tiny corpus: baselines, training, EER (cosine
    and AS-norm), gender/style accuracy, identification, stored threshold, verify."""
    import json

    recipe = _copy_recipe("mini_synth_voice", tmp_path)
    cfg = yaml.safe_load((recipe / "conf" / "train.yaml").read_text())
    cfg["model"].update({"encoder": dict(TINY_ENCODER), "embed_dim": 16, "margin_start_step": 0,
                         "margin_end_step": 4})
    cfg["data"].update({"max_duration": 12, "num_workers": 0})
    cfg["trainer"].update({"progress": False, "average_period": 1})
    (recipe / "conf" / "train.yaml").write_text(yaml.safe_dump(cfg))
    cmd = ["./run.sh", "--train-variants", "3", "--test-variants", "2", "--train-utts", "4", "--dev-utts", "2",
           "--test-utts", "3", "--num-epochs", "1", "--nj", "1"]
    r = subprocess.run(cmd, cwd=recipe, capture_output=True, text=True, env=_env(), timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for n in range(0, 8):
        assert f"Stage {n}:" in r.stdout
    base = json.loads((recipe / "exp" / "baselines.json").read_text())
    assert 0 <= base["stats-lda"]["eer"] <= 100 and "style-seconds-per-char" in base
    summary = json.loads((recipe / "exp" / "eval" / "summary.json").read_text())
    assert set(summary["goals"]) >= {"gender >= 95 %", "identification >= 98 %"}
    assert "eer" in summary["cosine"] and "eer" in summary["as_norm"] and "gender_accuracy" in summary["test"]
    assert "speaker_accuracy" in summary["dev"] and "speaker_accuracy" not in summary["test"]  # unseen speakers
    assert "EER" in r.stdout and "same speaker" in r.stdout or "different speakers" in r.stdout
    assert (recipe / "exp" / "model-avg" / "verification.yaml").is_file()
    # a rerun skips everything that is done
    r = subprocess.run(cmd, cwd=recipe, capture_output=True, text=True, env=_env(), timeout=300)
    assert r.returncode == 0 and r.stdout.count("up to date") >= 4, r.stdout[-2000:]


@pytest.mark.slow
def test_voice_template_on_a_folder_with_labels(voice_corpus, tmp_path):
    """`recipe new NAME --task voice` on audio folders with utt2spk, utt2gender, utt2emotion and
    utt2age (some ages missing): heads from the labels, age as groups, evaluation files."""
    import json

    corpus = tmp_path / "corpus"
    for part in ("train", "dev", "test"):
        (corpus / part).mkdir(parents=True)
        for f in (voice_corpus / part).rglob("*.flac"):
            (corpus / part / f.name).symlink_to(f)
        for name in ("utt2spk", "utt2gender"):
            (corpus / part / name).write_text((voice_corpus / part / name).read_text())
        (corpus / part / "utt2emotion").write_text((voice_corpus / part / "utt2style").read_text())
        spk = dict(line.split() for line in (voice_corpus / part / "utt2spk").read_text().splitlines())
        ages = {s: 12 + 11 * i for i, s in enumerate(sorted(set(spk.values())))}
        (corpus / part / "utt2age").write_text("".join(
            f"{u} {ages[s] if i % 5 else 'Null'}\n" for i, (u, s) in enumerate(sorted(spk.items()))))
    recipe = _new_recipe(tmp_path, "myvoices", "voice")
    cfg = yaml.safe_load((recipe / "conf" / "train.yaml").read_text())
    cfg["model"].update({"encoder": dict(TINY_ENCODER), "embed_dim": 16})
    cfg["data"].update({"max_duration": 12, "num_workers": 0})
    cfg["trainer"].update({"progress": False, "average_period": 1})
    (recipe / "conf" / "train.yaml").write_text(yaml.safe_dump(cfg))
    r = subprocess.run(["./run.sh", "--corpus-dir", str(corpus), "--num-epochs", "1", "--avg", "1", "--nj", "1",
                        "--perturbed-speakers", "false"], cwd=recipe, capture_output=True, text=True, env=_env(),
                       timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "model.heads=[custom.age,custom.emotion,gender]" in r.stdout
    labels = (recipe / "exp" / "model-avg" / "labels" / "custom_age.txt").read_text().split()
    assert labels == ["18-39", "40-60", "<18", ">=61"]
    metrics = json.loads((recipe / "exp" / "eval" / "metrics-test.json").read_text())
    assert {"custom_age_accuracy", "custom_emotion_macro_f1", "gender_f1_F"} <= set(metrics)
    assert json.loads((recipe / "exp" / "eval" / "score-asnorm.json").read_text())["targets"] > 0


def _voxceleb_layout(voice_corpus: Path, root: Path) -> Path:
    """VoxCeleb1 as distributed (wav/<id>/<session>/<n>.wav, vox1_meta.csv, veri_test2.txt), made
    from the synthesized voices: training speakers are the 'dev' set, the unseen ones 'test'."""
    import soundfile as sf

    from auden_kit.data.audio import load_audio

    vox1 = root / "voxceleb1"
    meta = ["VoxCeleb1 ID\tVGGFace1 ID\tGender\tNationality\tSet"]
    test_files = []
    for part, split in (("train", "dev"), ("test", "test")):
        spk = dict(line.split() for line in (voice_corpus / part / "utt2spk").read_text().splitlines())
        gender = dict(line.split() for line in (voice_corpus / part / "utt2gender").read_text().splitlines())
        for s in sorted(set(spk.values())):
            vid = f"id1{int(s[3:]):04d}"
            meta.append(f"{vid}\tName_{s}\t{gender[next(u for u in spk if spk[u] == s)].lower()}\tUK\t{split}")
            utts = sorted(u for u in spk if spk[u] == s)
            for i, u in enumerate(utts):
                f = vox1 / "wav" / vid / f"sess{i % 2}" / f"{i + 1:05d}.wav"
                f.parent.mkdir(parents=True, exist_ok=True)
                sf.write(f, load_audio(next((voice_corpus / part).rglob(f"{u}.flac"))).numpy(), 16000)
                if split == "test":
                    test_files.append((vid, f.relative_to(vox1 / "wav").as_posix()))
    (vox1 / "vox1_meta.csv").write_text("\n".join(meta) + "\n")
    lines = [f"{int(a[0] == b[0])} {a[1]} {b[1]}" for i, a in enumerate(test_files) for b in test_files[i + 1:]]
    (vox1 / "veri_test2.txt").write_text("\n".join(lines) + "\n")
    return vox1


@pytest.mark.slow
def test_voxceleb_recipe_on_a_synthesized_layout(voice_corpus, tmp_path):
    """The VoxCeleb recipe from a local VoxCeleb1-layout folder: no network, the Vox1-O list read
    from the corpus, speed copies as new speakers, held-out validation, cosine and AS-norm EER."""
    import json

    vox1 = _voxceleb_layout(voice_corpus, tmp_path / "corpus")
    recipe = _copy_recipe("voxceleb", tmp_path / "work")
    cfg = yaml.safe_load((recipe / "conf" / "train.yaml").read_text())
    cfg["model"].update({"encoder": dict(TINY_ENCODER), "embed_dim": 16, "margin_start_step": 0,
                         "margin_end_step": 4})
    cfg["data"].update({"max_duration": 12, "num_workers": 0})
    cfg["trainer"] = {"progress": False, "average_period": 1, "dtype": "float32"}
    (recipe / "conf" / "train.yaml").write_text(yaml.safe_dump(cfg))
    env = dict(_env(), no_proxy="*", http_proxy="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9")
    r = subprocess.run(["./run.sh", "--vox1", str(vox1), "--num-epochs", "1", "--avg", "1", "--nj", "1",
                        "--top-n", "5"], cwd=recipe, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    trials = (recipe / "data" / "manifests" / "voxceleb1_O_trials.txt").read_text().splitlines()
    assert trials[0].split()[1].startswith("id1") and "/" not in trials[0]
    train = (recipe / "data" / "fbank" / "voxceleb_cuts_train.jsonl.gz")
    from lhotse import load_manifest_lazy

    spk = {c.supervisions[0].speaker for c in load_manifest_lazy(train)}
    assert any(s.endswith("-sp0.9") for s in spk) and len(spk) == 3 * 6  # speed copies are new speakers
    for kind in ("cosine", "asnorm"):
        res = json.loads((recipe / "exp" / "eval" / f"score-voxceleb1_O-{kind}.json").read_text())
        assert res["targets"] == sum(t.startswith("1") for t in trials)
    assert (recipe / "exp" / "model-avg" / "verification.yaml").is_file()


@pytest.mark.slow
def test_cremad_recipe_on_a_synthesized_layout(voice_corpus, tmp_path):
    """CREMA-D's layout (AudioWAV/<actor>_<sentence>_<EMO>_<level>.wav + VideoDemographics.csv)
    -> speaker-disjoint splits with emotion/gender/age labels -> train -> per-class metrics."""
    import json

    root = tmp_path / "CREMA-D"
    (root / "AudioWAV").mkdir(parents=True)
    demo = ["ActorID,Age,Sex,Race,Ethnicity"]
    emo = {"calm": "SAD", "neutral": "NEU", "lively": "HAP"}
    for part in ("train", "test"):
        spk = dict(line.split() for line in (voice_corpus / part / "utt2spk").read_text().splitlines())
        gender = dict(line.split() for line in (voice_corpus / part / "utt2gender").read_text().splitlines())
        style = dict(line.split() for line in (voice_corpus / part / "utt2style").read_text().splitlines())
        for i, (u, s) in enumerate(sorted(spk.items())):
            actor = str(1000 + int(s[3:]))
            (root / "AudioWAV" / f"{actor}_S{i:02d}_{emo[style[u]]}_XX.wav").symlink_to(
                next((voice_corpus / part).rglob(f"{u}.flac")))  # flac bytes under a .wav name: read by content
            if i == 0 or spk[sorted(spk)[i - 1]] != s:
                demo.append(f"{actor},{20 + 9 * (int(s[3:]) % 5)},{'Female' if gender[u] == 'F' else 'Male'},x,y")
    (root / "AudioWAV" / "README.txt").write_text("not audio\n")
    (root / "VideoDemographics.csv").write_text("\n".join(demo) + "\n")
    recipe = _copy_recipe("cremad", tmp_path / "work")
    cfg = yaml.safe_load((recipe / "conf" / "train.yaml").read_text())
    cfg["model"].update({"encoder": dict(TINY_ENCODER), "embed_dim": 16})
    cfg["data"].update({"max_duration": 12, "num_workers": 0})
    cfg["trainer"].update({"progress": False, "average_period": 1})
    (recipe / "conf" / "train.yaml").write_text(yaml.safe_dump(cfg))
    r = subprocess.run(["./run.sh", "--corpus-dir", str(root), "--num-epochs", "1", "--avg", "1", "--nj", "1"],
                       cwd=recipe, capture_output=True, text=True, env=_env(), timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    from lhotse import load_manifest

    sups = {p: load_manifest(recipe / "data" / "manifests" / f"cremad_supervisions_{p}.jsonl.gz")
            for p in ("train", "dev", "test")}
    actors = {p: {s.speaker for s in v} for p, v in sups.items()}
    assert not actors["train"] & actors["test"] and not actors["dev"] & actors["test"] and actors["test"]
    s = next(iter(sups["train"]))
    assert s.custom["emotion"] in ("sad", "neutral", "happy") and s.gender in ("M", "F") and s.custom["age"]
    metrics = json.loads((recipe / "exp" / "eval" / "metrics-test.json").read_text())
    assert {"custom_emotion_uar", "custom_emotion_macro_f1", "gender_accuracy", "custom_age_accuracy"} <= set(metrics)


@pytest.mark.slow
def test_librispeech_pretrain_recipe_offline(synth_corpus, tmp_path):
    """run_pretrain.sh on the synthesized LibriSpeech layout: fbank without labels -> Shar ->
    statistics -> BEST-RQ -> fine-tuning from the pretrained encoder -> decoding."""
    recipe = _copy_recipe("librispeech", tmp_path)
    ft = _tiny_config(recipe, "conf/train.yaml")
    pre = yaml.safe_load((recipe / "conf" / "pretrain.yaml").read_text())
    pre["model"].update({"encoder": dict(TINY_ENCODER), "codebook_size": 64, "mask_prob": 0.05, "mask_span": 10})
    pre["data"].update({"max_duration": 20, "num_buckets": 2, "num_workers": 0})
    pre["trainer"] = {"progress": False, "average_period": 1}
    (recipe / "conf" / "tiny_pretrain.yaml").write_text(yaml.safe_dump(pre))
    cmd = ["./run_pretrain.sh", "--stage", "1", "--corpus-dir", str(synth_corpus), "--pretrain-parts",
           "train-clean-100", "--nj", "1", "--shard-size", "10", "--pretrain-epochs", "1", "--finetune-epochs", "1",
           "--avg", "1", "--bpe-size", "60", "--pretrain-config", "conf/tiny_pretrain.yaml",
           "--finetune-config", str(ft.relative_to(recipe))]
    r = subprocess.run(["./run.sh", "--stage", "1", "--stop-stage", "1", "--corpus-dir", str(synth_corpus)],
                       cwd=recipe, capture_output=True, text=True, env=_env(), timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    r = subprocess.run(cmd, cwd=recipe, capture_output=True, text=True, env=_env(), timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert len(list((recipe / "data" / "shar" / "pretrain").glob("features.*.tar"))) == 4  # 32 cuts / 10
    assert (recipe / "exp_pretrain" / "model-avg" / "config.yaml").is_file()
    assert "initialised from exp_pretrain/model-avg" in r.stderr
    assert list((recipe / "exp_finetune" / "decode").glob("wer-summary-librispeech_cuts_test-clean-greedy*.txt"))


@pytest.mark.slow
def test_mini_synth_ssl_recipe_tiny(tmp_path, trained_model):
    """The stages of egs/mini_synth_ssl (synthesis, unlabeled set, probe sets, BEST-RQ, fine-tuning
    vs scratch, decoding, probes, summary) with a tiny model and corpus; MAE (stage 8, off by
    default) is trained in tests/test_ssl.py. Then run_distill.sh on the same data with the tiny
    ASR folder as teacher, through a vector-quantised teacher cache."""
    recipe = _copy_recipe("mini_synth_ssl", tmp_path)
    for name in ("pretrain", "finetune", "distill", "finetune_student"):
        p = recipe / "conf" / f"{name}.yaml"
        cfg = yaml.safe_load(p.read_text())
        cfg["model"]["encoder"] = dict(TINY_ENCODER)
        if name == "pretrain":
            cfg["model"].update({"codebook_size": 64, "mae_decoder_dim": 32, "mae_decoder_heads": 2})
        elif name == "distill":
            cfg["model"]["head_hidden"] = 32
        else:
            cfg["model"].update({"decoder_dim": 32, "joiner_dim": 32, "warm_step": 2})
        cfg["data"].update({"max_duration": 12, "num_buckets": 2, "num_workers": 0})
        cfg["trainer"].update({"progress": False, "average_period": 1})
        p.write_text(yaml.safe_dump(cfg))
    cmd = ["./run.sh", "--nj", "1", "--num-speakers", "4", "--train-utts", "3", "--unlabeled-speakers", "3",
           "--unlabeled-utts", "6", "--bpe-size", "60", "--pretrain-epochs", "1",
           "--finetune-epochs", "1"]
    r = subprocess.run(cmd, cwd=recipe, capture_output=True, text=True, env=_env(), timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for n in (0, 1, 2, 3, 4, 5, 6, 7, 9):
        assert f"Stage {n}:" in r.stdout
    summary = json.loads((recipe / "exp" / "summary.json").read_text())
    assert summary["wer"]["finetuned"] is not None and summary["wer"]["scratch"] is not None
    assert set(summary["probes"]["bestrq"]) == {f"{a}/{b}" for a in ("keyword", "speaker", "phone") for b in ("knn", "linear")}
    assert set(summary["goals"]) == {"finetuned <= 0.7x scratch"} | {
        f"bestrq {a}/{b} >= random + 10" for a in ("speaker", "phone") for b in ("knn", "linear")}
    assert summary["probes"]["random"] and not summary["probes"]["mae"]
    un = (recipe / "data" / "manifests" / "unlabeled_cuts.jsonl.gz")
    from lhotse import CutSet

    assert all(not c.supervisions for c in CutSet.from_file(un))
    # distillation (MVQ-style: cross-entropy on 2-codebook codes; the dev set coded with the training set's
    # codebooks): the tiny teacher's second stack and output (taps 1, -1) into the student's taps 1, 2
    cmd = ["./run_distill.sh", "--teacher", str(trained_model), "--teacher-layers", "1,-1", "--student-taps", "1,2",
           "--distill-epochs", "1", "--finetune-epochs", "1", "--cached", "true", "--codebooks", "2", "--code-loss", "true"]
    r = subprocess.run(cmd, cwd=recipe, capture_output=True, text=True, env=_env(), timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for n in range(4):
        assert f"Stage {n}:" in r.stdout
    cache = CutSet.from_file(recipe / "data" / "fbank" / "unlabeled_cuts_teacher_vq2.jsonl.gz")
    assert all("teacher_asr_codes" in c.custom and "teacher_asr" not in c.custom for c in cache)
    dev = CutSet.from_file(recipe / "data" / "fbank" / "labeled_cuts_dev_teacher_vq2.jsonl.gz")
    assert all(c.custom["teacher_asr_vq"] == cache[0].custom["teacher_asr_vq"] for c in dev)
    assert yaml.safe_load((recipe / "exp" / "distill" / "model-avg" / "config.yaml").read_text())[
        "model"]["teachers"][0]["loss"] == "codes"
    wers = dict(line.split() for line in r.stdout.splitlines() if line.split()[:1] in (["teacher"], ["student_finetune"],
                                                                                       ["student_scratch"]))
    assert set(wers) == {"teacher", "student_finetune", "student_scratch"} and all(float(w) >= 0 for w in wers.values())
    assert "initialised from exp/distill/model-avg" in r.stderr


def _tiny_tagspeech(recipe: Path, max_duration: float):
    """A tiny decoder in the recipe's tagspeech config (the streams come from the tiny fixtures)."""
    p = recipe / "conf" / "train.yaml"
    cfg = yaml.safe_load(p.read_text())
    cfg["model"].update({"d_model": 32, "decoder_layers": 1, "decoder_ff_dim": 64, "decoder_heads": 2})
    cfg["data"].update({"max_duration": max_duration, "num_buckets": 1, "num_workers": 0})
    cfg["trainer"].update({"progress": False, "average_period": 1})
    p.write_text(yaml.safe_dump(cfg))


@pytest.mark.slow
def test_mini_synth_meeting_recipe_tiny(tmp_path, trained_model, voice_model):
    """Every stage of egs/mini_synth_meeting (synthesis, meeting simulation, fbank, stream cache,
    tagspeech training, decoding with RTTM/STM/SegLST, the cascade, the long recording, summary)
    with tiny models: the tiny ASR folder as the semantic stream, the tiny voice folder as the
    voice stream and the cascade's embedder."""
    recipe = _copy_recipe("mini_synth_meeting", tmp_path)
    _tiny_tagspeech(recipe, max_duration=120)
    cmd = ["./run.sh", "--nj", "1", "--seen-speakers", "4", "--train-utts", "6", "--test-utts", "3",
           "--unseen-speakers", "2", "--dev-unseen-speakers", "2", "--train-meetings", "6", "--dev-meetings", "2", "--test-meetings", "3",
           "--min-seconds", "8", "--max-seconds", "30", "--thresholds", "0.4 0.6", "--split-grid", "0.6 0.9",
           "--num-epochs", "1", "--avg", "1", "--long-meetings", "2", "--asr-model", str(trained_model),
           "--voice-model", str(voice_model / "model"), "--extra", "trainer.max_steps=3"]
    r = subprocess.run(cmd, cwd=recipe, capture_output=True, text=True, env=_env(), timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for n in range(11):
        assert f"Stage {n}:" in r.stdout
    summary = json.loads((recipe / "exp" / "summary.json").read_text())
    for k in ("tagspeech", "cascade", "long"):
        assert summary[k]["meetings"] >= 1 and summary[k]["fail_rate"] == 0, k
    assert summary["long"]["recording_s"] > 12
    for f in ("exp/tagspeech/decode/hyp-test.rttm", "exp/tagspeech/decode/ref-test.stm", "exp/cascade/hyp-test.json",
              "data/ref_test.rttm"):
        assert (recipe / f).is_file(), f
    # stage 8 chose the cascade's threshold on dev (lowest DER), stage 6 model.split_voices (lowest cpWER)
    tuned = json.loads((recipe / "exp" / "cascade" / "tune-threshold.json").read_text())
    ders = {float(k): v["der"] for k, v in tuned["by_threshold"].items()}
    assert set(ders) == {0.4, 0.6} and ders[tuned["chosen"]] == min(ders.values())
    import yaml

    tune = recipe / "exp" / "tagspeech" / "tune-split_voices"
    dev = {v: json.loads((tune / v / "metrics-dev.json").read_text())["cpwer"] for v in ("0.6", "0.9")}
    chosen = (tune / "chosen").read_text().strip()
    assert dev[chosen] == min(dev.values()) and ("0.6" if dev["0.6"] <= dev["0.9"] else "0.9") == chosen
    cfg = yaml.safe_load((recipe / "exp" / "tagspeech" / "model-avg" / "config.yaml").read_text())
    assert cfg["model"]["split_voices"] == float(chosen)
    # the dev meetings hold voices of their own that no model heard (as the test meetings do)
    from lhotse import load_manifest

    m = recipe / "data" / "manifests"
    dev_only = {c.supervisions[0].speaker for c in load_manifest(m / "unseen_dev" / "synth_cuts_dev-clean.jsonl.gz")}
    test_only = {c.supervisions[0].speaker for c in load_manifest(m / "unseen" / "synth_cuts_test-clean.jsonl.gz")}
    assert len(dev_only) == 2 and not dev_only & test_only
    assert dev_only & {s.speaker for s in load_manifest(m / "meetings_supervisions_dev.jsonl.gz")}


# ---------------------------------------------------------------------------- real meeting corpora
def _meeting_layout_sources(meetings):
    """(recording, its supervisions) of the simulated meetings, in order."""
    from lhotse import load_manifest

    recs = load_manifest(meetings[0] / "m" / "meetings_recordings_train.jsonl.gz")
    sups = load_manifest(meetings[0] / "m" / "meetings_supervisions_train.jsonl.gz")
    by_rec: dict = {}
    for s in sups:
        by_rec.setdefault(s.recording_id, []).append(s)
    return [(r, sorted(by_rec[r.id], key=lambda s: s.start)) for r in recs]


def _ami_layout(meetings, root: Path) -> Path:
    """AMI's layout from the simulated meetings: <meeting>/audio/<meeting>.Array1-01.wav and the
    NXT annotations (corpusResources/meetings.xml; segments/ and words/ per speaker) that Lhotse's
    prepare_ami reads; meeting ids from its full-corpus-asr partition (4 train, 1 dev, 1 test)."""
    import soundfile as sf
    from xml.sax.saxutils import escape

    ids = ["ES2002a", "ES2002b", "ES2002c", "ES2002d", "ES2011a", "ES2004a"]
    ann = root / "ami_public_manual_1.6.2"
    for sub in ("corpusResources", "segments", "words"):
        (ann / sub).mkdir(parents=True)
    nite = 'xmlns:nite="http://nite.sourceforge.net/"'
    meetings_xml, names = [], {}
    for mid, (rec, sups) in zip(ids, _meeting_layout_sources(meetings)):
        audio = root / mid / "audio"
        audio.mkdir(parents=True)
        sf.write(audio / f"{mid}.Array1-01.wav", rec.load_audio()[0], rec.sampling_rate)
        agents = {spk: "ABCD"[i] for i, spk in enumerate(dict.fromkeys(s.speaker for s in sups))}
        meetings_xml.append(f'<meeting observation="{mid}">' + "".join(
            f'<speaker nxt_agent="{a}" global_name="{names.setdefault(spk, "FM"[len(names) % 2] + f"EE{len(names):03d}")}" '
            f'channel="{i}"/>' for i, (spk, a) in enumerate(agents.items())) + "</meeting>")
        for spk, a in agents.items():
            mine = [s for s in sups if s.speaker == spk]
            segs = "".join(f'<segment nite:id="{mid}.{a}.s{k}" transcriber_start="{s.start:.3f}" '
                           f'transcriber_end="{s.end:.3f}"/>' for k, s in enumerate(mine))
            words = []
            for k, s in enumerate(mine):
                ws = s.text.split()
                step = s.duration / len(ws)
                words += [f'<w nite:id="{mid}.{a}.w{k}.{j}" starttime="{s.start + j * step:.3f}" '
                          f'endtime="{s.start + (j + 1) * step:.3f}">{escape(w)}</w>' for j, w in enumerate(ws)]
            (ann / "segments" / f"{mid}.{a}.segments.xml").write_text(f"<nite:root {nite}>{segs}</nite:root>")
            (ann / "words" / f"{mid}.{a}.words.xml").write_text(f"<nite:root {nite}>{''.join(words)}</nite:root>")
    (ann / "corpusResources" / "meetings.xml").write_text(f"<meetings>{''.join(meetings_xml)}</meetings>")
    return root


def _alimeeting_layout(meetings, root: Path) -> Path:
    """AliMeeting's far-field layout from the simulated meetings: {Train,Eval,Test}_Ali_far/
    audio_dir/<session>_MS<n>.wav (8-channel arrays) and textgrid_dir/<session>.TextGrid (a tier
    per speaker named <room>_<session>_<gender>_SPK<id>), as Lhotse's prepare_ali_meeting reads."""
    import numpy as np
    import soundfile as sf

    parts = ["Train", "Train", "Train", "Train", "Eval", "Test"]
    for k, (part, (rec, sups)) in enumerate(zip(parts, _meeting_layout_sources(meetings))):
        base = root / f"{part}_Ali_far"
        (base / "audio_dir").mkdir(parents=True, exist_ok=True)
        (base / "textgrid_dir").mkdir(parents=True, exist_ok=True)
        session = f"R{k:04d}_M{k:04d}"
        x = rec.load_audio()[0]
        sf.write(base / "audio_dir" / f"{session}_MS{k:03d}.wav", np.stack([x * (0.9 ** c) for c in range(8)], 1),
                 rec.sampling_rate)
        speakers = list(dict.fromkeys(s.speaker for s in sups))
        tiers = []
        for i, spk in enumerate(speakers):
            t, items = 0.0, []
            for s in (s for s in sups if s.speaker == spk):  # a tier covers the file: gaps are empty intervals
                a, b = round(max(s.start, t), 3), round(min(s.end, rec.duration), 3)
                if a > t:
                    items.append((t, a, ""))
                if b > a:
                    items.append((a, b, s.text))
                    t = b
            if t < rec.duration:
                items.append((t, rec.duration, ""))
            body = "".join(f'        intervals [{j + 1}]:\n            xmin = {a:.3f}\n            xmax = {b:.3f}\n'
                           f'            text = "{w}"\n' for j, (a, b, w) in enumerate(items))
            tiers.append(f'    item [{i + 1}]:\n        class = "IntervalTier"\n        name = "{session}_'
                         f'{"FM"[i % 2]}_SPK{100 * k + i:04d}"\n        xmin = 0\n        xmax = {rec.duration:.3f}\n'
                         f'        intervals: size = {len(items)}\n{body}')
        (base / "textgrid_dir" / f"{session}.TextGrid").write_text(
            'File type = "ooTextFile"\nObject class = "TextGrid"\n\nxmin = 0\n'
            f'xmax = {rec.duration:.3f}\ntiers? <exists>\nsize = {len(tiers)}\nitem []:\n' + "".join(tiers))
    return root


@pytest.mark.slow
def test_ami_recipe_on_a_synthesized_layout(meetings, tmp_path, trained_model, voice_model):
    """egs/ami from a local AMI-layout folder (SDM audio + NXT XML annotations), no network:
    Lhotse manifests, utterance groups with fbank, references, simulated-meeting augmentation,
    stream cache, tagspeech training (TagSpeech's filter on), decoding dev/test, the cascade."""
    corpus = _ami_layout(meetings, tmp_path / "corpus")
    recipe = _copy_recipe("ami", tmp_path / "work")
    _tiny_tagspeech(recipe, max_duration=30)
    cmd = ["./run.sh", "--stage", "1", "--corpus-dir", str(corpus), "--nj", "1", "--max-group", "10",
           "--sim-meetings", "2", "--sim-min-seconds", "4", "--thresholds", "0.5", "--num-epochs", "1", "--avg", "1",
           "--asr-model", str(trained_model), "--voice-model", str(voice_model / "model")]
    r = subprocess.run(cmd, cwd=recipe, capture_output=True, text=True, env=_env(), timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    from lhotse import load_manifest

    sups = load_manifest(recipe / "data/manifests/ami-sdm_supervisions_train.jsonl.gz")
    assert {s.recording_id for s in sups} == {"ES2002a", "ES2002b", "ES2002c", "ES2002d"}
    groups = load_manifest(recipe / "data/fbank/ami_cuts_train.jsonl.gz")
    assert all(g.duration <= 10 + 1e-3 or len(g.supervisions) == 1 for g in groups)
    assert sum(len(g.supervisions) for g in groups) >= len(sups)  # overlapping segments kept
    assert len(load_manifest(recipe / "data/fbank/amisim_cuts_train.jsonl.gz")) == 2
    for part in ("dev", "test"):
        m = json.loads((recipe / f"exp/tagspeech/decode/metrics-{part}.json").read_text())
        assert m["meetings"] >= 1 and m["fail_rate"] == 0, m
    assert json.loads((recipe / "exp/cascade/metrics-test.json").read_text())["meetings"] >= 1
    assert "tagspeech" in r.stdout and "cascade" in r.stdout and "cpWER" in r.stdout


@pytest.mark.slow
def test_tagspeech_template_on_a_folder_of_meetings(meetings, tmp_path, trained_model, voice_model):
    """`recipe new NAME --task tagspeech` on what a user brings: per part, meeting recordings and a
    segments.stm beside them. Manifests (one supervision per segment, overlaps kept), utterance
    groups, stream cache, training, decoding dev/test with references, the cascade."""
    from lhotse import load_manifest

    from auden_kit.data.segments import write_segments
    from auden_kit.results import Segment

    d, _ = meetings
    recs = load_manifest(d / "m" / "meetings_recordings_train.jsonl.gz")
    sups = list(load_manifest(d / "m" / "meetings_supervisions_train.jsonl.gz"))
    ids = sorted(r.id for r in recs)
    corpus = tmp_path / "corpus"
    for part, chosen in (("train", ids[:4]), ("dev", ids[4:5]), ("test", ids[5:])):
        (corpus / part / "audio").mkdir(parents=True)
        for rid in chosen:
            src = Path(recs[rid].sources[0].source).resolve()
            (corpus / part / "audio" / f"{rid}{src.suffix}").symlink_to(src)
        write_segments(corpus / part / "segments.stm", {rid: [Segment(s.start, s.end, s.speaker, s.text)
                                                              for s in sups if s.recording_id == rid]
                                                        for rid in chosen}, "stm")
    recipe = _new_recipe(tmp_path, "mytalks", "tagspeech")
    _tiny_tagspeech(recipe, max_duration=30)
    r = subprocess.run(["./run.sh", "--corpus-dir", str(corpus), "--nj", "1", "--max-group", "10", "--thresholds", "0.5",
                        "--num-epochs", "1", "--avg", "1", "--asr-model", str(trained_model),
                        "--voice-model", str(voice_model / "model")], cwd=recipe, capture_output=True, text=True,
                       env=_env(), timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    got = load_manifest(recipe / "data/manifests/mydata_supervisions_train.jsonl.gz")
    assert len(got) == sum(s.recording_id in ids[:4] for s in sups) and all(s.text for s in got)
    for part in ("dev", "test"):
        m = json.loads((recipe / f"exp/tagspeech/decode/metrics-{part}.json").read_text())
        assert m["meetings"] >= 1 and m["fail_rate"] == 0 and m["ref_words"] > 0, m
        assert (recipe / f"data/ref_{part}.stm").is_file()
    assert json.loads((recipe / "exp/cascade/metrics-test.json").read_text())["meetings"] >= 1
    assert "tagspeech" in r.stdout and "cascade" in r.stdout
    # a meetings folder is not decoded utterance by utterance: said, not done
    r = subprocess.run([str(ROOT / ".venv" / "bin" / "auden-kit"), "decode", "--model", "exp/tagspeech/model-avg",
                        "--data-dir", str(corpus / "test")], cwd=recipe, capture_output=True, text=True, env=_env())
    assert r.returncode == 1 and "whole recordings" in r.stderr and "Traceback" not in r.stderr, r.stderr
    # a segment outside its recording: stage 0 stops and names it
    (corpus / "dev" / "segments.stm").write_text(f"{ids[4]} 1 x 999.0 1000.0 hello\n")
    (corpus / "train" / "text.de").write_text(f"{ids[0]} hallo\n")  # a meetings folder's maps are not read
    shutil.rmtree(recipe / "data")
    r = subprocess.run(["./run.sh", "--corpus-dir", str(corpus), "--stop-stage", "0"], cwd=recipe, capture_output=True,
                       text=True, env=_env(), timeout=300)
    assert r.returncode != 0 and ids[4] in r.stderr and "999.000" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_alimeeting_recipe_on_a_synthesized_layout(meetings, tmp_path, monkeypatch):
    """egs/alimeeting from a local AliMeeting-layout folder (8-channel far-field WAVs + TextGrids),
    stages 1-2: Lhotse manifests, one array channel, utterance groups with fbank, references
    (stages 3-8 are the AMI recipe's shared stages, run end to end by the test above)."""
    corpus = _alimeeting_layout(meetings, tmp_path / "corpus")
    recipe = _copy_recipe("alimeeting", tmp_path / "work")
    cmd = ["./run.sh", "--stage", "1", "--stop-stage", "2", "--corpus-dir", str(corpus), "--nj", "1",
           "--max-group", "10"]
    r = subprocess.run(cmd, cwd=recipe, capture_output=True, text=True, env=_env(), timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    from lhotse import load_manifest

    recs = load_manifest(recipe / "data/manifests/alimeeting-sdm_recordings_train.jsonl.gz")
    assert len(recs) == 4 and all(r.num_channels == 8 for r in recs)
    cuts = load_manifest(recipe / "data/fbank/alimeeting_cuts_test.jsonl.gz")
    monkeypatch.chdir(recipe)  # feature paths are relative to the recipe
    assert all(c.load_features().ndim == 2 for c in cuts)  # one channel read
    assert {s.speaker for c in cuts for s in c.supervisions} and (recipe / "data/ref_test.rttm").is_file()


@pytest.mark.slow
def test_mini_synth_st_recipe_tiny(tmp_path):
    """egs/mini_synth_st end to end with a tiny corpus and model: synthesis with translations,
    validation, fbank, the shared BPE with language tags, training, averaging, decoding with the
    transcript's n-best rescored by the decoder (the recipe's default), the gloss baseline and the
    summary against the goals; then stage 6 again with another transcript search, whose results
    go beside the default's."""
    recipe = _copy_recipe("mini_synth_st", tmp_path)
    p = recipe / "conf" / "train.yaml"
    cfg = yaml.safe_load(p.read_text())
    cfg["model"].update({"encoder": dict(TINY_ENCODER), "decoder_dim": 32, "joiner_dim": 32, "warm_step": 2,
                         "attention_decoder_dim": 32, "attention_decoder_layers": 1, "attention_decoder_heads": 2,
                         "attention_decoder_ff_dim": 64})
    cfg["data"].update({"max_duration": 12, "num_buckets": 2, "num_workers": 0, "warmup_batches": 0})
    cfg["trainer"].update({"progress": False, "average_period": 1})
    p.write_text(yaml.safe_dump(cfg))
    r = subprocess.run(["./run.sh", "--nj", "1", "--speakers-per-language", "2", "--train-utts", "8", "--dev-utts", "2",
                        "--test-utts", "2", "--bpe-size", "100", "--num-epochs", "1"],
                       cwd=recipe, capture_output=True, text=True, env=_env(), timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for n in range(9):
        assert f"Stage {n}:" in r.stdout
    summary = json.loads((recipe / "exp" / "decode" / "summary.json").read_text())
    assert set(summary["goals"]) == {"bleu", "chrf", "wer", "lid_acc"} and summary["gloss"]["bleu"] is not None
    assert "wer" in summary["model"] and "bleu" in summary["model"]
    dec = recipe / "exp" / "decode"
    assert (dec / "metrics-test-beam4.json").is_file() and (dec / "metrics-test-greedy.json").is_file()
    r = subprocess.run(["./run.sh", "--stage", "6", "--stop-stage", "6", "--asr-method", "greedy"],
                       cwd=recipe, capture_output=True, text=True, env=_env(), timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert (dec / "metrics-test-beam4-greedy.json").is_file() and (dec / "bleu-summary-test-beam4-greedy.txt").is_file()
