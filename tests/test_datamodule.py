import numpy as np
import pytest
import soundfile as sf
import torch

from auden_kit.data.audio import load_audio
from auden_kit.data.datamodule import DataConfig, make_loader
from auden_kit.errors import UserError


def _batches(loader, sampler, n=None):
    out = []
    for i, b in enumerate(loader):
        sampler.mark_consumed()
        out.append(tuple(b["cut_ids"]))
        if n is not None and i + 1 == n:
            break
    return out


def test_batches_have_documented_shapes(fbank_cuts, bpe_dir):
    from auden_kit.hub import get_task
    from auden_kit.tasks.asr import AsrModelConfig
    from auden_kit.tasks.base import ModelAssets
    from auden_kit.tokenizers import load_tokenizer

    task = get_task("asr").setup(AsrModelConfig(), ModelAssets(tokenizers={"text": load_tokenizer(bpe_dir)}))
    cfg = DataConfig(max_duration=10, num_buckets=2, num_workers=0)
    loader, sampler = make_loader(cfg, [str(fbank_cuts["train-clean-100"])], train=True, task=task)
    b = next(iter(loader))
    B = len(b["cuts"])
    assert b["inputs"].shape[0] == B and b["inputs"].shape[2] == 80
    assert b["input_lens"].dtype == torch.long and int(b["input_lens"].max()) == b["inputs"].shape[1]
    assert b["cut_ids"] == [c.id for c in b["cuts"]] and "clean_inputs" not in b
    texts = b["targets"]["texts"]
    assert len(texts) == B and all(texts)
    assert [task.tokenizer.decode(t) for t in b["targets"]["tokens"]] == texts


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


def test_batch_size_warmup_covers_the_epoch_and_resumes(fbank_cuts):
    """The first batches of epoch 1 are small; the epoch still sees every cut once; a resumed
    sampler (inside the warm-up and after it) continues exactly; later epochs are unaffected."""
    from lhotse import CutSet

    paths = [str(fbank_cuts["train-clean-100"])]
    all_ids = {c.id for c in CutSet.from_file(paths[0])}
    cfg = DataConfig(max_duration=12, num_buckets=2, num_workers=0, spec_augment=False,
                     warmup_max_duration=4, warmup_batches=3, drop_last=False)
    loader, sampler = make_loader(cfg, paths, train=True)
    sampler.set_epoch(1)
    durs, full = [], []
    for b in loader:
        sampler.mark_consumed()
        durs.append(sum(c.duration for c in b["cuts"]))
        full.append(tuple(b["cut_ids"]))
    assert max(durs[:3]) <= 4 and max(durs[3:]) > 4
    # the progress bar's epoch size (ETA) is estimated from durations, warm-up included
    sampler.set_epoch(1)
    assert abs(sampler.estimated_batches() - len(full)) <= max(2, 0.25 * len(full)), (len(full), durs)
    flat = [c for b in full for c in b]
    assert len(flat) == len(set(flat)) and set(flat) == all_ids
    for n in (2, 5):
        loader, sampler = make_loader(cfg, paths, train=True)
        sampler.set_epoch(1)
        first = _batches(loader, sampler, n=n)
        loader2, sampler2 = make_loader(cfg, paths, train=True)
        sampler2.load_state_dict(sampler.state_dict())
        assert first + _batches(loader2, sampler2) == full
    loader, sampler = make_loader(cfg, paths, train=True)
    sampler.set_epoch(2)
    loader_plain, sampler_plain = make_loader(DataConfig(max_duration=12, num_buckets=2, num_workers=0,
                                                         spec_augment=False, drop_last=False), paths, train=True)
    sampler_plain.set_epoch(2)
    epoch2 = _batches(loader, sampler)
    assert epoch2 == _batches(loader_plain, sampler_plain)
    assert abs(sampler.estimated_batches() - len(epoch2)) <= max(2, 0.25 * len(epoch2))
    # DDP: ranks agree on the warm-up and never share a cut
    ids = []
    for rank in (0, 1):
        loader, sampler = make_loader(cfg, paths, True, world_size=2, rank=rank)
        sampler.set_epoch(1)
        ids.append({c for b in _batches(loader, sampler) for c in b})
    assert ids[0] and ids[1] and not (ids[0] & ids[1])


def test_on_the_fly_with_speed_perturb_and_noise(synth_cuts):
    """Each augmentation changes what the model sees: speed perturbation the lengths, noise and
    reverberation the features, SpecAugment masks whole bands; evaluation batches are left alone."""
    from auden_kit.data.features import FbankSettings, fbank_from_waveform

    paths = [str(synth_cuts["train-clean-100"])]
    base = dict(max_duration=8, num_buckets=1, num_workers=0, on_the_fly_feats=True, shuffle=False)
    clean_loader, _ = make_loader(DataConfig(**base, spec_augment=False), paths, train=True)
    clean = next(iter(clean_loader))
    cut = clean["cuts"][0]
    ref = fbank_from_waveform(torch.as_tensor(cut.load_audio()[0]), FbankSettings())
    assert torch.allclose(clean["inputs"][0, : ref.shape[0]], ref, atol=1e-3)  # no augmentation: the file's fbank
    sp_loader, _ = make_loader(DataConfig(**base, spec_augment=False, speed_perturb=[0.9, 1.1]), paths, train=True)
    lens_sp = [int(n) for b in list(sp_loader)[:3] for n in b["input_lens"]]
    lens_clean = [int(n) for b in list(clean_loader)[:3] for n in b["input_lens"]]
    assert lens_sp != lens_clean
    noise_loader, _ = make_loader(DataConfig(**base, spec_augment=False, noise_cuts=str(synth_cuts["dev-clean"]),
                                             noise_prob=1.0, noise_snr=[0.0, 5.0]), paths, train=True)
    noisy = next(iter(noise_loader))
    assert noisy["cut_ids"] != clean["cut_ids"] or not torch.allclose(noisy["inputs"], clean["inputs"], atol=0.1)
    assert torch.isfinite(noisy["inputs"]).all()
    rev_loader, _ = make_loader(DataConfig(**base, spec_augment=False, reverb_prob=1.0), paths, train=True)
    rev = next(iter(rev_loader))  # Lhotse's simulated rooms: no RIR corpus needed
    assert rev["cut_ids"] == clean["cut_ids"] and rev["inputs"].shape == clean["inputs"].shape
    assert torch.isfinite(rev["inputs"]).all() and not torch.allclose(rev["inputs"], clean["inputs"], atol=0.1)
    sa_loader, _ = make_loader(DataConfig(**base, spec_augment=True, num_feature_masks=2, features_mask_size=20,
                                          time_warp_factor=0), paths, train=True)
    masked = next(iter(sa_loader))["inputs"]
    row = masked[0, : ref.shape[0]]
    flat_bands = int((row.std(dim=0) == 0).sum())  # a masked band holds one value over all frames
    assert flat_bands >= 1 and int((ref.std(dim=0) == 0).sum()) == 0 and not torch.equal(masked, clean["inputs"])
    # time masks: at most max_frames_mask_fraction of a cut's frames, whatever num_frame_masks says
    masked_share = {}
    for frac in (0.15, 0.5):
        tm_loader, _ = make_loader(DataConfig(**base, spec_augment=True, num_feature_masks=0, time_warp_factor=0,
                                              num_frame_masks=8, frames_mask_size=10, max_frames_mask_fraction=frac),
                                   paths, train=True)
        shares = []
        for b in list(tm_loader)[:4]:
            for x, n in zip(b["inputs"], b["input_lens"]):
                shares.append(float((x[: int(n)].std(dim=1) == 0).float().mean()))  # a masked frame: one value
        masked_share[frac] = shares
    assert max(masked_share[0.15]) <= 0.15 + 0.02 and max(masked_share[0.5]) > 0.25
    with pytest.raises(UserError, match="max_frames_mask_fraction"):
        DataConfig(max_frames_mask_fraction=1.5).validate()
    eval_loader, _ = make_loader(DataConfig(**base, spec_augment=True, speed_perturb=[0.9, 1.1]), paths, train=False)
    assert torch.equal(next(iter(eval_loader))["inputs"], clean["inputs"])


def test_random_gain_moves_each_training_cut_as_a_level_change(fbank_cuts):
    """data.gain_db: each training cut's mel bins moved by one gain in the range (what the gain
    on the waveform gives), padding kept; evaluation batches and the config check."""
    from auden_kit.data.level import DB_PER_NAT

    paths = [str(fbank_cuts["train-clean-100"])]
    base = dict(max_duration=10, num_buckets=1, num_workers=0, shuffle=False, spec_augment=False)
    clean = next(iter(make_loader(DataConfig(**base), paths, train=True)[0]))
    loud = next(iter(make_loader(DataConfig(**base, gain_db=[-20.0, 10.0]), paths, train=True)[0]))
    assert loud["cut_ids"] == clean["cut_ids"] and len(clean["cut_ids"]) >= 2
    gains = []
    for x, y, n in zip(clean["inputs"], loud["inputs"], clean["input_lens"]):
        live = x[:n] > -11.0  # above the floor by more than the largest gain (20 dB = 4.6)
        d = (y[:n] - x[:n])[live] * DB_PER_NAT
        assert float(d.max() - d.min()) < 1e-3  # one gain per cut, on every live bin
        gains.append(float(d.mean()))
        assert torch.equal(y[n:], x[n:])  # padding
    assert all(-20.0 <= g <= 10.0 for g in gains) and max(gains) - min(gains) > 1.0
    again = next(iter(make_loader(DataConfig(**base, gain_db=[-20.0, 10.0]), paths, train=True)[0]))
    assert torch.equal(again["inputs"], loud["inputs"])  # seeded
    ev = next(iter(make_loader(DataConfig(**base, gain_db=[-20.0, 10.0]), paths, train=False)[0]))
    assert torch.equal(ev["inputs"], next(iter(make_loader(DataConfig(**base), paths, train=False)[0]))["inputs"])
    for bad in ([10.0, -20.0], [5.0]):
        with pytest.raises(UserError, match="data.gain_db"):
            DataConfig(gain_db=bad).validate()


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


def test_wav_stream_reads_what_soundfile_reads(tmp_path):
    """A WAV byte stream read piece by piece as it arrives (what `decode --streaming -` does with
    a pipe) gives the samples soundfile gives for the file, in every sample format, with extra
    chunks before the data and with a pipe's header that states no sizes."""
    import io
    import struct

    from auden_kit.data.audio import wav_stream
    from auden_kit.errors import UserError

    rng = np.random.default_rng(0)
    x = (0.5 * rng.uniform(-1, 1, size=(4410, 2))).astype(np.float32)
    for subtype in ("PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"):
        path = tmp_path / f"{subtype}.wav"
        sf.write(path, x, 22050, subtype=subtype)
        want = sf.read(path, dtype="float32", always_2d=True)[0].mean(axis=1)
        b = bytearray(path.read_bytes())
        i = b.index(b"data")
        b[4:8] = b[i + 4:i + 8] = struct.pack("<I", 0xFFFFFFFF)
        b[12:12] = b"LIST" + struct.pack("<I", 5) + b"abcde\x00"  # an odd-sized chunk first, padded
        pieces = list(wav_stream(io.BufferedReader(io.BytesIO(bytes(b)), buffer_size=777), 0.01))
        assert {r for _, r in pieces} == {22050} and len(pieces) > 10, subtype
        got = torch.cat([p for p, _ in pieces]).numpy()
        assert got.shape == want.shape and np.allclose(got, want, atol=1e-6), subtype
    for data, needle in ((b"fLaC" + bytes(40), "not a WAV stream"), (path.read_bytes()[:30], "ended before")):
        with pytest.raises(UserError, match=needle):
            list(wav_stream(io.BytesIO(data)))


def test_parallel_fbank_matches_serial_and_keeps_threads(synth_cuts, tmp_path):
    """Forked single-threaded fbank workers give the serial features and leave the caller's torch
    thread count as it was."""
    from lhotse import CutSet

    from auden_kit.data.features import compute_fbank

    cuts = CutSet.from_file(synth_cuts["dev-clean"])
    before = torch.get_num_threads()
    par = compute_fbank(cuts, tmp_path / "par", "dev", num_jobs=2)
    assert torch.get_num_threads() == before
    ser = {c.id: c for c in compute_fbank(cuts, tmp_path / "ser", "dev", num_jobs=1)}
    for c in par:
        assert np.allclose(c.load_features(), ser[c.id].load_features(), atol=1e-3)
