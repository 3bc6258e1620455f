"""Voice data: the synthesized voice corpus, folder manifests with any utt2<label>, trial lists,
age groups and classification reports."""

import json
import random
import subprocess
import sys

import pytest

CLI = [sys.executable, "-m", "auden_kit.cli.main"]


def _map(path):
    return dict(line.split(maxsplit=1) for line in path.read_text().splitlines())


def test_voice_corpus_speakers_are_unseen_and_labels_real(voice_corpus):
    rows = [r.split("\t") for r in (voice_corpus / "speakers.tsv").read_text().splitlines()]
    head, rows = rows[0], [dict(zip(rows[0], r)) for r in rows[1:]]
    assert head[:3] == ["part", "id", "voice"]
    train = {r["from"] for r in rows if r["part"] == "train"}
    test = {r["from"] for r in rows if r["part"] == "test"}
    assert len(train) == 3 and len(test) == 2 and not train & test  # test voices never trained on
    # each speaker is a variant file of its own, with formants scaled from its base variant
    scales = [(r["from"], float(r["formant_scale"])) for r in rows]  # speakers of one variant differ
    assert len(set(scales)) == len(scales) and all(0.85 <= x <= 1.15 for _, x in scales)
    f = voice_corpus / ".espeak-data" / "voices" / "!v" / f"ak-{rows[0]['id']}"
    assert f.is_file() and "formant 1" in f.read_text()
    n_train = sum(r["part"] == "train" for r in rows)
    assert n_train == 6 and sum(r["part"] == "test" for r in rows) == 4
    for part, n in (("train", 4 * n_train), ("dev", 2 * n_train), ("test", 12)):
        spk = _map(voice_corpus / part / "utt2spk")
        style = _map(voice_corpus / part / "utt2style")
        gender = _map(voice_corpus / part / "utt2gender")
        assert len(spk) == n == len(list((voice_corpus / part).rglob("*.flac")))
        assert set(style.values()) <= {"calm", "neutral", "lively"} and len(set(style.values())) >= 2
        by_id = {r["id"]: r["gender"] for r in rows}
        assert all(gender[u] == by_id[s] for u, s in spk.items())
    dev_spk = set(_map(voice_corpus / "dev" / "utt2spk").values())
    assert dev_spk == set(_map(voice_corpus / "train" / "utt2spk").values())


def test_speaking_style_is_acoustic(voice_corpus):
    """Calm utterances are slower than lively ones of the same speaker (seconds per character)."""
    import soundfile as sf

    text, style, spk = (_map(voice_corpus / "train" / n) for n in ("text", "utt2style", "utt2spk"))
    rate: dict = {}
    for f in (voice_corpus / "train").rglob("*.flac"):
        u = f.stem
        rate.setdefault((spk[u], style[u]), []).append(sf.info(str(f)).duration / len(text[u].replace(" ", "")))
    pairs = [(min(rate[(s, "calm")]), max(rate[(s, "lively")])) for s in set(spk.values())
             if (s, "calm") in rate and (s, "lively") in rate]
    assert pairs and sum(c > lv for c, lv in pairs) >= len(pairs) - 1


def test_speaker_variant_has_the_default_pitch_span_and_no_tunes_of_its_own():
    """A style must sound alike on every voice: the variant's pitch span (7-fold different among
    espeak's variants) becomes espeak's default proportion of its base pitch; its tunes go."""
    from auden_kit.data.corpora.voices import speaker_variant

    wide = "name Rob\npitch  50 130 // low, wide\nintonation 2\nformant 1 95 100 60\nvoicing 115\n"
    out = speaker_variant(wide, 1.05, "ak-1").splitlines()
    assert out[:2] == ["name ak-1", "pitch 50 72"]  # 82:118 of espeak's default, on base 50
    assert not any(ln.startswith("intonation") for ln in out) and "voicing 115" in out
    assert "formant 1 100 100 60" in out  # 95 * 1.05, the vocal-tract scale
    assert "pitch 82 118" in speaker_variant("name m\n", 1.0, "ak-2")  # no pitch line: espeak's default
    narrow = speaker_variant("pitch 204 176\n", 1.0, "ak-3")  # aunty: MAX below BASE
    assert "pitch 204 294" in narrow


def test_folder_manifests_read_every_map(voice_corpus, tmp_path):
    from lhotse import load_manifest

    part = tmp_path / "train"
    part.mkdir()
    for f in (voice_corpus / "train").rglob("*.flac"):
        (part / f.name).symlink_to(f)
    utts = sorted(_map(voice_corpus / "train" / "utt2spk"))
    (part / "utt2spk").write_text((voice_corpus / "train" / "utt2spk").read_text())
    (part / "utt2gender").write_text("".join(f"{u} {'female' if i % 2 else 'Male'}\n" for i, u in enumerate(utts)))
    (part / "utt2age").write_text("".join(f"{u} {20 + i}\n" for i, u in enumerate(utts[:-1])))
    r = subprocess.run(CLI + ["data", "folder", str(tmp_path), "--parts", "train", "--prefix", "x", "--out-dir",
                              str(tmp_path / "m")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    sups = {s.id: s for s in load_manifest(tmp_path / "m" / "x_supervisions_train.jsonl.gz")}
    assert len(sups) == len(utts) and sups[utts[0]].gender == "M" and sups[utts[1]].gender == "F"
    assert sups[utts[0]].custom == {"age": "20"} and sups[utts[-1]].custom is None and sups[utts[0]].text is None
    (part / "utt2spk").write_text("ghost spk\n")
    r = subprocess.run(CLI + ["data", "folder", str(tmp_path), "--parts", "train", "--out-dir", str(tmp_path / "m")],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "ghost" in r.stderr and "Traceback" not in r.stderr


def test_folder_of_meetings_with_a_seglst_file(voice_corpus, tmp_path):
    """A part folder with segments.json (SegLST) beside its audio: recordings named by their files,
    one supervision per segment (overlaps kept, words and gender carried); a segment of a recording
    with no audio file is an error naming it."""
    from lhotse import load_manifest

    part = tmp_path / "dev"
    (part / "wav").mkdir(parents=True)
    files = sorted((voice_corpus / "train").rglob("*.flac"))[:2]
    for name, f in zip(("mtgA", "mtgB"), files):
        (part / "wav" / f"{name}.flac").symlink_to(f)
    rows = [{"session_id": "mtgA", "speaker": "ann", "start_time": 0.0, "end_time": 1.0, "words": "hello there",
             "gender": "f"},
            {"session_id": "mtgA", "speaker": "bob", "start_time": 0.5, "end_time": 1.2, "words": "hi"},
            {"session_id": "mtgB", "speaker": "ann", "start_time": 0.1, "end_time": 0.6, "words": "bye"}]
    (part / "segments.json").write_text(json.dumps(rows))
    r = subprocess.run(CLI + ["data", "folder", str(tmp_path), "--parts", "dev", "--prefix", "mt", "--out-dir",
                              str(tmp_path / "m")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    sups = sorted(load_manifest(tmp_path / "m" / "mt_supervisions_dev.jsonl.gz"), key=lambda s: (s.recording_id, s.start))
    assert [(s.recording_id, s.speaker, s.start, s.end, s.text) for s in sups] == [
        ("mtgA", "ann", 0.0, 1.0, "hello there"), ("mtgA", "bob", 0.5, 1.2, "hi"), ("mtgB", "ann", 0.1, 0.6, "bye")]
    assert sups[0].gender == "F" and sups[1].gender is None
    assert {r.id for r in load_manifest(tmp_path / "m" / "mt_recordings_dev.jsonl.gz")} == {"mtgA", "mtgB"}
    (part / "segments.json").write_text(json.dumps(rows + [dict(rows[2], session_id="mtgC")]))
    r = subprocess.run(CLI + ["data", "folder", str(tmp_path), "--parts", "dev", "--out-dir", str(tmp_path / "m")],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "mtgC" in r.stderr and "Traceback" not in r.stderr


def test_trials_every_pair_or_balanced_sample():
    from auden_kit.metrics.verification import make_trials

    spk = {f"u{i}": f"s{i % 3}" for i in range(9)}
    t = make_trials(spk)
    assert len(t) == 36 and sum(x[2] for x in t) == 9
    assert all((spk[a] == spk[b]) == bool(lab) for a, b, lab in t)
    big = {f"u{i:03d}": f"s{i % 20}" for i in range(400)}
    t = make_trials(big, max_trials=2000, seed=1)
    n_t = sum(x[2] for x in t)
    assert n_t == 1000 and len(t) == 2000 and len({(a, b) for a, b, _ in t}) == 2000
    assert t == make_trials(big, max_trials=2000, seed=1)


def test_age_groups():
    from auden_kit.tasks.voice import bin_label

    edges = [18, 40, 61]
    assert [bin_label(str(x), edges) for x in (5, 18, 39, 40, 60, 61, 90)] == \
        ["<18", "18-39", "18-39", "40-60", "40-60", ">=61", ">=61"]


def test_classification_report_matches_sklearn():
    from sklearn.metrics import f1_score, recall_score

    from auden_kit.metrics.classification import classification_report

    rng = random.Random(0)
    labels = ["a", "b", "c", "d"]
    refs = [rng.choice(labels) for _ in range(300)]
    hyps = [r if rng.random() < 0.6 else rng.choice(labels) for r in refs]
    rep = classification_report(refs, hyps)
    assert rep["macro_f1"] == pytest.approx(f1_score(refs, hyps, average="macro"))
    assert rep["uar"] == pytest.approx(recall_score(refs, hyps, average="macro"))
    assert rep["per_class"]["b"]["f1"] == pytest.approx(f1_score(refs, hyps, labels=["b"], average="macro"))
    assert classification_report(["x", "y"], ["x", "x"])["per_class"]["y"]["f1"] == 0.0
