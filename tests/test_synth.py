import hashlib
import re
import subprocess
import sys
from pathlib import Path

from auden_kit.data.corpora.grammar import Grammar
from auden_kit.data.corpora.synthetic import SynthOptions, read_speakers, synthesize_corpus


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(root.rglob("*")):
        if f.is_file():
            h.update(f.relative_to(root).as_posix().encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def test_librispeech_layout(synth_corpus):
    for part in ("train-clean-100", "dev-clean", "test-clean"):
        assert (synth_corpus / part).is_dir()
    flacs = list(synth_corpus.rglob("*.flac"))
    assert len(flacs) == 4 * (8 + 2 + 2)
    f = flacs[0]
    spk, chapter, _ = f.stem.split("-")
    assert f.parent.name == chapter and f.parent.parent.name == spk
    assert (f.parent / f"{spk}-{chapter}.trans.txt").is_file()
    import soundfile as sf

    info = sf.info(str(f))
    assert info.samplerate == 16000 and info.channels == 1 and info.duration > 0.8
    speakers = read_speakers(synth_corpus)
    assert len(speakers) == 4 and set(s["gender"] for s in speakers.values()) <= {"M", "F"}


def test_splits_have_disjoint_sentences(synth_corpus):
    def sentences(part):
        return {line.split(" ", 1)[1] for f in (synth_corpus / part).rglob("*.trans.txt")
                for line in f.read_text().splitlines()}

    train, dev, test = sentences("train-clean-100"), sentences("dev-clean"), sentences("test-clean")
    assert len(train) == 32 and not (train & test) and not (train & dev) and not (dev & test)


def test_same_seed_same_bytes_any_jobs(tmp_path):
    opts = dict(num_speakers=2, train_utts=3, dev_utts=1, test_utts=1, utts_per_chapter=2)
    a = synthesize_corpus(tmp_path / "a", SynthOptions(**opts, jobs=1), progress=False)
    b = synthesize_corpus(tmp_path / "b", SynthOptions(**opts, jobs=2), progress=False)
    c = synthesize_corpus(tmp_path / "c", SynthOptions(**opts, jobs=2, seed=1), progress=False)
    assert _digest(a) == _digest(b)
    assert _digest(a) != _digest(c)


def test_vocab_size_controls_words():
    import random

    small = Grammar(vocab_size=60)
    words = {w for s in small.sample_unique(300, random.Random(0)) for w in s.split()}
    assert len(words) <= len(small.vocabulary) <= 90
    assert len(Grammar().vocabulary) > 250


def test_lhotse_prepare_reads_it(synth_corpus, tmp_path):
    from lhotse.recipes import prepare_librispeech

    out = prepare_librispeech(synth_corpus, output_dir=tmp_path, num_jobs=1)
    assert set(out) == {"train-clean-100", "dev-clean", "test-clean"}
    sups = out["test-clean"]["supervisions"]
    assert len(sups) == 8 and all(re.fullmatch(r"[A-Z ]+", s.text) for s in sups)


def test_cli_synth_lhotse_format(tmp_path):
    cmd = [sys.executable, "-m", "auden_kit.cli.main", "data", "synth", str(tmp_path), "--num-speakers", "2",
           "--train-utts", "2", "--dev-utts", "1", "--test-utts", "1", "--format", "lhotse"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    from lhotse import CutSet

    cuts = CutSet.from_file(tmp_path / "manifests" / "synth_cuts_train-clean-100.jsonl.gz")
    assert len(cuts) == 4 and all(c.supervisions[0].gender in ("M", "F") for c in cuts)


def test_espeak_alignment_marks_speech_and_pauses():
    """The synthesizer's own word/phone events: words in order, phones inside words, and the
    pause espeak makes at a comma is silent in the audio (the times are the audio's, not a guess)."""
    import numpy as np

    from auden_kit.data.corpora.espeak import get_synth

    synth = get_synth()
    a = synth.synthesize_aligned("Yes, and then we stop.", voice="en-us", seed=3)
    dur = len(a.samples) / synth.sample_rate
    assert [w for w, _, _ in a.words] == ["YES", "AND", "THEN", "WE", "STOP"]
    assert all(0 <= s < e <= dur + 1e-6 for _, s, e in a.words + a.phones)
    assert all(p[2] <= q[1] + 1e-9 for p, q in zip(a.words, a.words[1:]))
    assert all(any(ws - 1e-9 <= s and e <= we + 1e-9 for _, ws, we in a.words) for _, s, e in a.phones)
    assert len(a.phones) >= 12 and not any("'" in p or p.startswith("_") for p, _, _ in a.phones)
    x = a.samples.astype(np.float64)

    def rms(t0, t1):
        seg = x[int(t0 * synth.sample_rate):int(t1 * synth.sample_rate)]
        return float(np.sqrt(np.mean(seg ** 2)))

    (_, _, yes_end), (_, and_start, _) = a.words[0], a.words[1]
    assert and_start - yes_end > 0.08  # the comma's pause
    assert rms(yes_end + 0.02, and_start - 0.02) < 0.02 * rms(*a.words[0][1:])


def test_events_to_alignment_by_hand():
    from auden_kit.data.corpora.espeak import EVENT_END, EVENT_PHONEME, EVENT_WORD, events_to_alignment

    text = "go 42 now"
    ev = [(EVENT_WORD, 1, 2, 0, ""), (EVENT_PHONEME, 1, 0, 10, "g"), (EVENT_PHONEME, 1, 0, 20, "'oU"),
          (EVENT_PHONEME, 3, 0, 30, "_:"),  # a pause
          (EVENT_WORD, 4, 2, 40, ""), (EVENT_PHONEME, 4, 0, 40, "f'o@"), (EVENT_WORD, 5, 1, 50, ""),  # "forty-two"
          (EVENT_PHONEME, 5, 0, 50, "t'u:"), (EVENT_WORD, 7, 3, 60, ""), (EVENT_PHONEME, 7, 0, 60, "n"),
          (EVENT_PHONEME, 7, 0, 70, "aU"), (EVENT_PHONEME, 10, 0, 90, "_"), (EVENT_END, 10, 0, 100, "")]
    words, phones = events_to_alignment(ev, text, 100, 100)
    assert words == [("GO", 0.1, 0.3), ("42", 0.4, 0.6), ("NOW", 0.6, 0.9)]
    assert [p for p, _, _ in phones] == ["g", "oU", "fo@", "tu:", "n", "aU"] and phones[1] == ("oU", 0.2, 0.3)


def test_corpus_alignments_for_lhotse_and_cuts(synth_corpus, synth_cuts, tmp_path):
    from lhotse import CutSet
    from lhotse.recipes import prepare_librispeech

    from auden_kit.data.corpora.synthetic import format_alignment_line, read_alignment_file

    sups = prepare_librispeech(synth_corpus, output_dir=None, num_jobs=1, dataset_parts=["dev-clean"])
    for s in sups["dev-clean"]["supervisions"]:  # LibriSpeech-Alignments files beside the transcripts
        items = s.alignment["word"]
        assert [a.symbol for a in items if a.symbol] == s.text.split()
        assert items[0].start == 0 and abs(items[-1].end - s.duration) < 2e-3  # they tile the recording
    cut = next(iter(CutSet.from_file(synth_cuts["test-clean"])))
    ali = cut.supervisions[0].alignment
    assert [a.symbol for a in ali["word"]] == cut.supervisions[0].text.split()
    assert len(ali["phone"]) > len(ali["word"]) and ali["phone"][-1].end <= cut.duration + 1e-3
    line = format_alignment_line("u1", [("A", 0.1, 0.3), ("B", 0.3, 0.5)], 0.9)
    assert line == 'u1 ",A,B," "0.100,0.300,0.500,0.900"'
    (tmp_path / "x.alignment.txt").write_text(line + "\n")
    got = read_alignment_file(tmp_path / "x.alignment.txt")["u1"]
    assert [(a.symbol, a.start, round(a.end, 3)) for a in got] == [("A", 0.1, 0.3), ("B", 0.3, 0.5)]


def test_word_timing_by_hand():
    from auden_kit.metrics.timing import hyp_word_starts, word_timing

    ref = [("THE", 0.10, 0.20), ("CAT", 0.20, 0.50), ("SAT", 0.60, 0.90)]
    starts = hyp_word_starts(["\u2581THE", "\u2581C", "AT", "\u2581MAT"], [0.14, 0.33, 0.37, 0.62])
    assert starts == [0.14, 0.33, 0.62]
    t = word_timing([(ref, ["THE", "CAT", "MAT"], starts)])  # MAT is wrong: not timed
    assert t["timed_words"] == 2 and t["mean_abs_ms"] == 85.0 and t["bias_ms"] == 85.0
    assert t["within_100ms"] == 50.0 and t["within_200ms"] == 100.0
    assert word_timing([(ref, ["DOG"], [0.1])]) == {} and hyp_word_starts(["a", "b"], [0.1, 0.2]) == []
