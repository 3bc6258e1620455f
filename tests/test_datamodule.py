import numpy as np
import soundfile as sf
import torch

from auden_kit.data.audio import load_audio
from auden_kit.data.datamodule import DataConfig, make_loader


def _batches(loader, sampler, n=None):
    out = []
    for i, b in enumerate(loader):
        sampler.mark_consumed()
        out.append(tuple(b["supervisions"]["cut_id"]))
        if n is not None and i + 1 == n:
            break
    return out


def test_batches_have_documented_shapes(fbank_cuts):
    cfg = DataConfig(max_duration=10, num_buckets=2, num_workers=0)
    loader, sampler = make_loader(cfg, [str(fbank_cuts["train-clean-100"])], train=True)
    b = next(iter(loader))
    B = len(b["cuts"])
    assert b["inputs"].shape[0] == B and b["inputs"].shape[2] == 80
    assert b["input_lens"].dtype == torch.long and int(b["input_lens"].max()) == b["inputs"].shape[1]
    assert len(b["supervisions"]["text"]) == B and all(b["supervisions"]["text"])


def test_sampler_resume_gives_remaining_batches(fbank_cuts):
    cfg = DataConfig(max_duration=6, num_buckets=2, num_workers=0, spec_augment=False)
    paths = [str(fbank_cuts["train-clean-100"])]
    loader, sampler = make_loader(cfg, paths, train=True)
    sampler.set_epoch(3)
    full = _batches(loader, sampler)
    assert len(full) >= 4
    loader, sampler = make_loader(cfg, paths, train=True)
    sampler.set_epoch(3)
    first = _batches(loader, sampler, n=2)
    state = sampler.state_dict()
    loader2, sampler2 = make_loader(cfg, paths, train=True)
    sampler2.load_state_dict(state)
    rest = _batches(loader2, sampler2)
    assert first + rest == full
    # a different epoch reshuffles
    loader3, sampler3 = make_loader(cfg, paths, train=True)
    sampler3.set_epoch(4)
    assert _batches(loader3, sampler3) != full


def test_ddp_ranks_split_the_data(fbank_cuts):
    cfg = DataConfig(max_duration=6, num_buckets=2, num_workers=0, spec_augment=False)
    ids = []
    for rank in (0, 1):
        loader, sampler = make_loader(cfg, [str(fbank_cuts["train-clean-100"])], True, world_size=2, rank=rank)
        ids.append({c for b in _batches(loader, sampler) for c in b})
    assert ids[0] and ids[1] and not (ids[0] & ids[1])


def test_on_the_fly_with_speed_perturb_and_noise(synth_cuts):
    cfg = DataConfig(max_duration=8, num_buckets=2, num_workers=0, on_the_fly_feats=True,
                     speed_perturb=[0.9, 1.1], noise_cuts=str(synth_cuts["dev-clean"]), noise_prob=1.0)
    loader, _ = make_loader(cfg, [str(synth_cuts["train-clean-100"])], train=True)
    b = next(iter(loader))
    assert b["inputs"].shape[-1] == 80 and torch.isfinite(b["inputs"]).all()


def test_load_audio_any_rate_and_channels(tmp_path):
    t = np.arange(44100) / 44100
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), 0.5 * np.sin(2 * np.pi * 440 * t)], axis=1)
    sf.write(tmp_path / "a.wav", stereo.astype(np.float32), 44100)
    sf.write(tmp_path / "b.flac", stereo[:8000, 0].astype(np.float32), 8000)
    a = load_audio(tmp_path / "a.wav")
    b = load_audio(tmp_path / "b.flac")
    assert a.ndim == 1 and abs(len(a) - 16000) <= 1
    assert abs(len(b) - 16000) <= 1
    # 440 Hz survives resampling: peak of the spectrum stays at 440 Hz
    spec = np.abs(np.fft.rfft(a.numpy()))
    assert abs(np.argmax(spec) * 16000 / len(a) - 440) < 5
