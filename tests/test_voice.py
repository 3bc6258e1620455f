"""The voice task: speaker (AAM-softmax) and gender heads on one embedding, trained together."""

import json
import subprocess
import sys

import numpy as np
import pytest
import yaml

CLI = [sys.executable, "-m", "auden_kit.cli.main"]


def test_voice_heads_learn_and_the_folder_carries_their_labels(voice_model):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(voice_model / "exp" / "tensorboard"))
    ea.Reload()
    spk = [e.value for e in ea.Scalars("valid/speaker_accuracy")]
    gen = [e.value for e in ea.Scalars("valid/gender_accuracy")]
    print("valid speaker accuracy", spk, "gender accuracy", gen)
    assert max(spk) >= 0.75 and max(gen) >= 0.75  # 4 speakers (chance 0.25), 2 genders
    cfg = yaml.safe_load((voice_model / "model" / "config.yaml").read_text())
    assert cfg["task"] == "voice" and sorted(cfg["label_maps"]) == ["gender", "speaker"]
    assert (voice_model / "model" / "labels" / "gender.txt").read_text().split() == ["F", "M"]


def test_voice_decode_and_embed(voice_model, synth_corpus, tmp_path):
    import auden_kit

    files = sorted(synth_corpus.glob("dev-clean/*/*/*.flac"))[:3]
    r = subprocess.run(CLI + ["decode", "--model", str(voice_model / "model"), "--output", "json", str(files[0])],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert set(d) >= {"file", "speaker", "gender", "embedding"} and len(d["embedding"]) == 32
    assert abs(sum(x["prob"] for x in d["gender"]) - 1) < 0.01
    m = auden_kit.load(voice_model / "model")
    res = m.embed([str(f) for f in files])
    e = np.array([x.embedding for x in res])
    assert e.shape == (3, 32) and np.isfinite(e).all()
    # digital silence has no voice to describe: an error naming the input, not an embedding
    import soundfile as sf

    sf.write(tmp_path / "silent.wav", np.zeros(16000 * 2), 16000)
    with pytest.raises(auden_kit.AudenKitError, match="silent.wav' holds no signal"):
        m.embed(tmp_path / "silent.wav")
    with pytest.raises(auden_kit.AudenKitError, match=r"transcribe\(\) needs a model of task .asr."):
        auden_kit.load(voice_model / "model").transcribe(files[0])


def test_random_crops_are_reproducible_and_bounded(fbank_cuts):
    import random

    from lhotse import CutSet

    from auden_kit.tasks.voice import RandomCrop

    cuts = CutSet.from_file(fbank_cuts["train-clean-100"]).subset(first=6).to_eager()
    random.seed(3)
    a = RandomCrop(1.5)(cuts)
    random.seed(3)
    b = RandomCrop(1.5)(cuts)
    assert [(c.start, c.duration) for c in a] == [(c.start, c.duration) for c in b]
    assert all(c.duration <= 1.5 + 1e-6 for c in a) and len({round(c.start, 3) for c in a}) > 1
    assert all(c.load_features().shape[0] <= 151 for c in a)


def test_embed_score_verify_cli(voice_model, synth_corpus, tmp_path):
    """embed -> score (EER/minDCF, AS-norm, stored threshold) -> verify, through the CLI, with a
    corrupt file among the inputs (named, the others embedded, exit 1)."""
    import soundfile as sf
    import torch
    import torchaudio

    from auden_kit.data.audio import load_audio

    files = sorted(synth_corpus.glob("dev-clean/*/*/*.flac")) + sorted(synth_corpus.glob("test-clean/*/*/*.flac"))
    # the same recordings at telephone and CD rates, one of them stereo: any rate and channel count
    for i, (f, sr) in enumerate(zip(files[:2], (8000, 44100))):
        x = torchaudio.functional.resample(load_audio(f).unsqueeze(0), 16000, sr)[0]
        out = tmp_path / f"{f.stem}-{sr}.wav"
        sf.write(out, torch.stack([x, x], 1).numpy() if i else x.numpy(), sr)
        files.append(out)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    model = voice_model / "model"
    r = subprocess.run(CLI + ["embed", "--model", str(model), "--out", str(tmp_path / "emb"), str(bad)]
                       + [str(f) for f in files], capture_output=True, text=True)
    assert r.returncode == 1 and "bad.wav" in r.stderr and "Traceback" not in r.stderr
    ids = (tmp_path / "emb" / "ids.txt").read_text().split()
    assert len(ids) == len(files) and (tmp_path / "emb" / "embeddings.txt").read_text().count("[") == len(files)
    spk = {str(f): f.name.split("-")[0] for f in files}  # the resampled copies keep their speaker
    lines = [f"{int(spk[a] == spk[b])} {a} {b}" for i, a in enumerate(ids) for b in ids[i + 1:]]
    (tmp_path / "trials.txt").write_text("\n".join(lines) + "\n")
    r = subprocess.run(CLI + ["score", "--model", str(model), "--trials", str(tmp_path / "trials.txt"), "--embeddings",
                              str(tmp_path / "emb"), "--save-threshold"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    eer = float(r.stdout.split("EER ")[1].split(" %")[0])
    print(r.stdout)
    assert eer < 50 and "minDCF(0.01)" in r.stdout and (model / "verification.yaml").is_file()
    r = subprocess.run(CLI + ["score", "--trials", str(tmp_path / "trials.txt"), "--embeddings", str(tmp_path / "emb"),
                              "--as-norm", str(tmp_path / "emb"), "--top-n", "5"], capture_output=True, text=True)
    assert r.returncode == 0 and "AS-norm" in r.stdout, r.stderr
    same = [f for f in files if spk[str(f)] == spk[str(files[0])]]
    r = subprocess.run(CLI + ["verify", "--model", str(model), str(same[0]), str(same[1])], capture_output=True,
                       text=True)
    assert r.returncode == 0 and "threshold" in r.stdout, r.stderr
    # '-': the audio piped in, as the file (verify and embed, named '-')
    r2 = subprocess.run(CLI + ["verify", "--model", str(model), str(same[0]), "-"], input=same[1].read_bytes(),
                        capture_output=True)
    assert r2.returncode == 0 and r2.stdout.decode() == r.stdout, r2.stderr.decode()
    r = subprocess.run(CLI + ["embed", "--model", str(model), "--out", str(tmp_path / "emb-in"), "-"],
                       input=files[0].read_bytes(), capture_output=True)
    assert r.returncode == 0 and (tmp_path / "emb-in" / "ids.txt").read_text().split() == ["-"], r.stderr.decode()
    (tmp_path / "short.txt").write_text(f"1 {ids[0]} nowhere.wav\n")
    r = subprocess.run(CLI + ["score", "--trials", str(tmp_path / "short.txt"), "--embeddings", str(tmp_path / "emb")],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "nowhere.wav" in r.stderr
