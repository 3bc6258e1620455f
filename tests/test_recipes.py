"""Recipes run offline end to end on the synthesized corpus (tiny model, a few steps)."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import TINY_ENCODER

ROOT = Path(__file__).resolve().parents[1]


def _env():
    return dict(os.environ, OMP_NUM_THREADS="2", PATH=f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}")


def _copy_recipe(name: str, dst: Path) -> Path:
    (dst / "egs").mkdir(parents=True)
    shutil.copytree(ROOT / "egs" / name, dst / "egs" / name,
                    ignore=shutil.ignore_patterns("data", "exp", "download"))
    shutil.copytree(ROOT / "tools", dst / "tools")
    (dst / ".venv").symlink_to(ROOT / ".venv")
    return dst / "egs" / name


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
