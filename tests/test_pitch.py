"""Pitch features (fbank + pitch): accuracy on signals of known pitch, alignment with the fbank
rows, storage and on-the-fly alike, and the config checks that catch a mismatch."""

import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from conftest import voice_config

CLI = [sys.executable, "-m", "auden_kit.cli.main"]


def _harmonic(f0, sr=16000, seed=0):
    phase = 2 * np.pi * np.cumsum(f0) / sr
    x = sum(np.sin(k * phase) / k for k in range(1, 15)) * 0.3
    return x + np.random.RandomState(seed).randn(len(x)) * 0.01


def _train_and_average(cfg: dict, tmp_path) -> dict:
    """Train ``cfg`` (exp_dir inside ``tmp_path``) with the CLI, average into ``tmp_path/m``; the
    folder's config.yaml."""
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    r = subprocess.run(CLI + ["train", "--config", str(tmp_path / "c.yaml")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    r = subprocess.run(CLI + ["average", "--exp-dir", cfg["exp_dir"], "--out", str(tmp_path / "m")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    return yaml.safe_load((tmp_path / "m" / "config.yaml").read_text())


def test_pitch_follows_a_known_contour_and_marks_noise_unvoiced():
    from auden_kit.data.pitch import num_frames, pitch_features

    sr = 16000
    t = np.arange(2 * sr) / sr
    f0 = 90 + 60 * t  # 90 -> 210 Hz (a male glide into the female range)
    x = _harmonic(f0)
    x[8000:11200] = np.random.RandomState(1).randn(3200) * 0.1  # 0.5-0.7 s: noise
    F = pitch_features(x, sr)
    assert F.shape == (num_frames(len(x), sr, 0.01), 4) == (200, 4)
    c = (np.arange(200) + 0.5) * 0.01
    voiced = (c < 0.48) | (c > 0.72)
    est = 100 * 2 ** (F[:, 1] / 12)  # semitones above 100 Hz
    true = 90 + 60 * c
    assert np.median(np.abs(est[voiced] / true[voiced] - 1)) < 0.005
    assert np.abs(est[voiced] / true[voiced] - 1).max() < 0.03  # no octave error anywhere
    assert F[voiced, 0].mean() > 0.9 and F[(c > 0.52) & (c < 0.68), 0].mean() < 0.4
    assert abs(float((F[voiced, 2] * F[voiced, 0]).sum() / F[voiced, 0].sum())) < 0.25  # utterance-normalised (semitones)
    assert np.all(F[voiced & (c > 0.05) & (c < 1.9), 3] > 0)  # a rising contour rises
    # silence: nothing periodic, no NaN
    z = pitch_features(np.zeros(4000), sr)
    assert z.shape == (25, 4) and np.isfinite(z).all() and (z[:, 0] == 0).all()
    assert pitch_features(np.zeros(0), sr).shape == (0, 4)


def test_fbank_pitch_rows_line_up_stored_and_on_the_fly(tmp_path):
    from lhotse import CutSet, MonoCut, Recording

    from auden_kit.data.features import FbankSettings, OnlineFbank, compute_fbank, fbank_from_waveform
    from auden_kit.errors import UserError

    s = FbankSettings(pitch=True)
    assert s.num_features == 84 and FbankSettings().num_features == 80
    x = torch.tensor(_harmonic(np.full(16000 * 3 // 2 + 37, 150.0)), dtype=torch.float32)
    both = fbank_from_waveform(x, s)
    plain = fbank_from_waveform(x, FbankSettings())
    assert both.shape == (plain.shape[0], 84) and torch.equal(both[:, :80], plain)
    assert abs(float(100 * 2 ** (both[10:-10, 81].median() / 12)) - 150) < 2
    import soundfile as sf

    sf.write(tmp_path / "a.wav", x.numpy(), 16000)
    rec = Recording.from_file(tmp_path / "a.wav")
    cuts = CutSet.from_cuts([MonoCut("a", 0, rec.duration, 0, recording=rec)])
    stored = compute_fbank(cuts, tmp_path / "f", "a", s, num_jobs=1)
    feats = torch.from_numpy(next(iter(stored)).load_features())
    assert feats.shape == both.shape and torch.allclose(feats, both, atol=0.05)  # lilcom
    with pytest.raises(UserError, match="pitch"):
        OnlineFbank(s)


def test_voice_training_with_pitch_and_the_mismatch_errors(fbank_cuts, synth_cuts, trained_model, tmp_path):
    # features computed with --pitch, trained with data.fbank.pitch=true: the encoder reads 84 dims
    out = tmp_path / "p_train.jsonl.gz"
    r = subprocess.run(CLI + ["data", "fbank", str(synth_cuts["dev-clean"]), "--out", str(out), "--pitch",
                              "--jobs", "1"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    from lhotse import CutSet

    assert next(iter(CutSet.from_file(out))).num_features == 84
    cfg = voice_config(tmp_path / "exp", {"train-clean-100": out, "dev-clean": out})
    cfg["trainer"].update(num_epochs=1, max_steps=2)
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(cfg))  # data.fbank says 80
    r = subprocess.run(CLI + ["train", "--config", str(tmp_path / "bad.yaml")], capture_output=True, text=True)
    assert r.returncode != 0 and "84-dim" in r.stderr and "data.fbank.pitch=true" in r.stderr
    assert "Traceback" not in r.stderr
    cfg["data"]["fbank"] = {"pitch": True}
    folder = _train_and_average(cfg, tmp_path)
    assert folder["features"]["pitch"] is True and folder["model"]["encoder"]["feature_dim"] == 84
    # the model folder computes the same 84 features for an audio file, and rejects 80-dim cuts
    wav = next(iter(CutSet.from_file(synth_cuts["test-clean"]))).recording.sources[0].source
    r = subprocess.run(CLI + ["decode", "--model", str(tmp_path / "m"), wav], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    r = subprocess.run(CLI + ["decode", "--model", str(tmp_path / "m"), "--cuts", str(fbank_cuts["test-clean"]),
                              "--out-dir", str(tmp_path / "d")], capture_output=True, text=True)
    assert r.returncode != 0 and "--pitch" in r.stderr and "Traceback" not in r.stderr
    # an explicit encoder width that contradicts data.fbank is named
    cfg["model"]["encoder"] = {**cfg["model"]["encoder"], "feature_dim": 80}
    cfg["exp_dir"] = str(tmp_path / "exp2")
    (tmp_path / "d.yaml").write_text(yaml.safe_dump(cfg))
    r = subprocess.run(CLI + ["train", "--config", str(tmp_path / "d.yaml")], capture_output=True, text=True)
    assert r.returncode != 0 and "model.encoder.feature_dim" in r.stderr and "84" in r.stderr
    # diarized ASR: a semantic stream on fbank (80) and a voice stream on fbank + pitch (84) read one
    # 84-row input, each its own leading rows
    from auden_kit.config import from_dict
    from auden_kit.errors import UserError
    from auden_kit.training.trainer import TrainConfig, resolve

    tcfg = from_dict(TrainConfig, {"task": "tagspeech", "exp_dir": "unused", "model": {
        "semantic_model": str(trained_model), "voice_model": str(tmp_path / "m"), "d_model": 32,
        "decoder_layers": 1, "decoder_ff_dim": 64, "max_window": 20, "max_speakers": 4}})
    task, mcfg = resolve(tcfg)
    cuts = list(CutSet.from_file(out))[:2]
    task.setup(mcfg, task.build_assets(tcfg, mcfg, cuts))
    model = task.build_model().eval()
    assert model.input_dims == {"semantic": 80, "voice": 84}
    x = torch.from_numpy(cuts[0].load_features()).unsqueeze(0)
    lens = torch.tensor([x.shape[1]])
    with torch.no_grad():
        sem, _, voice = model.streams(x, lens)
        alone, _ = model.semantic(x[..., :80], lens)
        assert voice is not None and torch.allclose(sem, alone, atol=1e-5)
        with pytest.raises(UserError, match="--pitch"):
            model.streams(x[..., :80], lens)


def test_prosody_statistics_read_the_intonation_not_the_register():
    from auden_kit.data.pitch import pitch_features
    from auden_kit.heads.pooling import PitchStats

    sr = 16000
    t = np.arange(2 * sr) / sr
    contour = 2 ** (4 * np.sin(2 * np.pi * 1.5 * t) / 12)  # +-4 semitones, 1.5 times a second
    sigs = [_harmonic(np.full_like(t, 150.0)), _harmonic(150 * contour), _harmonic(300 * contour)]
    P = [torch.from_numpy(pitch_features(x, sr)) for x in sigs]
    x = torch.zeros(3, P[0].shape[0] + 40, 4)
    x[:, -40:, 0] = 1.0  # padding that looks voiced, with a wild f0: must be ignored
    x[:, -40:, 1] = 30.0
    for i, p in enumerate(P):
        x[i, :p.shape[0]] = p
    lens = torch.tensor([p.shape[0] for p in P])
    stats = PitchStats().raw(x, lens)
    assert stats.shape == (3, PitchStats.NUM_STATS)
    pro, reg = stats[:, PitchStats.GROUPS["prosody"]], stats[:, PitchStats.GROUPS["register"]]
    flat, low, high = pro
    assert flat[0] < 0.1 and abs(float(low[0]) - 4 / 2 ** 0.5) < 0.3  # the spread of a sine: amplitude / sqrt(2)
    assert abs(float(low[1]) - 2 * 4 * np.sin(0.4 * np.pi)) < 0.6  # 90-10 percentile range
    assert torch.allclose(low, high, atol=0.3)  # an octave higher, the same intonation...
    assert abs(float(reg[2, 0] - reg[1, 0]) - 12) < 0.3  # ...in a register an octave higher
    assert abs(float(reg[0, 0]) - 12 * np.log2(1.5)) < 0.2  # 150 Hz: 7.02 semitones above 100 Hz
    # octave errors (a halved f0 on a few frames) are left out of the spread
    y = x.clone()
    y[0, 50:55, 1] -= 12
    assert abs(float(PitchStats().raw(y, lens)[0, 0] - flat[0])) < 0.05
    # windows of a training crop's length: a longer utterance of the same intonation reads alike,
    # and an utterance no longer than the window is read whole
    L = int(lens[1])
    twice = torch.cat([x[1:2, :L], x[1:2, :L]], dim=1)
    windowed = PitchStats().raw(twice, torch.tensor([2 * L]), span=L)[0]
    assert torch.allclose(windowed[:6], low, atol=0.4) and torch.equal(PitchStats().raw(x, lens, span=L), stats)
    # nothing voiced (silence): zeros, no NaN; one utterance in training mode uses running statistics
    z = PitchStats().train()(torch.zeros(1, 50, 4), torch.tensor([50]))
    assert torch.isfinite(z).all()


def test_prosody_heads_take_the_pitch_rows_and_the_encoder_the_filterbank(fbank_cuts, synth_cuts, tmp_path):
    from lhotse import CutSet

    from auden_kit.config import from_dict
    from auden_kit.errors import UserError
    from auden_kit.training.trainer import TrainConfig, resolve

    base = voice_config(tmp_path / "exp", fbank_cuts, head_inputs={"gender": "prosody"})
    with pytest.raises(UserError, match="model.head_inputs.*--pitch"):
        resolve(from_dict(TrainConfig, base))
    for bad in ({"emotion": "prosody"}, {"gender": "pitch"}, {"gender": "prosody+prosody"}):
        with pytest.raises(UserError, match="model.head_inputs"):
            resolve(from_dict(TrainConfig, voice_config(tmp_path / "exp", fbank_cuts, head_inputs=bad)))
    out = tmp_path / "p.jsonl.gz"
    r = subprocess.run(CLI + ["data", "fbank", str(synth_cuts["dev-clean"]), "--out", str(out), "--pitch",
                              "--jobs", "1"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    from auden_kit.io import save_cuts_atomic

    every = list(CutSet.from_file(out))
    rare = every[0].supervisions[0].gender
    kept = ([c for c in every if c.supervisions[0].gender != rare]
            + [c for c in every if c.supervisions[0].gender == rare][:2])
    save_cuts_atomic(CutSet.from_cuts(kept), tmp_path / "tr.jsonl.gz")  # one gender rarer
    cfg = voice_config(tmp_path / "exp", {"train-clean-100": tmp_path / "tr.jsonl.gz", "dev-clean": out},
                       head_inputs={"gender": "pooled+prosody"}, balanced_heads=["gender"])
    cfg["data"].update(fbank={"pitch": True}, spec_augment=True)
    cfg["trainer"].update(num_epochs=1, max_steps=3)
    folder = _train_and_average(cfg, tmp_path)
    assert folder["features"]["pitch"] is True and folder["model"]["encoder"]["feature_dim"] == 80
    # balanced_heads: the class counts of the training cuts travel with the model; the weights
    # average 1 over those cuts and favour the rarer class
    genders = [c.supervisions[0].gender for c in kept]
    labels = (tmp_path / "m" / "labels" / "gender.txt").read_text().split()
    counts = folder["data_stats"]["class_counts"]["gender"]
    assert counts == [genders.count(g) for g in labels] and min(counts) < max(counts)
    # the gender head reads the prosody statistics too: changing only the pitch rows changes its
    # probabilities, not the speaker embedding
    from auden_kit.hub import load_pretrained

    lm = load_pretrained(tmp_path / "m")
    task, model = lm.task, lm.model.eval()
    cuts = list(CutSet.from_file(out))[:2]
    feats = [torch.from_numpy(c.load_features()) for c in cuts]
    T = max(f.shape[0] for f in feats)
    x = torch.zeros(2, T, 84)
    for i, f in enumerate(feats):
        x[i, :f.shape[0]] = f
    batch = {"inputs": x, "input_lens": torch.tensor([f.shape[0] for f in feats])}
    w = task.class_weights("gender")
    assert abs(float((w * torch.tensor(counts, dtype=torch.float32)).sum()) - sum(counts)) < 1e-3
    assert float(w[counts.index(min(counts))]) > 1 > float(w[counts.index(max(counts))])
    a = task.infer(model, batch)
    x2 = x.clone()
    x2[..., 81] *= 1.5  # a wider intonation, same filterbank
    b = task.infer(model, {**batch, "inputs": x2})
    assert np.allclose(a[0].embedding, b[0].embedding, atol=1e-5)
    assert a[0].labels["gender"] != b[0].labels["gender"]
    wav = next(iter(CutSet.from_file(synth_cuts["test-clean"]))).recording.sources[0].source
    r = subprocess.run(CLI + ["decode", "--model", str(tmp_path / "m"), wav], capture_output=True, text=True)
    assert r.returncode == 0 and "gender" in r.stdout, r.stderr[-2000:]
