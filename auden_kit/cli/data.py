"""``auden-kit data``: synthesize the offline corpus, validate, describe and featurize manifests."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from auden_kit.cli.common import setup_logging
from auden_kit.errors import UserError

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


@app.command(epilog="Example: auden-kit data synth download/ --num-speakers 20 --train-utts 40 --jobs 2")
def synth(
    out_dir: Path = typer.Argument(..., help="Folder to write LibriSpeech/ into."),
    num_speakers: int = typer.Option(20, help="Speakers (espeak voice variants with their own rate and pitch)."),
    train_utts: int = typer.Option(40, help="Training utterances per speaker."),
    dev_utts: int = typer.Option(5, help="Dev utterances per speaker."),
    test_utts: int = typer.Option(5, help="Test utterances per speaker."),
    utts_per_chapter: int = typer.Option(20, help="Utterances per chapter folder."),
    vocab_size: int = typer.Option(0, help="About this many distinct words (0: the whole grammar)."),
    rate_jitter: int = typer.Option(20, help="Speaking-rate spread in words/min (+-)."),
    pitch_jitter: int = typer.Option(15, help="Pitch spread (+-, espeak units 0-100)."),
    seed: int = typer.Option(0, help="Same seed, same corpus (byte for byte)."),
    jobs: int = typer.Option(2, help="Parallel worker processes."),
    format: str = typer.Option("librispeech", help="librispeech (folder only) or lhotse (also writes cut manifests)."),
    manifest_dir: Optional[Path] = typer.Option(None, help="With --format lhotse: where the cuts go (default OUT_DIR/manifests)."),
):
    """Synthesize an offline speech corpus with espeak-ng in LibriSpeech layout."""
    from auden_kit.data.corpora.synthetic import SynthOptions, corpus_to_cuts, synthesize_corpus

    setup_logging()
    if format not in ("librispeech", "lhotse"):
        raise UserError(f"--format must be 'librispeech' or 'lhotse', got '{format}'")
    opts = SynthOptions(num_speakers=num_speakers, train_utts=train_utts, dev_utts=dev_utts,
                        test_utts=test_utts, utts_per_chapter=utts_per_chapter, vocab_size=vocab_size,
                        rate_jitter=rate_jitter, pitch_jitter=pitch_jitter, seed=seed, jobs=jobs)
    try:
        root = synthesize_corpus(out_dir, opts)
    except ValueError as e:
        raise UserError(str(e)) from None
    typer.echo(f"corpus: {root}")
    if format == "lhotse":
        for part, p in corpus_to_cuts(root, manifest_dir or Path(out_dir) / "manifests").items():
            typer.echo(f"cuts {part}: {p}")


@app.command(epilog="Example: auden-kit data validate data/manifests/librispeech_recordings_dev-clean.jsonl.gz "
                    "data/manifests/librispeech_supervisions_dev-clean.jsonl.gz")
def validate(
    manifests: List[Path] = typer.Argument(..., help="Cut, recording or supervision manifests (jsonl or jsonl.gz)."),
    no_audio: bool = typer.Option(False, "--no-audio", help="Skip opening audio and feature files."),
    no_text: bool = typer.Option(False, "--no-text", help="Do not require transcripts (e.g. for noise or SSL data)."),
    limit: int = typer.Option(100, help="Stop after this many problems."),
    decode: bool = typer.Option(False, "--decode", help="Decode every audio file in full and load every cut's "
                                                        "features (slow; finds damage that headers hide)."),
):
    """Check manifests and print every problem (naming the cut id); exit 1 if any."""
    from auden_kit.data.validate import validate_manifests

    n, problems = validate_manifests(manifests, check_audio=not no_audio, require_text=not no_text, limit=limit,
                                     decode=decode)
    for p in problems:
        typer.echo(str(p), err=True)
    if problems:
        more = " (limit reached)" if len(problems) >= limit else ""
        typer.echo(f"{len(problems)} problem(s) in {n} item(s){more}", err=True)
        raise typer.Exit(1)
    typer.echo(f"OK: {n} item(s), no problems")


def _read_any(paths: List[Path]):
    """Cuts from cut manifests, or from recording + supervision manifests."""
    from lhotse import CutSet, RecordingSet, SupervisionSet
    from lhotse.serialization import load_manifest_lazy

    for p in paths:
        if not p.is_file():
            raise UserError(f"manifest '{p}' does not exist")
    loaded = [load_manifest_lazy(p) for p in paths]
    cuts = [m for m in loaded if isinstance(m, CutSet)]
    recs = [m for m in loaded if isinstance(m, RecordingSet)]
    sups = [m for m in loaded if isinstance(m, SupervisionSet)]
    if cuts:
        out = cuts[0]
        for c in cuts[1:]:
            out = out + c
        return out
    if recs:
        return CutSet.from_manifests(recordings=RecordingSet.from_recordings(r for rs in recs for r in rs),
                                     supervisions=SupervisionSet.from_segments(s for ss in sups for s in ss)
                                     if sups else None)
    raise UserError(f"none of {[str(p) for p in paths]} is a cut or recording manifest")


@app.command(epilog="Example: auden-kit data stats data/fbank/librispeech_cuts_train-clean-100.jsonl.gz")
def stats(
    manifests: List[Path] = typer.Argument(..., help="Cut manifests, or recordings + supervisions."),
    low: float = typer.Option(5.0, help="Flag cuts with fewer characters per second."),
    high: float = typer.Option(30.0, help="Flag cuts with more characters per second."),
):
    """Total hours, speakers, duration histogram and characters-per-second outliers."""
    from auden_kit.data.stats import corpus_stats

    typer.echo(corpus_stats(_read_any(manifests), low=low, high=high).render())


@app.command(epilog="Example: auden-kit data fbank data/manifests/librispeech_recordings_train-clean-100.jsonl.gz "
                    "data/manifests/librispeech_supervisions_train-clean-100.jsonl.gz "
                    "--out data/fbank/librispeech_cuts_train-clean-100.jsonl.gz --speed-perturb")
def fbank(
    manifests: List[Path] = typer.Argument(..., help="Cut manifest, or recordings + supervisions."),
    out: Path = typer.Option(..., help="Output cut manifest with features (jsonl.gz)."),
    jobs: int = typer.Option(2, help="Feature extraction processes."),
    speed_perturb: bool = typer.Option(False, help="Add 0.9x and 1.1x speed copies (training sets)."),
    num_mel_bins: int = typer.Option(80, help="Filterbank bins."),
):
    """Compute 80-dim log-mel features (stored with lilcom) for a manifest."""
    import torch

    from auden_kit.data.features import FbankSettings, compute_fbank
    from auden_kit.io import save_cuts_atomic

    setup_logging()
    torch.set_num_threads(1)
    cuts = _read_any(manifests).to_eager()
    cuts = cuts.trim_to_supervisions(keep_overlapping=False) if _has_long_recordings(cuts) else cuts
    if speed_perturb:
        cuts = cuts + cuts.perturb_speed(0.9) + cuts.perturb_speed(1.1)
    name = out.name.split(".")[0]
    cuts = compute_fbank(cuts, out.parent, name, FbankSettings(num_mel_bins=num_mel_bins), num_jobs=jobs)
    save_cuts_atomic(cuts, out)
    typer.echo(f"wrote {out} ({len(cuts)} cuts)")


def _has_long_recordings(cuts) -> bool:
    """True when cuts cover more than their single supervision (e.g. long recordings)."""
    for c in cuts.subset(first=50):
        if len(c.supervisions) != 1 or abs(c.supervisions[0].duration - c.duration) > 0.05:
            return True
    return False


def _texts(paths: List[Path]) -> list[str]:
    """Transcripts from supervision manifests or cut manifests."""
    from lhotse import SupervisionSet
    from lhotse.serialization import load_manifest_lazy

    texts = []
    for p in paths:
        if not p.is_file():
            raise UserError(f"manifest '{p}' does not exist")
        m = load_manifest_lazy(p)
        if isinstance(m, SupervisionSet):
            texts += [s.text for s in m if s.text]
        else:
            texts += [s.text for c in _read_any([p]) for s in c.supervisions if s.text]
    return texts


@app.command(epilog="Example: auden-kit data tokenizer data/fbank/librispeech_cuts_train-clean-100.jsonl.gz "
                    "--out-dir data/lang_bpe_500 --vocab-size 500")
def tokenizer(
    manifests: List[Path] = typer.Argument(..., help="Manifests whose supervision texts to train on."),
    out_dir: Path = typer.Option(..., help="Folder for tokenizer.yaml and the model."),
    vocab_size: int = typer.Option(500, help="Vocabulary size (SentencePiece); 0: from the data (distinct words, "
                                            "30..500). Too large for the data: the largest valid size."),
    type: str = typer.Option("bpe", help="bpe, unigram or char."),
):
    """Train a SentencePiece (BPE/unigram) or character tokenizer on transcripts."""
    from auden_kit.tokenizers import CharTokenizer, train_sentencepiece

    setup_logging()
    texts = _texts(manifests)
    if type == "char":
        tok = CharTokenizer.train(texts)
        tok.save(out_dir)
    elif type in ("bpe", "unigram"):
        tok = train_sentencepiece(texts, out_dir, vocab_size=vocab_size, model_type=type)
    else:
        raise UserError(f"--type must be bpe, unigram or char, got '{type}'")
    typer.echo(f"tokenizer ({type}, {tok.vocab_size} symbols) in {out_dir}")


DOWNLOADS = {"librispeech": ("lhotse.recipes", "download_librispeech")}


@app.command(epilog="Example: auden-kit data download librispeech download/ --parts mini_librispeech")
def download(
    corpus: str = typer.Argument(..., help=f"Corpus to download: {', '.join(DOWNLOADS)}."),
    target_dir: Path = typer.Argument(..., help="Folder to download and unpack into."),
    parts: str = typer.Option("librispeech", help="librispeech: 'librispeech' (all), 'mini_librispeech', or "
                                                  "comma-separated parts such as train-clean-100,dev-clean."),
    recipe_hint: str = typer.Option("", help="How to continue without downloading (printed on failure)."),
):
    """Download a public corpus (network needed); a failure says how to use a local copy instead."""
    import importlib

    setup_logging()
    if corpus not in DOWNLOADS:
        raise UserError(f"unknown corpus '{corpus}' (choose from {', '.join(DOWNLOADS)})")
    module, fn = DOWNLOADS[corpus]
    p = parts.split(",") if "," in parts else parts
    try:
        getattr(importlib.import_module(module), fn)(str(target_dir), dataset_parts=p)
    except Exception as e:  # noqa: BLE001 - network errors come in many types
        reason = str(e).splitlines()[0] if str(e) else e.__class__.__name__
        hint = recipe_hint or "prepare the corpus from a local copy instead"
        raise UserError(f"downloading {corpus} ({parts}) into '{target_dir}' failed: {reason}. Without network, "
                        f"copy the corpus onto this machine and run: {hint}") from None
    typer.echo(f"downloaded {corpus} ({parts}) into {target_dir}")
