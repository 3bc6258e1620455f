import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

CLI = [sys.executable, "-m", "auden_kit.cli.main"]


def run(*args, cwd=None):
    return subprocess.run(CLI + [str(a) for a in args], capture_output=True, text=True, cwd=cwd)


def run_on_terminal(*args) -> tuple[int, str, str]:
    """The CLI with stderr on a pseudo-terminal of 120 columns (progress bars are drawn only on a
    terminal): exit code, stdout, what the terminal showed."""
    import fcntl
    import os
    import pty
    import struct
    import termios
    import threading

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    shown = bytearray()

    def read():
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the other side closed
                return
            if not chunk:
                return
            shown.extend(chunk)

    reader = threading.Thread(target=read)
    reader.start()
    p = subprocess.run(CLI + [str(a) for a in args], stdout=subprocess.PIPE, stderr=slave, text=True)
    os.close(slave)
    reader.join(timeout=10)
    os.close(master)
    return p.returncode, p.stdout, shown.decode(errors="replace")


def test_decode_files_any_rate_channels_and_a_corrupt_one(trained_model, synth_corpus, tmp_path):
    from auden_kit.data.audio import load_audio
    import torchaudio.functional as AF

    src = sorted(synth_corpus.glob("test-clean/*/*/*.flac"))[0]
    wav = load_audio(src)
    files = []
    for sr, ch, ext in [(8000, 1, "wav"), (16000, 2, "flac"), (44100, 2, "wav"), (22050, 1, "mp3")]:
        x = AF.resample(wav, 16000, sr).numpy()
        data = np.stack([x, 0.7 * x], axis=1) if ch == 2 else x
        p = tmp_path / f"a_{sr}_{ch}.{ext}"
        sf.write(p, data, sr)
        files.append(p)
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    r = run("decode", "--model", trained_model, files[0], bad, *files[1:])
    assert r.returncode == 1
    assert "broken.wav" in r.stderr and "Traceback" not in r.stderr
    lines = r.stdout.strip().splitlines()
    assert [line.split("\t")[0] for line in lines] == [str(f) for f in files]
    r = run("decode", "--model", trained_model, "--output", "json", files[0])
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert set(d) == {"file", "text", "tokens", "times"} and len(d["tokens"]) == len(d["times"])
    assert all(b >= a for a, b in zip(d["times"], d["times"][1:]))


def test_decode_manifest_writes_result_files(trained_model, fbank_cuts, tmp_path):
    for method in ("greedy", "modified_beam_search", "ctc_greedy", "ctc_prefix_beam"):
        r = run("decode", "--model", trained_model, "--cuts", fbank_cuts["test-clean"], "--method", method,
                "--out-dir", tmp_path)
        assert r.returncode == 0, r.stderr
        assert "%WER" in r.stdout and "RTF" in r.stdout
        assert "s audio [" not in r.stderr  # no progress bar in a log file
    # on a terminal: a bar over the manifest's seconds of audio, with an ETA, to 100 %
    from lhotse import load_manifest

    total = sum(c.duration for c in load_manifest(fbank_cuts["test-clean"]))
    rc, out, shown = run_on_terminal("decode", "--model", trained_model, "--cuts", fbank_cuts["test-clean"],
                                     "--out-dir", tmp_path.parent / f"{tmp_path.name}-tty")
    assert rc == 0 and "%WER" in out, shown[-2000:]
    bars = [ln for ln in shown.replace("\r", "\n").splitlines() if " s audio [" in ln]
    assert bars and f"{total:.0f}/{total:.0f} s audio" in bars[-1] and "100%" in bars[-1], shown[-2000:]
    names = {p.name.split("-")[0] for p in tmp_path.iterdir()}
    assert names <= {"recogs", "errs", "wer", "word", "hyp", "ref"} and {"recogs", "errs", "wer", "hyp", "ref"} <= names
    errs = next(tmp_path.glob("errs-*greedy*.txt")).read_text()
    assert "%WER" in errs and "PER-UTT DETAILS" in errs
    # the Kaldi text files score the same with `auden-kit wer`
    name = next(tmp_path.glob("errs-*-greedy.txt")).name[len("errs-"):-len(".txt")]
    r = run("wer", tmp_path / f"ref-{name}.txt", tmp_path / f"hyp-{name}.txt")
    summary = (tmp_path / f"errs-{name}.txt").read_text().splitlines()[0]
    assert r.returncode == 0 and r.stdout.startswith(summary), (r.stdout, summary)
    # the summary's WER is what the recognitions give, recomputed here with kaldialign
    import kaldialign

    recogs = next(tmp_path.glob("recogs-*-greedy.txt")).read_text().splitlines()
    refs = [eval(line.split("ref=", 1)[1]) for line in recogs if "\tref=" in line]
    hyps = [eval(line.split("hyp=", 1)[1]) for line in recogs if "\thyp=" in line]
    errors = sum(kaldialign.edit_distance(r, h)["total"] for r, h in zip(refs, hyps))
    wer = 100 * errors / sum(len(r) for r in refs)
    summary = next(tmp_path.glob("wer-summary-*-greedy.txt")).read_text()
    assert f"{wer:.2f}" in summary, (wer, summary)
    # the synthesized test cuts carry their word alignment: every correctly recognised word is timed
    correct = sum(a == b for r, h in zip(refs, hyps) for a, b in kaldialign.align(r, h, "*"))
    timing = list(tmp_path.glob("word-times-*-greedy.json"))
    assert bool(timing) == (correct > 0)
    if timing:
        t = json.loads(timing[0].read_text())
        assert t["timed_words"] == correct and 0 <= t["within_100ms"] <= t["within_200ms"] <= 100
    r = run("decode", "--model", trained_model, "--cuts", fbank_cuts["test-clean"], "--method", "nope")
    assert r.returncode == 1 and "unknown decoding method 'nope'" in r.stderr


def test_scoring_case_folded_when_asked_and_a_note_when_it_would_matter(trained_model, fbank_cuts, tmp_path):
    """References written for people ("Hello, world.") against a model's upper-case words: the WER
    says 100 % and a note gives the case-folded figure; `--normalize` scores that way."""
    from auden_kit.results import TextResult
    from auden_kit.tasks.asr import AsrTask

    res = [TextResult(cut_id="a", text="HELLO WORLD", ref="Hello, world."),
           TextResult(cut_id="b", text="I'M HERE", ref="I'm there!")]
    plain = AsrTask().write_results(res, tmp_path, "plain")
    assert plain.startswith("%WER 100.00") and "(--normalize) the WER is 25.00" in plain, plain
    folded = AsrTask().write_results(res, tmp_path, "folded", normalize=True)
    assert folded.startswith("%WER 25.00") and "case-folded" in folded and "note" not in folded, folded
    assert "hyp=['hello', 'world']" in (tmp_path / "recogs-folded.txt").read_text()
    same = AsrTask().write_results([TextResult(cut_id="a", text="HELLO", ref="HELLO")], tmp_path, "same")
    assert "note" not in same
    # cuts without a reference: listed in hyp-NAME.txt, left out of the WER with a note (none: not scored)
    part = AsrTask().write_results(res + [TextResult(cut_id="c", text="MORE", ref=None)], tmp_path, "part",
                                   normalize=True)
    assert part.startswith("%WER 25.00") and "1 of 3 cuts have no reference text (e.g. 'c')" in part, part
    assert (tmp_path / "hyp-part.txt").read_text() == "a HELLO WORLD\nb I'M HERE\nc MORE\n"
    assert (tmp_path / "ref-part.txt").read_text() == "a Hello, world.\nb I'm there!\n"
    r = run("wer", tmp_path / "ref-part.txt", tmp_path / "hyp-part.txt", "--normalize")
    assert r.stdout.startswith("%WER 25.00"), r.stdout + r.stderr
    none = AsrTask().write_results([TextResult(cut_id="c", text="MORE", ref=None)], tmp_path, "none")
    assert "1 cuts decoded; they have no reference text, so nothing is scored" in none, none
    from lhotse import load_manifest
    from lhotse.utils import fastcopy

    unlabeled = tmp_path / "unlabeled.jsonl.gz"
    load_manifest(fbank_cuts["test-clean"]).map(
        lambda c: fastcopy(c, supervisions=[fastcopy(x, text=None) for x in c.supervisions])).to_file(unlabeled)
    r = run("decode", "--model", trained_model, "--cuts", unlabeled, "--out-dir", tmp_path, "--name", "u")
    assert r.returncode == 0 and "nothing is scored" in r.stdout, r.stdout + r.stderr
    assert len((tmp_path / "hyp-u.txt").read_text().splitlines()) == len(load_manifest(unlabeled))
    r = run("decode", "--model", trained_model, "--cuts", fbank_cuts["test-clean"], "--normalize", "--out-dir", tmp_path)
    assert r.returncode == 0 and "(case-folded, without punctuation)" in r.stdout, r.stderr
    r = run("decode", "--model", trained_model, "--normalize", "x.wav")
    assert r.returncode == 1 and "--normalize scores ASR output against references" in r.stderr, r.stderr


def test_wer_command_scores_kaldi_text_files(tmp_path):
    """`auden-kit wer REF HYP` as Kaldi's compute-wer: by utterance id, a missing hypothesis counts
    as deleted, --normalize / --cer / --plain; hand-computed figures."""
    ref, hyp = tmp_path / "ref", tmp_path / "hyp"
    ref.write_text("u1 Hello, world!\nu2 the cat sat\nu3 good morning\n")
    hyp.write_text("u2 the cat sat down\nu1 HELLO WORLD\n")
    r = run("wer", ref, hyp)  # u1: 2 sub; u2: 1 ins; u3: 2 del -> 5 / 7
    assert r.returncode == 0 and r.stdout.startswith("%WER 71.43 [ 5 / 7, 1 ins, 2 del, 2 sub ]"), r.stdout + r.stderr
    assert "3 utterances" in r.stdout and "1 of 3 reference utterance(s) have no hypothesis" in r.stdout
    r = run("wer", ref, hyp, "--normalize", "--json", "--out-dir", tmp_path / "out")
    out = json.loads(r.stdout)
    assert out["wer"] == pytest.approx(300 / 7, abs=1e-3) and out["missing"] == 1 and out["sub"] == 0
    assert out["unscored_hypotheses"] == 0
    assert "u3:\t(good->*) (morning->*)" in (tmp_path / "out" / "errs-score.txt").read_text()
    (tmp_path / "p1").write_text("abc d\n\u4f60\u597d\n")
    (tmp_path / "p2").write_text("abd d\n\u4f60\u597d\n")
    r = run("wer", tmp_path / "p1", tmp_path / "p2", "--plain", "--cer")  # 1 of 6 characters
    assert r.returncode == 0 and r.stdout.startswith("%CER 16.67 [ 1 / 6,"), r.stdout + r.stderr
    r = run("wer", hyp, ref)  # swapped: u3 has no reference
    assert r.returncode == 0 and "1 hypothesis utterance(s) have no reference and are not scored, e.g. 'u3'" \
        in r.stdout, r.stdout
    for args, needle in (((tmp_path / "p1", hyp), "need --plain"), ((ref, tmp_path / "nope"), "does not exist"),
                         ((tmp_path / "p1", ref, "--plain"), "must pair up")):
        r = run("wer", *args)
        assert r.returncode == 1 and needle in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_average_cli_and_bad_model_dir(trained_model, tmp_path):
    exp = trained_model.parent
    r = run("average", "--exp-dir", exp, "--avg", "2", "--no-use-averaged-model", "--out", tmp_path / "m")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "m" / "model.safetensors").is_file()
    r = run("decode", "--model", tmp_path / "nothing", "x.wav")
    assert r.returncode == 1 and "is not a model folder" in r.stderr


def test_recipe_ls_and_new(tmp_path):
    import shutil
    from pathlib import Path

    egs = Path(__file__).resolve().parents[1] / "egs"
    r = run("recipe", "ls", "--egs", egs)
    assert r.returncode == 0, r.stderr
    assert "mini_synth" in r.stdout and "stage 4: train" in r.stdout
    copy = tmp_path / "egs"
    shutil.copytree(egs / "TEMPLATE", copy / "TEMPLATE")
    r = run("recipe", "new", "mydata", "--egs", copy)
    assert r.returncode == 0, r.stderr
    assert (copy / "mydata" / "run.sh").is_file() and "mydata" in (copy / "mydata" / "README.md").read_text()
    assert run("recipe", "new", "mydata", "--egs", copy).returncode == 1
    r = run("recipe", "new", "small", "--task", "distill", "--egs", copy)  # no TEMPLATE_ssl in the copy
    assert r.returncode == 1 and "TEMPLATE_ssl" in r.stderr, r.stderr
    shutil.copytree(egs / "TEMPLATE_ssl", copy / "TEMPLATE_ssl")
    r = run("recipe", "new", "small", "--task", "distill", "--egs", copy)  # distillation: the ssl template
    assert r.returncode == 0 and "--teacher DIR" in r.stdout, r.stderr
    assert "teacher=" in (copy / "small" / "run.sh").read_text()


def test_streaming_decode_of_files(trained_model, bpe_dir, synth_corpus, tmp_path):
    """A causal model decodes a file as a stream; the result does not depend on the piece size.
    A non-causal model is refused with a message, not a traceback."""
    from auden_kit.data.features import FbankSettings
    from auden_kit.hub import save_pretrained
    from auden_kit.tokenizers import load_tokenizer
    from conftest import tiny_causal_asr

    tok = load_tokenizer(bpe_dir)
    model = tiny_causal_asr(tok.vocab_size)
    cfg = model.cfg
    folder = save_pretrained(tmp_path / "causal", "asr", cfg, model, tok, FbankSettings())
    wav = sorted(synth_corpus.glob("test-clean/*/*/*.flac"))[0]
    outs = []
    for ms in (100, 320):
        r = run("decode", "--model", folder, "--streaming", "--piece-ms", ms, "--output", "json", wav)
        assert r.returncode == 0, r.stderr
        outs.append(json.loads(r.stdout))
    assert outs[0] == outs[1] and outs[0]["tokens"]
    # '-' with --streaming: the WAV piped in is read live as it arrives (a pipe's header has no
    # sizes; any PCM width, float, rate, channels), the same result as the file
    import struct

    import torch
    import torchaudio.functional as AF

    x = sf.read(wav, dtype="float32")[0]
    for subtype, rate, channels in (("PCM_16", 16000, 1), ("PCM_24", 16000, 2), ("FLOAT", 16000, 1), ("PCM_16", 8000, 2)):
        y = AF.resample(torch.from_numpy(x), 16000, rate).numpy() if rate != 16000 else x
        f = tmp_path / f"s-{subtype}-{rate}-{channels}.wav"
        sf.write(f, np.stack([y] * channels, 1) if channels > 1 else y, rate, subtype=subtype)
        by_path = run("decode", "--model", folder, "--streaming", "--output", "json", f)
        b = bytearray(f.read_bytes())
        b[4:8] = b[b.index(b"data") + 4:b.index(b"data") + 8] = struct.pack("<I", 0xFFFFFFFF)
        r = subprocess.run(CLI + ["decode", "--model", str(folder), "--streaming", "--output", "json", "-"],
                           input=bytes(b), capture_output=True)
        assert r.returncode == 0, r.stderr.decode()[-2000:]
        piped = json.loads(r.stdout)
        assert piped.pop("file") == "-" and piped == {k: v for k, v in json.loads(by_path.stdout).items() if k != "file"}
        if (subtype, rate) == ("PCM_16", 16000):
            assert piped["tokens"] == outs[0]["tokens"]
    r = subprocess.run(CLI + ["decode", "--model", str(folder), "--streaming", "-"], input=wav.read_bytes(),
                       capture_output=True)  # FLAC: not read live
    assert r.returncode == 1 and "not a WAV stream" in r.stderr.decode() and "Traceback" not in r.stderr.decode()
    # digital silence streamed: no words (this random model reads tokens into it when unchecked)
    import auden_kit
    from auden_kit.data.audio import load_audio

    silent = tmp_path / "silence.wav"
    sf.write(silent, np.zeros(16000 * 5, dtype="float32"), 16000)
    r = run("decode", "--model", folder, "--streaming", "--output", "json", silent)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["text"] == "" and json.loads(r.stdout)["tokens"] == []
    s = auden_kit.load(folder).stream()
    s.accept(torch.zeros(16000 * 3), 16000)
    assert s.partial.tokens == [] and s.decoder.search.hyps[0].tokens
    s.accept(load_audio(wav, 16000), 16000)  # speech after the silence is read
    assert s.finish().tokens
    r = run("decode", "--model", trained_model, "--streaming", wav)
    assert r.returncode == 1 and "causal" in r.stderr and "Traceback" not in r.stderr
    r = run("decode", "--model", folder, "--streaming", "--method", "modified_beam_search", wav)
    assert r.returncode == 1 and "greedy" in r.stderr and "Traceback" not in r.stderr


def test_export_torchscript_matches_eager(trained_model, tmp_path):
    import torch

    from auden_kit.hub import load_pretrained

    r = run("export", "--model", trained_model, "--out", tmp_path / "jit")
    assert r.returncode == 0, r.stderr
    names = sorted(p.name for p in (tmp_path / "jit").glob("*.pt"))
    assert names == ["ctc.pt", "decoder.pt", "encoder.pt", "joiner.pt"]
    ctc = torch.jit.load(str(tmp_path / "jit" / "ctc.pt"))
    assert (tmp_path / "jit" / "tokenizers" / "text" / "tokenizer.yaml").is_file() and (tmp_path / "jit" / "config.yaml").is_file()
    lm = load_pretrained(trained_model)
    m = lm.model
    enc = torch.jit.load(str(tmp_path / "jit" / "encoder.pt"))
    dec = torch.jit.load(str(tmp_path / "jit" / "decoder.pt"))
    joi = torch.jit.load(str(tmp_path / "jit" / "joiner.pt"))
    torch.manual_seed(0)
    with torch.no_grad():
        for T in (123, 321):  # lengths other than the traced one
            x, lens = torch.randn(2, T, 80), torch.tensor([T, T - 20])
            ref, ref_lens = m.encoder(x, lens)
            out, out_lens = enc(x, lens)
            assert torch.equal(out_lens, ref_lens) and torch.allclose(out, ref, atol=1e-4)
        y = torch.tensor([[-1, 0], [5, 7]])
        d = dec(y)
        assert torch.allclose(d, m.decoder(y, need_pad=False).squeeze(1), atol=1e-5)
        e = ref[:, 0]
        assert torch.allclose(joi(e, d), m.joiner(e, d), atol=1e-5)
        assert torch.allclose(ctc(ref), m.ctc_output(ref).log_softmax(-1), atol=1e-5)
    r = run("export", "--model", trained_model, "--out", tmp_path / "x", "--format", "tflite")
    assert r.returncode == 1 and "--format" in r.stderr


def test_export_onnx_matches_eager(trained_model, tmp_path):
    import numpy as np
    import torch

    import os

    if os.environ.get("CI"):  # onnx/onnxruntime are test extras: in CI this test must run, not skip
        import onnxruntime as ort
    else:
        ort = pytest.importorskip("onnxruntime")
    from auden_kit.hub import load_pretrained

    r = run("export", "--model", trained_model, "--out", tmp_path / "onnx", "--format", "onnx")
    assert r.returncode == 0, r.stderr
    lm = load_pretrained(trained_model)
    enc = ort.InferenceSession(str(tmp_path / "onnx" / "encoder.onnx"))
    joiner = ort.InferenceSession(str(tmp_path / "onnx" / "joiner.onnx"))
    decoder = ort.InferenceSession(str(tmp_path / "onnx" / "decoder.onnx"))
    torch.manual_seed(0)
    with torch.no_grad():
        for T in (123, 1000):
            x, lens = torch.randn(2, T, 80), torch.tensor([T, T - 20])
            ref, ref_lens = lm.model.encoder(x, lens)
            out, out_lens = enc.run(None, {"x": x.numpy(), "x_lens": lens.numpy()})
            assert out_lens.tolist() == ref_lens.tolist() and np.abs(out - ref.numpy()).max() < 1e-4
        y = torch.tensor([[-1, 0], [5, 7]])
        (d,) = decoder.run(None, {"y": y.numpy()})
        assert np.abs(d - lm.model.decoder(y, need_pad=False).squeeze(1).numpy()).max() < 1e-5
        (logits,) = joiner.run(None, {"encoder_out": out[:, 0], "decoder_out": d})
        assert np.abs(logits - lm.model.joiner(torch.from_numpy(out[:, 0]), torch.from_numpy(d)).numpy()).max() < 1e-4


def test_attention_decoder_trains_and_rescores(fbank_cuts, bpe_dir, tmp_path):
    """A transducer + CTC + attention-decoder model trains (its loss is logged) and its model
    folder decodes a manifest with --method attention_rescoring."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from auden_kit.training.trainer import Trainer, export_model_folder
    from conftest import tiny_train_config

    cfg = tiny_train_config(tmp_path / "exp", fbank_cuts, bpe_dir, max_steps=3)
    cfg.model.update(use_attention_decoder=True, attention_decoder_dim=32, attention_decoder_layers=1,
                     attention_decoder_heads=2, attention_decoder_ff_dim=64)
    Trainer(cfg).train()
    ea = EventAccumulator(str(tmp_path / "exp" / "tensorboard"))
    ea.Reload()
    assert "train/attention_decoder_loss" in ea.Tags()["scalars"]
    folder = export_model_folder(tmp_path / "exp", tmp_path / "model", avg=1, step_checkpoints=True)
    # a run stopped by max_steps has no epoch checkpoint: `average` (as recipes call it) takes the steps'
    r = run("average", "--exp-dir", tmp_path / "exp", "--out", tmp_path / "model2")
    assert r.returncode == 0 and "averaging its step checkpoints (checkpoint-3.pt)" in r.stderr, r.stderr
    r = run("average", "--exp-dir", tmp_path / "exp", "--out", tmp_path / "model3", "--epoch", "2")
    assert r.returncode == 1 and "no epoch-*.pt files" in r.stderr, r.stderr
    r = run("decode", "--model", folder, "--cuts", fbank_cuts["test-clean"], "--method", "attention_rescoring",
            "--beam", "3", "--out-dir", tmp_path / "dec")
    assert r.returncode == 0, r.stderr
    assert "%WER" in r.stdout and list((tmp_path / "dec").glob("recogs-*attention_rescoring*.txt"))


def test_decode_a_kaldi_data_directory(trained_model, synth_corpus, tmp_path):
    """`decode --data-dir`: a Kaldi/ESPnet data directory (a path and a command in wav.scp, two
    segments of one recording, an 8 kHz recording) is decoded at the model's rate; with `text` it is
    scored as a manifest (icefall-style files named after the folder), without one a line per utterance."""
    flacs = sorted(synth_corpus.glob("test-clean/*/*/*.flac"))[:3]
    trans = {}
    for t in synth_corpus.glob("test-clean/*/*/*.trans.txt"):
        trans.update(line.split(" ", 1) for line in t.read_text().splitlines())
    d = tmp_path / "data" / "test"
    d.mkdir(parents=True)
    a, sr = sf.read(flacs[0])
    b, _ = sf.read(flacs[1])
    sf.write(tmp_path / "A.wav", np.concatenate([a, np.zeros(8000), b]), sr)
    c, _ = sf.read(flacs[2])
    sf.write(tmp_path / "C8k.wav", c[::2], 8000)
    (d / "wav.scp").write_text(f"A {tmp_path / 'A.wav'}\nC cat {tmp_path / 'C8k.wav'} |\n")
    (d / "segments").write_text(f"A-1 A 0.0 {len(a) / sr:.3f}\nA-2 A {len(a) / sr + 0.5:.3f} -1\nC-1 C 0 -1\n")
    r = run("decode", "--model", trained_model, "--data-dir", d)
    assert r.returncode == 0, r.stderr
    assert [line.split("\t")[0] for line in r.stdout.splitlines()] == ["A-1", "A-2", "C-1"]
    (d / "text").write_text(f"A-1 {trans[flacs[0].stem]}\nA-2 {trans[flacs[1].stem]}\nC-1 {trans[flacs[2].stem]}\n")
    r = run("decode", "--model", trained_model, "--data-dir", d, "--out-dir", tmp_path / "dec")
    assert r.returncode == 0, r.stderr
    assert "test-greedy: %WER" in r.stdout
    recogs = (tmp_path / "dec" / "recogs-test-greedy.txt").read_text()
    assert all(f"{u}:\tref=" in recogs for u in ("A-1", "A-2", "C-1"))
    (d / "text").write_text(f"A-1 {trans[flacs[0].stem]}\nA-2 {trans[flacs[1].stem]}\n")  # C-1 has none
    r = run("decode", "--model", trained_model, "--data-dir", d)
    assert r.returncode == 0 and "note: 1 of 3 utterances" in r.stderr, r.stderr
    assert [line.split("\t")[0] for line in r.stdout.splitlines()] == ["A-1", "A-2", "C-1"], r.stdout
    r = run("decode", "--model", trained_model, "--data-dir", d, "--cuts", tmp_path / "x.jsonl.gz")
    assert r.returncode == 1 and "one of them" in r.stderr
