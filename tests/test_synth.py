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
