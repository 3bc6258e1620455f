"""``auden-kit data``: synthesize the offline corpus, validate, describe and featurize manifests."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from auden_kit.cli.common import setup_logging
from auden_kit.data.corpora.voices import VoiceSynthOptions as _VOICE  # its defaults are the CLI's
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
    voice_seed: int = typer.Option(-1, help="Draw the voice order with this seed (-1: --seed)."),
    voice_offset: int = typer.Option(0, help="Skip the first N voices of that order (e.g. an unlabeled corpus "
                                             "with other voices than one made with --seed N's order)."),
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
                        rate_jitter=rate_jitter, pitch_jitter=pitch_jitter, seed=seed, jobs=jobs,
                        voice_seed=voice_seed, voice_offset=voice_offset)
    try:
        root = synthesize_corpus(out_dir, opts)
    except ValueError as e:
        raise UserError(str(e)) from None
    typer.echo(f"corpus: {root}")
    if format == "lhotse":
        for part, p in corpus_to_cuts(root, manifest_dir or Path(out_dir) / "manifests").items():
            typer.echo(f"cuts {part}: {p}")


@app.command("synth-keywords", epilog="Example: auden-kit data synth-keywords download/keywords --num-speakers 20 "
                                       "--reps 4")
def synth_keywords(
    out_dir: Path = typer.Argument(..., help="Folder for the clips and keywords_cuts.jsonl.gz."),
    num_speakers: int = typer.Option(20, help="Speakers (drawn as `data synth` draws them)."),
    reps: int = typer.Option(4, help="Times each speaker says each word."),
    words: str = typer.Option(",".join(("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")),
                              help="Comma-separated words."),
    seed: int = typer.Option(0, help="Same seed as a `data synth` corpus: the same voices."),
    voice_seed: int = typer.Option(-1, help="As `data synth --voice-seed`."),
    voice_offset: int = typer.Option(0, help="As `data synth --voice-offset`."),
    jobs: int = typer.Option(2, help="Parallel worker processes."),
):
    """Synthesize spoken keywords (a Speech-Commands-like probe set: keyword and speaker labels)."""
    from auden_kit.data.corpora.synthetic import synthesize_keywords

    setup_logging()
    ws = [w.strip() for w in words.split(",") if w.strip()]
    if len(ws) < 2 or reps < 1 or num_speakers < 1:
        raise UserError("need at least 2 --words, --reps >= 1 and --num-speakers >= 1")
    try:
        path = synthesize_keywords(out_dir, ws, num_speakers, reps, seed, voice_seed, voice_offset, jobs)
    except ValueError as e:
        raise UserError(str(e)) from None
    typer.echo(f"wrote {path}")


@app.command("synth-voices", epilog="Example: auden-kit data synth-voices download/voices --train-variants 23 "
                                     "--test-variants 12 --jobs 2")
def synth_voices(
    out_dir: Path = typer.Argument(..., help="Folder to write the parts (train, dev, test) into."),
    train_variants: int = typer.Option(_VOICE.train_variants, help="espeak base variants for training speakers."),
    test_variants: int = typer.Option(_VOICE.test_variants, help="Other base variants for the test speakers "
                                                                 "(never in training)."),
    train_speakers_per_variant: int = typer.Option(_VOICE.train_speakers_per_variant,
                                                   help="Speakers made from each training variant."),
    test_speakers_per_variant: int = typer.Option(_VOICE.test_speakers_per_variant,
                                                  help="Speakers made from each test variant."),
    train_utts: int = typer.Option(_VOICE.train_utts, help="Training utterances per speaker."),
    dev_utts: int = typer.Option(_VOICE.dev_utts, help="Further utterances per training speaker (identification)."),
    test_utts: int = typer.Option(_VOICE.test_utts, help="Utterances per test speaker."),
    seed: int = typer.Option(0, help="Same seed, same corpus (byte for byte)."),
    jobs: int = typer.Option(2, help="Parallel worker processes."),
):
    """Synthesize a voice corpus: speakers with their own formants, pitch and rate, gender and a
    speaking style (calm / neutral / lively) per utterance, as folders + utt2spk/utt2gender/utt2style."""
    from auden_kit.data.corpora.voices import VoiceSynthOptions, synthesize_voice_corpus

    setup_logging()
    opts = VoiceSynthOptions(train_variants=train_variants, test_variants=test_variants,
                             train_speakers_per_variant=train_speakers_per_variant,
                             test_speakers_per_variant=test_speakers_per_variant, train_utts=train_utts,
                             dev_utts=dev_utts, test_utts=test_utts, seed=seed, jobs=jobs)
    try:
        root = synthesize_voice_corpus(out_dir, opts)
    except ValueError as e:
        raise UserError(str(e)) from None
    typer.echo(f"corpus: {root} (parts train, dev, test; speakers in {root / 'speakers.tsv'})")


@app.command("synth-st", epilog="Example: auden-kit data synth-st download/st --manifest-dir data/manifests "
                                  "--speakers-per-language 12 --train-utts 100 --jobs 2")
def synth_st(
    out_dir: Path = typer.Argument(..., help="Folder for the audio (parts train, dev, test)."),
    manifest_dir: Path = typer.Option(Path("data/manifests"), help="Where the Lhotse manifests go."),
    speakers_per_language: int = typer.Option(12, help="espeak-ng voices per language (English, Spanish)."),
    train_utts: int = typer.Option(100, help="Training utterances per speaker."),
    dev_utts: int = typer.Option(4, help="Dev utterances per speaker."),
    test_utts: int = typer.Option(10, help="Test utterances per speaker (sentences never in dev or train)."),
    no_translation: float = typer.Option(0.1, help="Fraction of training utterances without a translation."),
    prefix: str = typer.Option("mini_st", help="Manifest name prefix."),
    seed: int = typer.Option(0, help="Same seed, same corpus."),
    jobs: int = typer.Option(2, help="Parallel worker processes."),
):
    """Synthesize an English<->Spanish speech-translation corpus (a grammar that needs reordering
    and agreement), with transcripts, languages and translations in the manifests."""
    from auden_kit.data.corpora.st_synth import StSynthOptions, synthesize_st_corpus

    setup_logging()
    if not 0 <= no_translation < 1:
        raise UserError(f"--no-translation must be in [0, 1), got {no_translation}")
    opts = StSynthOptions(speakers_per_language=speakers_per_language, train_utts=train_utts, dev_utts=dev_utts,
                          test_utts=test_utts, no_translation=no_translation, prefix=prefix, seed=seed, jobs=jobs)
    try:
        written = synthesize_st_corpus(out_dir, manifest_dir, opts)
    except ValueError as e:
        raise UserError(str(e)) from None
    typer.echo(f"corpus: {out_dir}; manifests: {', '.join(str(p) for p in written.values())}")


@app.command("simulate-meetings", epilog="Example: auden-kit data simulate-meetings data/fbank/librispeech_cuts_"
                                         "train-clean-100.jsonl.gz --out-dir data/manifests --prefix meetings --part "
                                         "train --audio-dir download/meetings --num-meetings 400")
def simulate_meetings(
    manifests: List[Path] = typer.Argument(..., help="Single-speaker cuts (or recordings + supervisions) with "
                                                     "speakers and transcripts."),
    out_dir: Path = typer.Option(Path("data/manifests"), help="Where PREFIX_{recordings,supervisions}_PART.jsonl.gz go."),
    audio_dir: Path = typer.Option(Path("download/meetings"), help="Where the meetings' FLAC files go (under PART/)."),
    prefix: str = typer.Option("meetings", help="Manifest prefix."),
    part: str = typer.Option("train", help="Manifest part name (train, dev, test...)."),
    num_meetings: int = typer.Option(100, help="How many meetings."),
    speakers: str = typer.Option("2,3,4", help="Speaker counts per meeting, drawn uniformly (comma-separated)."),
    min_duration: float = typer.Option(15.0, help="Shortest meeting (seconds)."),
    max_duration: float = typer.Option(60.0, help="Longest meeting (seconds)."),
    max_utts_per_speaker: int = typer.Option(6, help="Utterances per speaker and meeting, at most."),
    overlap_prob: float = typer.Option(0.3, help="Probability that a change of speaker overlaps the previous one."),
    pause: float = typer.Option(0.3, help="Mean extra pause between utterances (seconds)."),
    overlap: float = typer.Option(0.6, help="Mean overlap when speakers overlap (seconds)."),
    seed: int = typer.Option(0, help="Same seed and input, same meetings."),
):
    """Simulate multi-speaker meetings (Lhotse's ConversationalMeetingSimulator: overlaps, pauses)
    from single-speaker utterances, render them to audio and write meeting manifests."""
    from auden_kit.data.meetings import MeetingOptions
    from auden_kit.data.meetings import simulate_meetings as simulate
    from auden_kit.io import save_cuts_atomic

    setup_logging()
    try:
        counts = [int(x) for x in speakers.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"--speakers must be comma-separated counts such as 2,3,4, got '{speakers}'") from None
    opts = MeetingOptions(num_meetings=num_meetings, speakers=counts, min_duration=min_duration,
                          max_duration=max_duration, max_utts_per_speaker=max_utts_per_speaker,
                          same_spk_pause=pause, diff_spk_pause=pause, diff_spk_overlap=overlap,
                          overlap_prob=overlap_prob, seed=seed, prefix=f"{prefix}-{part}")
    recs, sups = simulate(_read_any(manifests), audio_dir / part, opts)
    out_dir.mkdir(parents=True, exist_ok=True)
    for kind, m in (("supervisions", sups), ("recordings", recs)):
        path = out_dir / f"{prefix}_{kind}_{part}.jsonl.gz"
        save_cuts_atomic(m, path)
        typer.echo(f"wrote {path} ({len(m)} items)")


@app.command("export-segments", epilog="Example: auden-kit data export-segments data/fbank/meetings_cuts_test.jsonl.gz "
                                       "--format rttm --out data/ref_test.rttm")
def export_segments(
    manifests: List[Path] = typer.Argument(..., help="Cut manifest(s), or recordings + supervisions."),
    out: Path = typer.Option(..., help="Output file."),
    format: str = typer.Option("rttm", help="rttm, stm, json (SegLST), text or tagspeech."),
):
    """Write the reference speaker segments (supervisions) of manifests as RTTM, STM or SegLST."""
    from auden_kit.data.segments import cuts_segments, write_segments

    write_segments(out, cuts_segments(_read_any(manifests)), format)
    typer.echo(f"wrote {out}")


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


@app.command(epilog="Example: auden-kit data cmvn data/fbank/unlabeled_cuts.jsonl.gz --out data/fbank/stats.json")
def cmvn(
    manifests: List[Path] = typer.Argument(..., help="Cut manifests with precomputed features."),
    out: Path = typer.Option(..., help="Output JSON: per-bin mean and std (model.feature_stats of task ssl)."),
    max_cuts: int = typer.Option(2000, help="Read at most this many cuts (the first ones)."),
):
    """Global mean and variance of the features (the normalisation of BEST-RQ targets)."""
    import json

    from auden_kit.io import atomic_write_text
    from auden_kit.tasks.ssl import feature_stats

    st = feature_stats(_read_any(manifests), max_cuts)
    atomic_write_text(out, json.dumps(st) + "\n")
    typer.echo(f"wrote {out} ({st['cuts']} cuts, {st['frames']} frames)")


@app.command("teacher-cache", epilog="Example: auden-kit data teacher-cache --kind model --teacher ../mini_synth/exp/"
                                      "model-avg --name big --layers 1,4 --cuts data/fbank/unlabeled_cuts.jsonl.gz "
                                      "--out data/fbank/unlabeled_cuts_big.jsonl.gz")
def teacher_cache(
    teacher: str = typer.Option(..., help="Teacher: an auden-kit model folder or a local Hugging Face folder."),
    kind: str = typer.Option("model", help="model (auden-kit) or hf (WavLM / HuBERT / wav2vec 2.0)."),
    name: str = typer.Option(..., help="Teacher name (the `cached` teacher of task distill reads teacher_<name>)."),
    layers: str = typer.Option(..., help="Comma-separated teacher layers to store (0 = first tap)."),
    cuts: str = typer.Option(..., help="Cut manifest to run the teacher on."),
    out: Path = typer.Option(..., help="Output cut manifest (the cuts with their cached targets)."),
    storage: Path = typer.Option(None, help="Folder for the compressed arrays (default: beside --out)."),
    max_duration: float = typer.Option(100.0, help="Seconds of audio per batch."),
    codebooks: int = typer.Option(0, help="Store vector-quantised codes: this many residual codebooks per layer "
                                          "(one byte each per frame; 0: lilcom-compressed values)."),
    codebook_size: int = typer.Option(256, help="Codes per codebook (2..256)."),
    vq_frames: int = typer.Option(100_000, help="Frames (sampled over the manifest) the codebooks are fitted on."),
    codebooks_from: str = typer.Option("", help="Quantise with the codebooks of this earlier --codebooks cache "
                                                "(a manifest) instead of fitting new ones: a dev set's codes must "
                                                "mean what the training set's mean (model.teachers loss: codes)."),
):
    """Run a distillation teacher once and store its layers with the cuts: lilcom-compressed
    values, or with --codebooks M multi-codebook vector-quantised codes (M bytes per frame and
    layer; the command prints the share of each layer's variance the codes lose)."""
    from auden_kit.tasks.distill import write_teacher_cache

    setup_logging()
    try:
        ls = [int(v) for v in layers.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"--layers must be comma-separated integers, got '{layers}'") from None
    storage = storage or out.parent / (out.name.split(".")[0] + "_teacher")
    r = write_teacher_cache(kind, teacher, name, ls, cuts, out, storage, max_duration=max_duration,
                            codebooks=codebooks, codebook_size=codebook_size, vq_frames=vq_frames,
                            codebooks_from=codebooks_from)
    typer.echo(f"wrote {out}: {r['cuts']} cuts, {r['frames']} frames of {sum(r['dims'])} values; "
               f"{r['bytes'] / 1e6:.2f} MB stored ({r['bytes_float32'] / max(1, r['bytes']):.1f}x smaller than "
               "float32)" + (f"; codes lose {', '.join(f'{100 * e:.1f} %' for e in r['vq_error'])} of the layers' "
                             "variance" if r["vq_error"] else ""))


@app.command("stream-cache", epilog="Example: auden-kit data stream-cache --config conf/train.yaml "
                                    "data/fbank/meetings_cuts_train.jsonl.gz --out data/fbank/meetings_streams_train.jsonl.gz")
def stream_cache(
    cuts: Path = typer.Argument(..., help="Cut manifest with features."),
    config: Path = typer.Option(..., help="The tagspeech training config (names the semantic and voice models)."),
    out: Path = typer.Option(..., help="Output cut manifest (the cuts, with the streams attached)."),
    storage_dir: Optional[Path] = typer.Option(None, help="Where the arrays go (default: beside --out)."),
    max_duration: float = typer.Option(200.0, help="Seconds of audio per batch."),
    semantic_model: str = typer.Option("", help="Override the config's model.semantic_model."),
    voice_model: str = typer.Option("", help="Override the config's model.voice_model."),
):
    """Store the frozen semantic and voice encoders' outputs with every cut, so diarized-ASR
    training (model.cached_streams=true) runs the decoder only."""
    from auden_kit.tasks.tagspeech import write_stream_cache

    setup_logging()
    if not cuts.is_file():
        raise UserError(f"manifest '{cuts}' does not exist")
    storage = storage_dir or out.parent / (out.name.split(".")[0] + "_streams")
    overrides = {k: v for k, v in (("semantic_model", semantic_model), ("voice_model", voice_model)) if v}
    info = write_stream_cache(str(config), str(cuts), out, storage, max_duration, overrides=overrides)
    typer.echo(f"wrote {out}: {info['cuts']} cuts, {info['frames']} frames, {info['bytes'] / 1e6:.1f} MB "
               f"({info['bytes_float32'] / max(info['bytes'], 1):.1f}x smaller than float32)")


@app.command(epilog="Example: auden-kit data shar data/fbank/unlabeled_cuts.jsonl.gz --out data/shar/unlabeled "
                    "--shard-size 1000   (then data.train_cuts=[data/shar/unlabeled])")
def shar(
    manifests: List[Path] = typer.Argument(..., help="Cut manifests (with features, or audio with --audio)."),
    out: Path = typer.Option(..., help="Output folder: cuts.NNNNNN.jsonl.gz + features/recording tar shards."),
    shard_size: int = typer.Option(1000, help="Cuts per shard (each rank of a multi-GPU run needs at least one)."),
    audio: bool = typer.Option(False, help="Also store the audio (flac)."),
    features: bool = typer.Option(True, help="Store the precomputed features (lilcom)."),
    jobs: int = typer.Option(1, help="Parallel writers."),
):
    """Export cuts as Lhotse Shar shards for sequential reading at scale (local or any URL)."""
    from auden_kit.data.shar import export_shar

    setup_logging()
    if shard_size < 1:
        raise UserError(f"--shard-size must be >= 1, got {shard_size}")
    names = export_shar(_read_any(manifests), out, shard_size, audio=audio, features=features, num_jobs=jobs)
    typer.echo(f"wrote {len(names['cuts'])} shard(s) of fields {', '.join(sorted(names))} to {out} "
               f"(index: {out}/shar_index.json)")


@app.command(epilog="Example: auden-kit data fbank data/manifests/librispeech_recordings_train-clean-100.jsonl.gz "
                    "data/manifests/librispeech_supervisions_train-clean-100.jsonl.gz "
                    "--out data/fbank/librispeech_cuts_train-clean-100.jsonl.gz --speed-perturb")
def fbank(
    manifests: List[Path] = typer.Argument(..., help="Cut manifest, or recordings + supervisions."),
    out: Path = typer.Option(..., help="Output cut manifest with features (jsonl.gz)."),
    jobs: int = typer.Option(2, help="Feature extraction processes."),
    speed_perturb: bool = typer.Option(False, help="Add 0.9x and 1.1x speed copies (training sets)."),
    perturbed_speakers: bool = typer.Option(False, help="With --speed-perturb: the copies are new speakers "
                                                        "('<spk>-sp0.9'), as speaker-embedding recipes train."),
    num_mel_bins: int = typer.Option(80, help="Filterbank bins."),
    pitch: bool = typer.Option(False, help="Append 4 pitch features per frame (voicing, log f0, its utterance-"
                                          "normalised form, slope; Kaldi/ESPnet fbank+pitch): voice tasks. "
                                          "Train with data.fbank.pitch=true."),
    window: float = typer.Option(20.0, help="Unlabeled recordings (no supervisions: pretraining audio) longer "
                                            "than this are cut into windows of this many seconds; with --split "
                                            "windows: every recording."),
    split: str = typer.Option("supervisions", help="Long labeled recordings become: supervisions (one cut each; "
                                                   "ASR, ST), groups (supervisions joined across pauses shorter than "
                                                   "--max-pause, overlaps kept: meetings) or windows (--window s)."),
    max_pause: float = typer.Option(2.0, help="With --split groups: pauses shorter than this join segments."),
    max_group: float = typer.Option(0.0, help="With --split groups: longer groups are split between segments "
                                              "into parts of at most this many seconds (0: no limit)."),
    channel: int = typer.Option(0, help="Multi-channel recordings (microphone arrays, e.g. AliMeeting far-field): "
                                        "the channel to read (single-distant-microphone setting)."),
):
    """Compute 80-dim log-mel features (stored with lilcom; --pitch: 84-dim with pitch) for a
    manifest. Long labeled recordings are cut into one cut per supervision; unlabeled ones into
    windows."""
    import torch

    from auden_kit.data.features import FbankSettings, compute_fbank
    from auden_kit.io import save_cuts_atomic

    setup_logging()
    torch.set_num_threads(1)
    cuts = _read_any(manifests).to_eager()
    if window <= 0:
        raise UserError(f"--window must be positive, got {window}")
    from lhotse import CutSet
    from lhotse.cut import MultiCut

    if any(isinstance(c, MultiCut) for c in cuts):
        bad = next((c for c in cuts if isinstance(c, MultiCut) and channel not in c.channel), None)
        if bad is not None:
            raise UserError(f"recording '{bad.recording_id}' has channels {bad.channel}; --channel {channel} is not one")
        cuts = CutSet.from_cuts(c.with_channels(channel) if isinstance(c, MultiCut) else c for c in cuts).to_eager()

    labeled = CutSet.from_cuts([c for c in cuts if c.supervisions])
    unlabeled = CutSet.from_cuts([c for c in cuts if not c.supervisions])
    if split not in ("supervisions", "groups", "windows"):
        raise UserError(f"--split must be supervisions, groups or windows, got '{split}'")
    if split == "windows" and len(labeled):
        labeled = CutSet.from_cuts(w for c in labeled for w in ([c] if c.duration <= window else c.cut_into_windows(window))
                                   if w.duration >= 0.3).to_eager()
    elif split == "groups" and len(labeled):
        from auden_kit.data.meetings import utterance_groups

        labeled = CutSet.from_cuts(utterance_groups(labeled, max_pause, max_group))
    elif _has_long_recordings(labeled):  # one cut per segment (eager: the speed copies and progress bar need a length)
        labeled = labeled.trim_to_supervisions(keep_overlapping=False).to_eager()
    if len(unlabeled):
        unlabeled = CutSet.from_cuts([c for c in unlabeled.cut_into_windows(window) if c.duration >= 0.3])
    cuts = labeled + unlabeled if len(labeled) and len(unlabeled) else (labeled if len(labeled) else unlabeled)
    if speed_perturb:
        copies = [cuts.perturb_speed(f) for f in (0.9, 1.1)]
        if perturbed_speakers:
            copies = [_rename_speakers(c, f"sp{f}") for c, f in zip(copies, (0.9, 1.1))]
        cuts = cuts + copies[0] + copies[1]
    name = out.name.split(".")[0]
    settings = FbankSettings(num_mel_bins=num_mel_bins, pitch=pitch)
    cuts = compute_fbank(cuts, out.parent, name, settings, num_jobs=jobs)
    save_cuts_atomic(cuts, out)
    typer.echo(f"wrote {out} ({len(cuts)} cuts)")


def _rename_speakers(cuts, suffix: str):
    from lhotse.utils import fastcopy

    return cuts.map_supervisions(lambda s: fastcopy(s, speaker=f"{s.speaker}-{suffix}") if s.speaker else s)


def _has_long_recordings(cuts) -> bool:
    """True when cuts cover more than their single supervision (e.g. long recordings)."""
    for c in cuts.subset(first=50):
        if len(c.supervisions) != 1 or abs(c.supervisions[0].duration - c.duration) > 0.05:
            return True
    return False


def _supervisions(paths: List[Path]):
    """Supervisions of supervision manifests or cut manifests."""
    from lhotse import SupervisionSet
    from lhotse.serialization import load_manifest_lazy

    for p in paths:
        if not p.is_file():
            raise UserError(f"manifest '{p}' does not exist")
        m = load_manifest_lazy(p)
        if isinstance(m, SupervisionSet):
            yield from m
        else:
            for c in _read_any([p]):
                yield from c.supervisions


def _texts(paths: List[Path], translations: bool = False) -> tuple[list[str], set[str]]:
    """Transcripts (and with ``translations`` their translations) of the manifests, and every
    language named (spoken or translated into)."""
    from auden_kit.data.translation import translations as translations_of

    texts, langs = [], set()
    for s in _supervisions(paths):
        if s.text:
            texts.append(s.text)
        if s.language:
            langs.add(s.language)
        for t in translations_of(s):
            langs.add(t["language"])
            if translations:
                texts.append(t["text"])
    return texts, langs


@app.command(epilog="Example: auden-kit data tokenizer data/fbank/librispeech_cuts_train-clean-100.jsonl.gz "
                    "--out-dir data/lang_bpe_500 --vocab-size 500")
def tokenizer(
    manifests: List[Path] = typer.Argument(..., help="Manifests whose supervision texts to train on."),
    out_dir: Path = typer.Option(..., help="Folder for tokenizer.yaml and the model."),
    vocab_size: int = typer.Option(500, help="Vocabulary size (SentencePiece); 0: from the data (distinct words, "
                                            "30..500). Too large for the data: the largest valid size."),
    type: str = typer.Option("bpe", help="bpe, unigram or char."),
    translations: bool = typer.Option(False, "--translations", help="Also train on the translations in "
                                      "custom['translation'] (one shared model for speech translation)."),
    lang_tags: bool = typer.Option(False, "--lang-tags", help="Add a symbol <xx> for every language in the "
                                   "manifests (spoken or translated into): the ST decoder's language tags."),
):
    """Train a SentencePiece (BPE/unigram) or character tokenizer on transcripts."""
    from auden_kit.data.translation import language_tag
    from auden_kit.tokenizers import CharTokenizer, train_sentencepiece

    setup_logging()
    texts, langs = _texts(manifests, translations)
    tags = [language_tag(x) for x in sorted(langs)] if lang_tags else []
    if lang_tags and not tags:
        raise UserError("--lang-tags: no supervision in these manifests names its language (field 'language')")
    if type == "char":
        tok = CharTokenizer.train(texts)
        if tags:
            tok = CharTokenizer(tok.symbols + tags)
        tok.save(out_dir)
    elif type in ("bpe", "unigram"):
        tok = train_sentencepiece(texts, out_dir, vocab_size=vocab_size, model_type=type, extra_symbols=tags)
    else:
        raise UserError(f"--type must be bpe, unigram or char, got '{type}'")
    typer.echo(f"tokenizer ({type}, {tok.vocab_size} symbols) in {out_dir}" + (f"; tags {' '.join(tags)}" if tags else ""))


@app.command(epilog="Example: auden-kit data folder download/voices --parts train dev test --prefix voices "
                    "--out-dir data/manifests   |   auden-kit data folder /data/mymeetings --prefix meetings "
                    "(each part: audio + segments.stm)   |   auden-kit data folder ../espnet/egs2/an4/asr1/data "
                    "--parts 'train=train_nodev dev=train_dev test' --prefix an4 (Kaldi data directories)   |   "
                    "auden-kit data folder /data/mytalks --language en (text + text.de: speech translation)")
def folder(
    corpus_dir: Path = typer.Argument(..., help="Folder with one sub-folder per part."),
    parts: str = typer.Option("train dev test", help="Sub-folders to prepare (space- or comma-separated); "
                                                     "name=folder renames, e.g. 'train=train_nodev dev=train_dev test'."),
    out_dir: Path = typer.Option(Path("data/manifests"), help="Where the manifests go."),
    prefix: str = typer.Option("mydata", help="Manifest name prefix."),
    language: str = typer.Option("", help="The spoken language of utterances no utt2lang names (speech "
                                          "translation: the text in it is the transcript, the others translations)."),
):
    """Manifests from folders of audio files plus Kaldi-style maps: text, utt2spk, utt2gender,
    utt2lang and any utt2<key> (-> supervision.custom[key]), text.<lang> or ESPnet's
    text.<case>.<lang> (translations -> custom['translation']); the file name is the utterance id;
    without a text map, a.txt or a.lab beside a.wav is its transcript. A part folder with wav.scp
    is a Kaldi/ESPnet data directory (wav.scp paths or pipes, segments, text, utt2spk, spk2gender).
    Meetings: a part folder with segments.stm, segments.json (SegLST) or segments.rttm beside its
    audio gives recordings of several speakers, one supervision per segment (recording id = file
    name)."""
    from auden_kit.data.corpora.folder import parse_parts, prepare_folder

    setup_logging()
    for part, sub in parse_parts(parts):
        rp, sp = prepare_folder(corpus_dir / sub, out_dir, prefix, part, language=language or None)
        typer.echo(f"{part}: {rp} {sp}")


@app.command(epilog="Example: auden-kit data voxceleb --vox1 /data/voxceleb1 --vox2 /data/voxceleb2 "
                    "--out-dir data/manifests")
def voxceleb(
    vox1: Optional[Path] = typer.Option(None, help="VoxCeleb1 folder (vox1_meta.csv, wav/, trial lists)."),
    vox2: Optional[Path] = typer.Option(None, help="VoxCeleb2 folder (vox2_meta.csv, <spk>/<session>/*.m4a)."),
    out_dir: Path = typer.Option(Path("data/manifests"), help="Where manifests and trial lists go."),
    trials_dir: Optional[Path] = typer.Option(None, help="Where veri_test2.txt / list_test_all2.txt / "
                                                         "list_test_hard2.txt are (default: the VoxCeleb1 folder)."),
    vox1_all_test: bool = typer.Option(False, help="Every VoxCeleb1 speaker in test (for Vox1-E/H; train on "
                                                   "VoxCeleb2 then)."),
    jobs: int = typer.Option(2, help="Parallel readers."),
):
    """VoxCeleb manifests and trial lists (Vox1-O/E/H) from local copies; nothing is downloaded."""
    from auden_kit.data.corpora.voxceleb import prepare_voxceleb

    setup_logging()
    for name, p in prepare_voxceleb(vox1, vox2, out_dir, jobs=jobs, trials_dir=trials_dir,
                                    vox1_all_test=vox1_all_test).items():
        typer.echo(f"{name}: {p}")


@app.command("must-c", epilog="Example: auden-kit data must-c /data/MUSTC_v1.0 --tgt-lang de --out-dir data/manifests")
def must_c(
    corpus_dir: Path = typer.Argument(..., help="MuST-C root holding en-<tgt>/data/<split>/{wav,txt}."),
    tgt_lang: str = typer.Option("de", help="Target language (de, es, fr, it, nl, pt, ro, ru, zh, ...)."),
    out_dir: Path = typer.Option(Path("data/manifests"), help="Where the manifests go."),
    jobs: int = typer.Option(2, help="Parallel readers."),
):
    """MuST-C manifests with the English transcript in text and the translation in
    custom['translation'] (Lhotse's must_c recipe + the transcripts joined back)."""
    from auden_kit.data.corpora.must_c import prepare_must_c

    setup_logging()
    for name, p in prepare_must_c(corpus_dir, out_dir, tgt_lang, num_jobs=jobs).items():
        typer.echo(f"{name}: {p}")


@app.command(epilog="Example: auden-kit data covost2 /data/cv-corpus-4/fr/clips --tsv-dir /data/covost2 "
                    "--src-lang fr --tgt-lang en --out-dir data/manifests")
def covost2(
    clips_dir: Path = typer.Argument(..., help="Common Voice clips/ folder of the source language."),
    tsv_dir: Path = typer.Option(..., help="Folder with covost_v2.<src>_<tgt>.<split>.tsv."),
    src_lang: str = typer.Option(..., help="Source (spoken) language, e.g. fr."),
    tgt_lang: str = typer.Option("en", help="Target language."),
    out_dir: Path = typer.Option(Path("data/manifests"), help="Where the manifests go."),
    jobs: int = typer.Option(2, help="Parallel readers."),
):
    """CoVoST 2 manifests (transcript in text, translation in custom['translation'])."""
    from auden_kit.data.translation import prepare_covost2

    setup_logging()
    for name, p in prepare_covost2(clips_dir, tsv_dir, src_lang, tgt_lang, out_dir, jobs=jobs).items():
        typer.echo(f"{name}: {p}")


@app.command(epilog="Example: auden-kit data cremad /data/CREMA-D --out-dir data/manifests")
def cremad(
    corpus_dir: Path = typer.Argument(..., help="CREMA-D root (AudioWAV/, VideoDemographics.csv)."),
    out_dir: Path = typer.Option(Path("data/manifests"), help="Where the manifests go."),
    test_every: int = typer.Option(10, help="Every N-th actor is test, the next one dev (speaker-disjoint)."),
):
    """CREMA-D manifests with emotion, intensity, gender and age labels, split by actor."""
    from auden_kit.data.corpora.cremad import prepare_cremad

    setup_logging()
    for name, p in prepare_cremad(corpus_dir, out_dir, test_every=test_every).items():
        typer.echo(f"{name}: {p}")


@app.command(epilog="Example: auden-kit data holdout data/fbank/voxceleb_cuts_train_all.jsonl.gz --train-out "
                    "data/fbank/voxceleb_cuts_train.jsonl.gz --valid-out data/fbank/voxceleb_cuts_valid.jsonl.gz")
def holdout(
    manifest: Path = typer.Argument(..., help="Cut manifest to split."),
    train_out: Path = typer.Option(..., help="The cuts that stay."),
    valid_out: Path = typer.Option(..., help="The held-out cuts."),
    per_speaker: int = typer.Option(1, help="Held-out cuts per speaker (speakers with more than this many)."),
    max_valid: int = typer.Option(2000, help="At most this many held-out cuts in all."),
    seed: int = typer.Option(0, help="Seed for the choice."),
):
    """Hold out a few cuts of each training speaker: a validation set whose speakers the model knows
    (speaker accuracy during training), as VoxCeleb-style corpora ship none."""
    import random

    from lhotse import CutSet

    from auden_kit.io import save_cuts_atomic

    cuts = _read_any([manifest]).to_eager()
    by_spk: dict[str, list[str]] = {}
    for c in cuts:
        by_spk.setdefault(c.supervisions[0].speaker if c.supervisions else "", []).append(c.id)
    rng = random.Random(seed)
    speakers = sorted(s for s, ids in by_spk.items() if s and len(ids) > per_speaker)
    rng.shuffle(speakers)
    held: set[str] = set()
    for s in speakers:
        if len(held) + per_speaker > max_valid:
            break
        held.update(rng.sample(sorted(by_spk[s]), per_speaker))
    if not held:
        raise UserError(f"'{manifest}': no speaker has more than {per_speaker} cut(s) to hold out")
    save_cuts_atomic(CutSet.from_cuts(c for c in cuts if c.id not in held), train_out)
    save_cuts_atomic(CutSet.from_cuts(c for c in cuts if c.id in held), valid_out)
    typer.echo(f"{train_out}: {len(cuts) - len(held)} cuts; {valid_out}: {len(held)} cuts")


@app.command(epilog="Example: auden-kit data trials data/fbank/voices_cuts_test.jsonl.gz --out data/trials_test.txt")
def trials(
    manifests: List[Path] = typer.Argument(..., help="Cut manifests (or recordings + supervisions) with speakers."),
    out: Path = typer.Option(..., help="Trial list to write ('1 enrol test' / '0 enrol test', utterance ids "
                                       "as `auden-kit embed --cuts` keys them)."),
    max_trials: int = typer.Option(200_000, help="Every pair up to this many; above, half target pairs and as "
                                                 "many random non-target pairs."),
    seed: int = typer.Option(0, help="Seed for the sampled pairs."),
):
    """A speaker-verification trial list over the cuts of a manifest."""
    from auden_kit.io import atomic_write_text
    from auden_kit.metrics.verification import make_trials, utterance_id

    spk = {}
    for c in _read_any(manifests):
        s = c.supervisions[0].speaker if c.supervisions else None
        if not s:
            raise UserError(f"cut '{c.id}' has no speaker; trials need one speaker per cut")
        spk[utterance_id(c)] = s
    if len(set(spk.values())) < 2:
        raise UserError(f"{manifests[0]}: trials need at least 2 speakers, found {len(set(spk.values()))}")
    rows = make_trials(spk, max_trials=max_trials, seed=seed)
    atomic_write_text(out, "".join(f"{lab} {a} {b}\n" for a, b, lab in rows))
    n_t = sum(r[2] for r in rows)
    typer.echo(f"{out}: {len(rows)} trials ({n_t} target, {len(rows) - n_t} non-target) over {len(spk)} cuts")


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
