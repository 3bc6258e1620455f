import gzip
import json
import subprocess
import sys

import pytest

CLI = [sys.executable, "-m", "auden_kit.cli.main"]


def _all_commands():
    """Every command path of the CLI, read from the app itself so a new command cannot be missed."""
    import typer

    from auden_kit.cli.main import app

    out = []

    def walk(cmd, path):
        out.append((path, hasattr(cmd, "commands")))
        for name, sub in getattr(cmd, "commands", {}).items():  # groups have sub-commands
            walk(sub, path + [name])

    walk(typer.main.get_command(app), [])
    return out


COMMANDS = _all_commands()


def run(*args):
    return subprocess.run(CLI + list(args), capture_output=True, text=True)


@pytest.mark.parametrize("cmd,is_group", COMMANDS, ids=lambda c: " ".join(c) or "top" if isinstance(c, list) else "")
def test_help_has_example(cmd, is_group):
    r = run(*cmd, "--help")
    assert r.returncode == 0, r.stderr
    if not is_group:  # groups list their commands; every command shows an example
        assert "Example" in r.stdout, r.stdout


def test_info_json():
    r = run("info", "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["torchaudio_ops"] is True and info["espeak_voices"] > 50 and "k2" in info


def _write(path, cuts):
    with gzip.open(path, "wt") as f:
        for c in cuts:
            f.write(json.dumps(c) + "\n")


def test_validate_names_every_bad_cut(synth_cuts, tmp_path):
    good = [json.loads(line) for line in gzip.open(synth_cuts["dev-clean"], "rt")]
    assert run("data", "validate", str(synth_cuts["dev-clean"])).returncode == 0
    assert good[0]["supervisions"][0]["alignment"]["word"]  # the synthesized cuts carry alignments
    bad = [dict(c) for c in good[:6]]
    ali = bad[5]["supervisions"][0]["alignment"]
    bad[5]["supervisions"] = [dict(bad[5]["supervisions"][0], alignment={**ali, "phone": ali["phone"][::-1]})]
    bad[0]["recording"] = dict(bad[0]["recording"], sources=[{"type": "file", "channels": [0],
                                                            "source": str(tmp_path / "nope.flac")}])
    bad[1]["supervisions"] = [dict(bad[1]["supervisions"][0], text="  ")]
    bad[2] = dict(bad[3])  # duplicate id
    bad[4]["supervisions"] = [dict(bad[4]["supervisions"][0], start=1.0, duration=bad[4]["duration"] + 1)]
    path = tmp_path / "bad.jsonl.gz"
    _write(path, bad)
    r = run("data", "validate", str(path))
    assert r.returncode == 1
    err = r.stderr
    assert f"{bad[0]['id']}: audio file" in err and "is missing" in err
    assert f"{bad[1]['id']}: supervision" in err and "empty text" in err
    assert f"{bad[3]['id']}: duplicate cut id" in err
    assert f"{bad[4]['id']}: supervision" in err and "outside" in err
    assert f"{bad[5]['id']}: supervision" in err and "phone alignment item 1" in err and "out of order" in err
    assert "problem(s)" in err


def test_validate_recordings_and_supervisions(synth_corpus, tmp_path):
    from lhotse.recipes import prepare_librispeech

    prepare_librispeech(synth_corpus, output_dir=tmp_path, num_jobs=1, dataset_parts=["dev-clean"])
    recs = tmp_path / "librispeech_recordings_dev-clean.jsonl.gz"
    sups = tmp_path / "librispeech_supervisions_dev-clean.jsonl.gz"
    r = run("data", "validate", str(recs), str(sups))
    assert r.returncode == 0, r.stderr
    r = run("data", "stats", str(recs), str(sups))
    assert r.returncode == 0 and "speakers: 4" in r.stdout and "histogram" in r.stdout


def test_missing_manifest_is_a_clear_error(tmp_path):
    r = run("data", "stats", str(tmp_path / "none.jsonl.gz"))
    assert r.returncode == 1 and "none.jsonl.gz' does not exist" in r.stderr and "Traceback" not in r.stderr


def _trans(synth_corpus) -> dict:
    return {k: v for t in synth_corpus.glob("dev-clean/*/*/*.trans.txt")
            for k, v in (line.split(" ", 1) for line in t.read_text().splitlines())}


def test_kaldi_data_directory(synth_corpus, tmp_path, monkeypatch):
    """An ESPnet/Kaldi data directory: wav.scp with a relative path and a command (an 8 kHz
    recording) that work from the recipe root, as Kaldi runs them, segments (two utterances of one recording, one ending
    at -1), text with an empty transcript, utt2spk + spk2gender; the cuts load the audio. Bad
    entries are errors naming the file, line and id."""
    import numpy as np
    import soundfile as sf
    from lhotse import CutSet, load_manifest

    flacs = sorted(synth_corpus.glob("dev-clean/*/*/*.flac"))[:3]
    trans = _trans(synth_corpus)
    root = tmp_path / "asr1"
    (root / "data" / "train").mkdir(parents=True)
    (root / "wav").mkdir()
    a, sr = sf.read(flacs[0])
    b, _ = sf.read(flacs[1])
    sf.write(root / "wav" / "A.wav", np.concatenate([a, np.zeros(8000), b]), sr)
    c, _ = sf.read(flacs[2])
    sf.write(root / "wav" / "C8k.wav", c[::2], 8000)
    d = root / "data" / "train"
    (d / "wav.scp").write_text("A wav/A.wav\nC cat wav/C8k.wav |\n")
    (d / "segments").write_text(f"A-1 A 0.0 {len(a) / sr:.3f}\nA-2 A {len(a) / sr + 0.5:.3f} -1\nC-1 C 0 -1\n")
    (d / "text").write_text(f"A-1 {trans[flacs[0].stem]}\nA-2 {trans[flacs[1].stem]}\nC-1\n")
    (d / "utt2spk").write_text("A-1 s1\nA-2 s2\nC-1 s1\n")
    (d / "spk2gender").write_text("s1 m\ns2 f\n")
    (d / "utt2dur").write_text("A-1 2.0\n")  # Kaldi's own bookkeeping: not a label
    (d / "utt2num_samples").write_text("A-1 32000\n")  # ESPnet's
    monkeypatch.chdir(tmp_path)  # paths in wav.scp are relative to asr1/, as Kaldi runs there
    r = run("data", "folder", "asr1/data", "--parts", "tr=train", "--prefix", "k", "--out-dir", "man")
    assert r.returncode == 0 and (tmp_path / "man" / "k_supervisions_tr.jsonl.gz").is_file(), r.stderr  # renamed part
    r = run("data", "folder", "asr1/data", "--parts", "train", "--prefix", "k", "--out-dir", "man")
    assert r.returncode == 0, r.stderr
    recs = load_manifest(tmp_path / "man" / "k_recordings_train.jsonl.gz")
    sups = load_manifest(tmp_path / "man" / "k_supervisions_train.jsonl.gz")
    assert {x.id: x.sampling_rate for x in recs} == {"A": 16000, "C": 8000}
    by = {s.id: s for s in sups}
    assert by["A-2"].start == pytest.approx(len(a) / sr + 0.5, abs=1e-3)
    assert by["A-2"].end == pytest.approx(recs["A"].duration, abs=1e-3)
    assert (by["A-1"].text, by["A-2"].text, by["C-1"].text) == (trans[flacs[0].stem], trans[flacs[1].stem], "")
    assert [(by[u].speaker, by[u].gender) for u in ("A-1", "A-2", "C-1")] == [("s1", "M"), ("s2", "F"), ("s1", "M")]
    assert not any(s.custom for s in sups)
    cuts = CutSet.from_manifests(recordings=recs, supervisions=sups).trim_to_supervisions()
    audio = {c.supervisions[0].id: c.load_audio() for c in cuts}
    assert audio["A-2"].shape[1] == pytest.approx(len(b), abs=20)
    assert audio["C-1"].shape[1] == len(c[::2])
    # bad entries: named with their file and line
    cases = [
        ("wav.scp", "A wav/none.wav\n", ["wav.scp' line 1", "'A'", "none.wav' not found"]),
        ("wav.scp", "A false |\n", ["wav.scp' line 1", "the command 'false' failed"]),
        ("wav.scp", "A raw.ark:123\n", ["Kaldi archive"]),
        ("wav.scp", "A\n", ["wav.scp' line 1", "expected '<recording-id> <path>'"]),
        ("segments", "A-1 A 0.0 99.0\n", ["segments' line 1", "'A-1'", "not inside recording 'A'"]),
        ("segments", "A-1 B 0.0 1.0\n", ["segments' line 1", "recording 'B'"]),
    ]
    keep = {n: (d / n).read_text() for n in ("wav.scp", "segments")}
    for name, text, needles in cases:
        (d / name).write_text(text)
        r = run("data", "folder", "asr1/data", "--parts", "train", "--out-dir", "bad")
        assert r.returncode == 1 and "Traceback" not in r.stderr, (name, text, r.stderr)
        assert all(n in r.stderr for n in needles), (needles, r.stderr)
        (d / name).write_text(keep[name])
    assert not (tmp_path / "bad").exists() or not any((tmp_path / "bad").iterdir())
    feats = tmp_path / "feats_only"
    feats.mkdir()
    (feats / "feats.scp").write_text("A-1 raw_fbank.1.ark:10\n")
    r = run("data", "folder", tmp_path, "--parts", "feats_only", "--out-dir", "bad")
    assert r.returncode == 1 and "feats.scp but no wav.scp" in r.stderr, r.stderr
    # an ESPnet st1 data directory: texts per language and case; the spoken language's is the transcript
    (d / "text").unlink()
    (d / "text.lc.rm.en").write_text("A-1 hello world\nA-2 good morning\nC-1 the cat\n")
    (d / "text.tc.en").write_text("A-1 Hello world.\nA-2 Good morning.\nC-1 The cat.\n")
    (d / "text.lc.rm.de").write_text("A-1 hallo welt\nA-2 guten morgen\n")
    (d / "text.tc.de").write_text("A-1 Hallo Welt.\nA-2 Guten Morgen.\nC-1\n")
    (d / "text.bak").write_text("A-1 not a language\n")
    (d / "text.yue").write_text("A-1 \u4f60\u597d\u4e16\u754c\n")  # a three-letter code (Cantonese)
    r = run("data", "folder", "asr1/data", "--parts", "train", "--out-dir", "st")
    assert r.returncode == 1 and "--language" in r.stderr and "text.tc.de" in r.stderr, r.stderr
    r = run("data", "folder", "asr1/data", "--parts", "train", "--out-dir", "st", "--language", "en")
    assert r.returncode == 0, r.stderr
    assert "text.bak' is not read: 'bak' is not a language code" in r.stderr, r.stderr
    by = {x.id: x for x in load_manifest(tmp_path / "st" / "mydata_supervisions_train.jsonl.gz")}
    assert by["A-1"].custom["translation"] == [{"language": "de", "text": "Hallo Welt."},
                                               {"language": "yue", "text": "\u4f60\u597d\u4e16\u754c"}]
    assert [(by[u].text, by[u].language) for u in ("A-1", "C-1")] == [("Hello world.", "en"), ("The cat.", "en")]
    assert by["A-2"].custom["translation"] == [{"language": "de", "text": "Guten Morgen."}]
    assert not (by["C-1"].custom or {}).get("translation")  # an empty translation is none
    r = run("data", "validate", tmp_path / "st" / "mydata_supervisions_train.jsonl.gz")
    assert r.returncode == 0, r.stdout + r.stderr


def test_folder_with_transcript_files_beside_the_audio(synth_corpus, tmp_path):
    """a.wav + a.txt (or a.lab): the transcript of a; files without one are named in a warning."""
    import shutil

    from lhotse import load_manifest

    flacs = sorted(synth_corpus.glob("dev-clean/*/*/*.flac"))[:3]
    trans = _trans(synth_corpus)
    part = tmp_path / "corpus" / "train"
    part.mkdir(parents=True)
    for i, f in enumerate(flacs):
        shutil.copy(f, part / f.name)
        if i < 2:
            (part / f.name).with_suffix(".txt" if i == 0 else ".lab").write_text(trans[f.stem].lower() + "\n")
    r = run("data", "folder", str(tmp_path / "corpus"), "--parts", "train", "--out-dir", str(tmp_path / "man"))
    assert r.returncode == 0, r.stderr
    assert "1 of 3 audio files have no transcript file" in r.stderr and flacs[2].name in r.stderr
    sups = {s.id: s.text for s in load_manifest(tmp_path / "man" / "mydata_supervisions_train.jsonl.gz")}
    assert sups == {flacs[0].stem: trans[flacs[0].stem].lower(), flacs[1].stem: trans[flacs[1].stem].lower()}
    # unreadable files: all named in one error (not one per run), the reason in one line, nothing written
    for name in ("bad1.wav", "bad2.flac"):
        (part / name).write_bytes(b"not audio at all")
        (part / name).with_suffix(".txt").write_text("words\n")
    r = run("data", "folder", str(tmp_path / "corpus"), "--parts", "train", "--out-dir", str(tmp_path / "man2"))
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert "2 of 4 audio file(s) cannot be read; nothing was written" in r.stderr, r.stderr
    assert "bad1.wav" in r.stderr and "bad2.flac" in r.stderr and "Exception #" not in r.stderr
    assert "Using audioread" not in r.stderr  # Lhotse's fallback note on the root logger
    assert not (tmp_path / "man2").exists()
