"""The Python API (auden_kit.load) and audio of any length."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import auden_kit
from auden_kit.data.audio import load_audio

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "auden_kit.cli.main"]


def _train_files(synth_corpus, n=None):
    files = sorted(synth_corpus.glob("train-clean-100/*/*/*.flac"))
    return files[:n] if n else files


def _refs(synth_corpus) -> dict:
    out = {}
    for t in synth_corpus.rglob("*.trans.txt"):
        for line in t.read_text().splitlines():
            k, v = line.split(" ", 1)
            out[k] = v
    return out


def test_api_matches_cli_and_takes_any_input(learned_ctc, synth_corpus, tmp_path):
    _, folder = learned_ctc
    m = auden_kit.load(folder)
    files = _train_files(synth_corpus, 6)
    one = m.transcribe(files[0])
    assert one.text and len(one.tokens) == len(one.times) and one.to_dict()["text"] == one.text
    many = m.transcribe([str(f) for f in files])
    assert [r.cut_id for r in many] == [str(f) for f in files] and all(r.text for r in many)
    r = subprocess.run(CLI + ["decode", "--model", str(folder)] + [str(f) for f in files],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert [line.split("\t", 1)[1] for line in r.stdout.strip().splitlines()] == [x.text for x in many]
    # a waveform at another rate, 2-D (channels, samples); a CutSet
    wav = load_audio(files[0], 8000)
    w = m.transcribe(np.stack([wav.numpy(), wav.numpy()]), sample_rate=8000)
    assert w.text == m.transcribe(wav, sample_rate=8000).text and w.tokens
    # integer PCM (scipy.io.wavfile.read, torchaudio.load(normalize=False)) at its full scale, as
    # the floats (not left to the level matching to rescue)
    pcm = (wav.numpy() * 32767).round().astype(np.int16)
    assert m.transcribe(pcm, sample_rate=8000, match_level=False).text == \
        m.transcribe(pcm / 32768.0, sample_rate=8000, match_level=False).text == \
        m.transcribe(pcm.astype(np.int64), sample_rate=8000, match_level=False).text == w.text
    with pytest.raises(auden_kit.AudenKitError, match="not a torch device"):
        auden_kit.load(folder, device="tpu")
    from lhotse import CutSet, Recording, RecordingSet

    cuts = CutSet.from_manifests(recordings=RecordingSet.from_recordings([Recording.from_file(f) for f in files[:2]]))
    assert [x.text for x in m.transcribe(cuts)] == [x.text for x in m.transcribe([str(f) for f in files[:2]])]
    with pytest.raises(auden_kit.AudenKitError, match="nope.wav' does not exist"):
        m.transcribe(tmp_path / "nope.wav")
    with pytest.raises(auden_kit.AudenKitError, match="sample_rate"):
        m.transcribe(wav.numpy())
    bad = wav.clone()
    bad[100] = float("nan")
    with pytest.raises(auden_kit.AudenKitError, match="non-finite"):
        m.transcribe(bad, sample_rate=8000)
    with pytest.raises(auden_kit.AudenKitError, match="classify"):
        m.classify(files[0])
    # digital silence, short and long (> max_segment): no words, without running the model (which
    # reads words into it); the speech around it is still read
    silent = m.transcribe([torch.zeros(16000 * 5), torch.zeros(16000 * 45), load_audio(files[0])], sample_rate=16000)
    assert [(x.text, x.tokens) for x in silent[:2]] == [("", [])] * 2 and silent[2].text == one.text


def test_decode_audio_piped_to_stdin(learned_ctc, synth_corpus, tmp_path):
    """`-` decodes the audio piped in (any format a file may have; a pipe's WAV header has no
    length), named '-' in the output and in errors; nothing piped, or '-' twice, is an error."""
    import struct

    _, folder = learned_ctc
    src = _train_files(synth_corpus, 1)[0]
    by_path = subprocess.run(CLI + ["decode", "--model", str(folder), str(src)], capture_output=True, text=True)
    assert by_path.returncode == 0, by_path.stderr
    text = by_path.stdout.rstrip("\n").split("\t", 1)[1]
    assert text
    wav = tmp_path / "a.wav"
    sf.write(wav, sf.read(src)[0], 16000)
    b = bytearray(wav.read_bytes())  # as `ffmpeg ... -f wav -` writes it: unknown sizes
    b[4:8] = b[b.index(b"data") + 4:b.index(b"data") + 8] = struct.pack("<I", 0xFFFFFFFF)
    for data in (src.read_bytes(), bytes(b)):
        r = subprocess.run(CLI + ["decode", "--model", str(folder), "-", str(src)], input=data,
                           capture_output=True)
        assert r.returncode == 0, r.stderr.decode()[-2000:]
        assert r.stdout.decode().splitlines() == [f"-\t{text}", f"{src}\t{text}"]
    r = subprocess.run(CLI + ["decode", "--model", str(folder), "-"], input=b"not audio", capture_output=True)
    err = r.stderr.decode()
    assert r.returncode == 1 and "cannot read audio file '-'" in err and "Traceback" not in err, err
    assert "ffmpeg -i" in err  # what to do about a format libsndfile does not read
    for args, data, needle in ((["-"], b"", "nothing was piped"), (["-", "-"], src.read_bytes(), "given once")):
        r = subprocess.run(CLI + ["decode", "--model", str(folder)] + args, input=data, capture_output=True)
        assert r.returncode == 1 and needle in r.stderr.decode() and "Traceback" not in r.stderr.decode()


def test_long_audio_is_split_at_pauses_and_stitched(learned_ctc, synth_corpus, tmp_path, capsys):
    """A few minutes of speech in one file: cut at the pauses between utterances (never inside
    one), pieces of at most 20 s decoded in batches and stitched with global times; the result is
    exactly the pieces decoded on their own with their offsets added. (How close the WER of a long
    file comes to that of its utterances is a property of the model: bench/long_audio.py measures
    it with the quick-start model.)"""
    from auden_kit.api import speech_segments
    from auden_kit.metrics.wer import compute_wer

    _, folder = learned_ctc
    m = auden_kit.load(folder)
    files = _train_files(synth_corpus) * 2
    refs = _refs(synth_corpus)
    rng = np.random.RandomState(0)
    parts, spans, pos = [], [], 0
    for f in files:
        x = load_audio(f).numpy()
        gap = (rng.randn(int(0.3 * 16000)) * 10 ** (-66 / 20)).astype(np.float32)  # room tone
        parts += [x, gap]
        spans.append((pos, pos + len(x)))
        pos += len(x) + len(gap)
    long = np.concatenate(parts)
    path = tmp_path / "long.flac"
    sf.write(path, long, 16000)
    seconds = len(long) / 16000
    assert seconds > 120
    ranges = speech_segments(torch.from_numpy(long), 16000, max_seconds=20, merge_up_to=m.merge_up_to)
    assert len(ranges) >= 10 and all(b - a <= 20 * 16000 for a, b in ranges)
    for a, b in spans:  # no cut in the middle 60 % of an utterance
        inner = (a + 0.2 * (b - a), b - 0.2 * (b - a))
        assert not any(inner[0] < x < inner[1] for r in ranges for x in r), (a, b)
    whole = m.transcribe(path, max_segment=20)
    alone = m.transcribe([torch.from_numpy(long[a:b]) for a, b in ranges], sample_rate=16000)
    assert whole.text == " ".join(r.text for r in alone if r.text)
    assert whole.times == [round(a / 16000 + t, 3) for (a, _), r in zip(ranges, alone) for t in r.times]
    assert whole.times == sorted(whole.times) and whole.times[-1] > seconds - 25
    # read block by block (a file longer than block_seconds) while the whole file is never in
    # memory: the same pieces, but for a soft edge that a block's own energy levels can place a
    # frame away (speech_segments' threshold is relative), which may change a word of this barely
    # trained model; another file in the same call is not disturbed
    streamed, short = m.transcribe([path, files[0]], max_segment=20, block_seconds=80)
    assert compute_wer([("x", whole.text, streamed.text)]).wer < 2.0, (whole.text, streamed.text)
    assert streamed.times == sorted(streamed.times) and abs(len(streamed.times) - len(whole.times)) <= 3
    assert abs(streamed.times[-1] - whole.times[-1]) < 0.5
    assert short.text == m.transcribe([path, files[0]], max_segment=20)[1].text
    # the progress bar counts seconds of audio (a long file shows its own progress and ETA)
    capsys.readouterr()
    list(m.iter_results([path, files[0]], max_segment=20, block_seconds=80, progress=True))
    total = seconds + sf.info(files[0]).duration
    bar = capsys.readouterr().err.replace("\r", "\n").splitlines()
    shown = [ln for ln in bar if " s audio [" in ln]
    assert len(shown) >= 3 and f"{total:.0f}/{total:.0f} s audio" in shown[-1] and "100%" in shown[-1]
    ref = " ".join(refs[f.stem] for f in files)
    utt = m.transcribe([str(f) for f in files])
    print(f"{seconds:.0f} s in {len(ranges)} pieces: WER long {compute_wer([('x', ref, whole.text)]).wer:.2f}, "
          f"utterance by utterance {compute_wer([('x', ref, ' '.join(r.text for r in utt))]).wer:.2f}")


def test_inputs_of_mixed_lengths_are_batched_longest_first(learned_ctc, synth_corpus, monkeypatch):
    """Pieces are batched longest first and no batch is padded past ``batch_duration`` (a short
    turn is not padded to the longest input of the call); each input still gets its own result,
    in input order: what it gets decoded on its own."""
    from auden_kit.metrics.wer import compute_wer

    _, folder = learned_ctc
    m = auden_kit.load(folder)
    wavs = [load_audio(f) for f in _train_files(synth_corpus, 8)]
    inputs = [wavs[0], torch.cat(wavs[1:4]), wavs[4][:12000], torch.cat(wavs[4:8]), wavs[2], wavs[5][:9000]]
    shapes = []
    real = m.task.infer

    def spy(model, batch, **o):
        shapes.append(tuple(batch["inputs"].shape[:2]))
        return real(model, batch, **o)

    monkeypatch.setattr(m.task, "infer", spy)
    got = m.transcribe(inputs, sample_rate=16000, batch_duration=12.0)
    assert any(b > 1 for b, _ in shapes) and len(got) == len(inputs)
    assert all(b == 1 or b * t * m.features.frame_shift <= 12.0 for b, t in shapes), shapes
    shapes.clear()
    alone = [m.transcribe(x, sample_rate=16000).text for x in inputs]
    assert all(b == 1 for b, _ in shapes)
    # the same words, but where padding moves a float in the last digits and a word of this
    # barely trained model with it (a results mix-up would be ~100 %)
    assert compute_wer([(str(i), a, g.text) for i, (a, g) in enumerate(zip(alone, got))]).wer <= 5


def test_streaming_state_stays_bounded_on_long_audio(bpe_dir, tmp_path):
    """The streaming encoder's state does not grow with the stream (a long file streams in
    bounded memory)."""
    from auden_kit.decoding.transducer import StreamingGreedyDecoder
    from conftest import tiny_causal_asr

    dec = StreamingGreedyDecoder(tiny_causal_asr(30, blank_shift=0.0))

    def state_size(st):
        if isinstance(st, torch.Tensor):
            return st.numel()
        if isinstance(st, dict):
            return sum(state_size(v) for v in st.values())
        if isinstance(st, list):
            return sum(state_size(v) for v in st)
        return 0

    sizes = []
    for i in range(40):  # 40 x 3 s of features = 2 minutes
        dec.accept(torch.randn(1, 300, 80))
        sizes.append(state_size(dec.states))
    assert max(sizes[20:]) <= max(sizes[2:20]) and dec.search.frames_done > 2900


def test_stream_equals_offline_features_stream(bpe_dir, synth_corpus, tmp_path):
    """m.stream() fed waveform chunks (online fbank) gives the tokens of the streaming decoder fed
    with the whole file's features, i.e. what `decode --streaming` gives; chunks at another rate go
    through a streaming resampler whose features match resampling the whole file."""
    from auden_kit.data.audio import StreamResampler, resample
    from auden_kit.data.features import FbankSettings, OnlineFbank, fbank_from_waveform
    from auden_kit.data.level import speech_level_db
    from auden_kit.decoding.transducer import StreamingGreedyDecoder
    from auden_kit.hub import save_pretrained
    from auden_kit.tokenizers import load_tokenizer
    from conftest import tiny_causal_asr

    tok = load_tokenizer(bpe_dir)
    model = tiny_causal_asr(tok.vocab_size)
    folder = save_pretrained(tmp_path / "causal", "asr", model.cfg, model, tok, FbankSettings())
    m = auden_kit.load(folder)
    path = _train_files(synth_corpus, 1)[0]
    wav = load_audio(path, 16000)
    s = m.stream()
    partials = []
    for i in range(0, wav.numel(), 3001):
        s.accept(wav[i:i + 3001], 16000)
        partials.append(len(s.partial.tokens))
    final = s.finish()
    ref_dec = StreamingGreedyDecoder(m.model)
    ref_dec.accept(fbank_from_waveform(wav, m.features).unsqueeze(0))
    ref = ref_dec.finish()[0]
    assert final.tokens and final.tokens == [tok.id_to_piece(t) for t in ref.tokens]
    assert partials == sorted(partials) and partials[-1] <= len(final.tokens)
    r = subprocess.run(CLI + ["decode", "--model", str(folder), "--streaming", "--output", "json", str(path)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["tokens"] == final.tokens
    # 22.05 kHz chunks: the streamed features are the whole file's, resampled at once
    w22 = load_audio(path, 22050)
    rs, fb, feats = StreamResampler(22050, 16000), OnlineFbank(m.features), []
    for i in range(0, w22.numel(), 3001):
        feats.append(fb.accept(rs.accept(w22[i:i + 3001])))
    feats += [fb.accept(rs.finish()), fb.finish()]
    streamed, whole = torch.cat(feats), fbank_from_waveform(resample(w22, 22050, 16000), m.features)
    assert streamed.shape == whole.shape and (streamed - whole).abs().max() < 0.01
    # a folder that records its training level: a stream 40 dB quieter is measured on its first
    # LEVEL_SECONDS (held back: nothing decoded before) and decoded at the gain that brings it there
    level = speech_level_db(fbank_from_waveform(wav, m.features), 80)
    m.assets.data_stats = {"level_db_p5": level - 3, "level_db_p50": level, "level_db_p95": level + 3}
    quiet = torch.cat([wav, wav]) * 0.01  # two utterances back to back: longer than what is held
    s = m.stream()
    held = int(s.LEVEL_SECONDS * 16000)
    assert quiet.numel() > held + 6000
    s.accept(quiet[:held - 100], 16000)
    assert s.gain is None and s.decoder.fed == 0
    for i in range(held - 100, quiet.numel(), 3001):
        s.accept(quiet[i:i + 3001], 16000)
    final = s.finish()
    head = speech_level_db(fbank_from_waveform(quiet[:held - 100 + 3001], m.features), 80)  # what was held
    assert abs(s.shift_db - (level - head)) < 1e-3 and 35 < s.shift_db < 45
    ref_dec = StreamingGreedyDecoder(m.model)
    ref_dec.accept(fbank_from_waveform(quiet * s.gain, m.features).unsqueeze(0))
    assert final.tokens == [tok.id_to_piece(t) for t in ref_dec.finish()[0].tokens]
    s = m.stream(match_level=False)  # as it is: fed at once, other tokens
    s.accept(quiet, 16000)
    assert s.gain == 1.0 and s.decoder.fed > 0 and s.shift_db == 0.0
    assert s.finish().tokens != final.tokens


def test_readme_python_snippet_runs(learned_ctc, synth_corpus, tmp_path):
    """The README's "Use from Python" example runs against a model folder (paths swapped in)."""
    _, folder = learned_ctc
    text = (ROOT / "README.md").read_text()
    section = text.split("## Use from Python", 1)[1]
    code = section.split("```python", 1)[1].split("```", 1)[0]
    audio = _train_files(synth_corpus, 2)
    code = (code.replace("egs/mini_synth/exp/model-avg", str(folder))
            .replace("a.wav", str(audio[0])).replace("b.flac", str(audio[1])))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip()


def test_pauses_found_the_same_in_audio_and_in_its_features(synth_corpus):
    """The pause detector reads 10 ms frames of energy: from the waveform (long-audio decoding,
    the cascade) or from log-mel features (tagspeech re-reading a window's speech); on speech with
    room-tone pauses both find every pause, within two frames, and cap stretches the same way."""
    from lhotse.features.kaldi.extractors import Fbank, FbankConfig

    from auden_kit.data.pauses import feature_log_energy, speech_frames, speech_segments

    rng = np.random.RandomState(1)
    parts, edges, pos = [], [], 0
    for f in _train_files(synth_corpus)[:6]:
        x = load_audio(f).numpy()
        gap = (rng.randn(int(0.5 * 16000)) * 10 ** (-66 / 20)).astype(np.float32)
        parts += [x, gap]
        edges.append((pos / 16000, (pos + len(x)) / 16000))
        pos += len(x) + len(gap)
    wav = torch.from_numpy(np.concatenate(parts))
    from_audio = [(a / 16000, b / 16000) for a, b in speech_segments(wav, 16000, max_seconds=1e9)]
    feats = torch.as_tensor(Fbank(FbankConfig(num_mel_bins=80)).extract(wav.numpy(), 16000))
    from_feats = [(a / 100, b / 100) for a, b in speech_frames(feature_log_energy(feats), max_seconds=1e9)]
    assert len(from_audio) == len(from_feats) >= len(edges)
    assert all(abs(p - q) <= 0.02 for r, s in zip(from_audio, from_feats) for p, q in zip(r, s))
    for a, b in edges:  # every utterance lies inside one stretch, no cut within it
        assert any(s <= a + 0.1 and b - 0.1 <= e for s, e in from_feats), (a, b)
    capped = speech_frames(feature_log_energy(feats), max_seconds=1.0)
    assert all(b - a <= 100 for a, b in capped) and len(capped) > len(from_feats)
    # digital silence (and 90 dB below speech) holds no speech, in both readings
    for quiet in (torch.zeros(16000 * 5), torch.randn(16000 * 5) * 1e-5):
        assert speech_segments(quiet, 16000) == []
        assert speech_frames(feature_log_energy(torch.as_tensor(Fbank(FbankConfig(num_mel_bins=80)).extract(
            quiet.numpy(), 16000)))) == []
    assert len(speech_segments(wav * 1e-3, 16000, max_seconds=1e9)) == len(from_audio)  # 60 dB down: still speech


def test_quiet_and_loud_recordings_are_brought_to_the_training_level(learned_ctc, synth_corpus, tmp_path):
    """The model folder records its training audio's level range; an input far outside it is
    moved to the training median by a gain on the features, which is what the same gain on the
    waveform gives (exact above the fbank's floor); inputs inside it are decoded as they are."""
    from auden_kit.data.features import FbankSettings, fbank_from_waveform
    from auden_kit.data.level import LOG_MEL_FLOOR, level_shift_db, shift_level, speech_level_db
    from auden_kit.metrics.wer import compute_wer

    _, folder = learned_ctc
    m = auden_kit.load(folder)
    st = m.assets.data_stats
    assert st["level_cuts"] == 32 and st["level_db_p5"] <= st["level_db_p50"] <= st["level_db_p95"]
    # the rule, by hand
    stats = {"level_db_p5": 10.0, "level_db_p50": 20.0, "level_db_p95": 30.0}
    assert level_shift_db(8.0, stats) == 0.0 and level_shift_db(33.0, stats) == 0.0
    assert level_shift_db(-30.0, stats) == 50.0 and level_shift_db(40.0, stats) == -20.0
    assert level_shift_db(None, stats) == 0.0 and level_shift_db(-30.0, {}) == 0.0
    # a gain on the features is the gain on the waveform
    files = _train_files(synth_corpus)
    wav = load_audio(files[0])
    s = FbankSettings()
    f0, f40 = fbank_from_waveform(wav, s), fbank_from_waveform(wav * 0.01, s)
    assert abs(speech_level_db(f0, 80) - speech_level_db(f40, 80) - 40.0) < 0.1
    live = f40 > LOG_MEL_FLOOR + 5  # synthetic speech: pauses of digital silence, an empty top band
    assert live.float().mean() > 0.2
    assert torch.allclose(shift_level(f40, 40.0, 80)[live], f0[live], atol=0.02)
    # decoding the training utterances 20 dB quieter (this tiny model: WER 37.5 -> 96.9 as they are,
    # 57.0 brought to its level)
    refs = _refs(synth_corpus)
    wavs = [load_audio(f) for f in files]

    def wer(gain, **kw):
        hyps = m.transcribe([w * gain for w in wavs], sample_rate=16000, **kw)
        return compute_wer([(f.stem, refs[f.stem], h.text) for f, h in zip(files, hyps)]).wer

    base = wer(1.0)
    assert wer(1.0, match_level=False) == base  # inside the range: untouched
    as_is, matched = wer(0.1, match_level=False), wer(0.1)
    assert matched < as_is - 25 and matched < base + 25, (base, as_is, matched)
    # a padded batch of a manifest (decode --cuts): the quiet cut is moved, the other and the padding not
    fq, fn = fbank_from_waveform(wavs[0] * 0.1, s), fbank_from_waveform(wavs[1], s)
    x = torch.full((2, max(len(fq), len(fn)) + 5, 80), -23.0)
    x[0, :len(fq)], x[1, :len(fn)] = fq, fn
    batch = {"inputs": x.clone(), "input_lens": torch.tensor([len(fq), len(fn)])}
    assert m.match_batch_levels(batch) == 1
    assert torch.equal(batch["inputs"][1], x[1]) and torch.equal(batch["inputs"][0, len(fq):], x[0, len(fq):])
    moved = speech_level_db(batch["inputs"][0, :len(fq)], 80)
    assert abs(moved - st["level_db_p50"]) < 0.01
    # the CLI does the same, and says how far it moved a file
    sf.write(tmp_path / "quiet.wav", (wavs[0] * 0.1).numpy(), 16000)
    r = subprocess.run(CLI + ["decode", "--model", str(folder), str(tmp_path / "quiet.wav")], capture_output=True,
                       text=True)
    assert r.returncode == 0 and "moved by +" in r.stderr, r.stderr
    assert r.stdout.split("\t", 1)[1].strip() == m.transcribe(wavs[0] * 0.1, sample_rate=16000).text


def test_long_files_are_read_block_by_block(tmp_path):
    """``read_blocks`` gives a long file's samples a block at a time, resampled and mixed down as
    ``load_audio`` does for the whole file; a damaged stretch is reported with where it lies."""
    from auden_kit.data.audio import read_blocks

    rng = np.random.RandomState(1)
    x = (rng.randn(44100 * 25, 2) * 0.1).astype(np.float32)
    path = tmp_path / "stereo44k.wav"
    sf.write(path, x, 44100, subtype="FLOAT")
    blocks = list(read_blocks(path, 16000, block_seconds=4.0))
    assert len(blocks) >= 6 and max(b.numel() for b in blocks) <= 4.1 * 16000
    whole = load_audio(path, 16000)
    joined = torch.cat(blocks)
    assert joined.numel() == whole.numel()
    assert float((joined - whole).abs().max()) < 1e-4
    x[44100 * 13, 1] = np.nan
    sf.write(path, x, 44100, subtype="FLOAT")
    with pytest.raises(auden_kit.AudenKitError, match=r"stereo44k.wav' holds 1 non-finite sample.* between 12.0 and 16.0 s"):
        list(read_blocks(path, 16000, block_seconds=4.0))
