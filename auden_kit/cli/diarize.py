"""``auden-kit diarize``: the cascade baseline of diarized ASR (voice clustering + ASR), on audio
files or a cut manifest; the same outputs and metrics as a ``tagspeech`` model's decode."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from auden_kit.cli.common import setup_logging, stdin_audio
from auden_kit.errors import UserError

EPILOG = ("Example: auden-kit diarize --voice-model ../mini_synth_voice/exp/model-avg --asr-model "
          "../mini_synth/exp/model-avg meeting.wav   |   auden-kit diarize --voice-model V --asr-model A "
          "--cuts data/fbank/meetings_cuts_test.jsonl.gz --out-dir exp/cascade --name test   |   the threshold "
          "chosen on dev: ... --threshold 0.4 --threshold 0.55 --threshold 0.7 --tune-cuts dev_cuts.jsonl.gz")


def diarize(
    files: List[Path] = typer.Argument(None, help="Audio files (any rate, channels, length); - reads the audio "
                                                "piped to stdin."),
    voice_model: Path = typer.Option(..., help="Voice model folder (speaker embeddings)."),
    asr_model: Path = typer.Option(..., help="ASR model folder (transcribes each speaker turn)."),
    cuts: Optional[Path] = typer.Option(None, help="A cut manifest of recordings instead of files; scored "
                                                   "against its supervisions."),
    out_dir: Optional[Path] = typer.Option(None, help="With --cuts: where results, metrics, RTTM/STM/SegLST go."),
    name: str = typer.Option("test", help="With --cuts: suffix of the result files."),
    output: str = typer.Option("text", help="Files: text, rttm, stm, json (SegLST) or tagspeech."),
    window: float = typer.Option(1.5, help="Embedding window (seconds)."),
    hop: float = typer.Option(0.75, help="Embedding hop (seconds)."),
    threshold: List[float] = typer.Option([0.6], help="Clustering stops at this cosine distance (speaker count "
                                          "estimated). Repeat it with --tune-cuts to choose one on dev."),
    tune_cuts: Optional[Path] = typer.Option(None, help="Dev cut manifest: the --threshold of lowest DER on it is "
                                                        "used (figures in OUT_DIR/tune-threshold.json)."),
    num_speakers: int = typer.Option(0, help="Known speaker count (0: estimated)."),
    device: str = typer.Option("cpu", help="cpu or cuda."),
):
    """Who spoke what and when, with a voice model and an ASR model (no joint training)."""
    from tqdm import tqdm

    from auden_kit.api import load
    from auden_kit.cascade import CascadeOptions, diarize_audio, tune_threshold
    from auden_kit.data.audio import load_cut_audio
    from auden_kit.data.segments import FORMATS, cut_segments

    setup_logging()
    thresholds = list(dict.fromkeys(threshold))
    for th in thresholds:
        CascadeOptions(window=window, hop=hop, threshold=th, num_speakers=num_speakers).validate()
    if len(thresholds) > 1 and tune_cuts is None:
        raise UserError("several --threshold values need --tune-cuts DEV_MANIFEST to choose one")
    if tune_cuts is not None and not tune_cuts.is_file():
        raise UserError(f"--tune-cuts: cut manifest '{tune_cuts}' does not exist")
    if tune_cuts is not None and out_dir is None:
        raise UserError("--tune-cuts needs --out-dir (where tune-threshold.json goes)")
    opts = CascadeOptions(window=window, hop=hop, threshold=thresholds[0], num_speakers=num_speakers)
    if output not in FORMATS:
        raise UserError(f"--output must be one of {', '.join(FORMATS)}, got '{output}'")
    if not files and cuts is None:
        raise UserError("give audio files, or --cuts MANIFEST")
    voice, asr = load(voice_model, device=device), load(asr_model, device=device)
    voice.require("voice", verb="auden-kit diarize --voice-model")
    asr.require("asr", verb="auden-kit diarize --asr-model")
    rate = asr.features.sample_rate
    if tune_cuts is not None:
        import json

        from auden_kit.data.datamodule import load_cuts
        from auden_kit.io import atomic_write_text

        dev = list(load_cuts([str(tune_cuts)]))
        opts.threshold, scores = tune_threshold(
            ((load_cut_audio(c, rate), cut_segments(c))
             for c in tqdm(dev, desc="tuning", unit="recording", disable=not sys.stderr.isatty())),
            rate, voice, opts, thresholds)
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out_dir / "tune-threshold.json", json.dumps(
            {"cuts": str(tune_cuts), "chosen": opts.threshold, "by_threshold": {str(k): v for k, v in scores.items()}},
            indent=1) + "\n")
        for th, m in scores.items():
            typer.echo(f"threshold {th}: dev DER {m['der']}, speaker count {m['spk_count_acc']} %")
        typer.echo(f"threshold {opts.threshold} chosen (lowest DER on {tune_cuts.name})")
    if cuts is not None:
        from auden_kit.data.datamodule import load_cuts
        from auden_kit.metrics.diarization import summary_line, write_meeting_results

        if out_dir is None:
            raise UserError("--cuts needs --out-dir")
        if not cuts.is_file():
            raise UserError(f"cut manifest '{cuts}' does not exist")
        results = []
        cs = list(load_cuts([str(cuts)]))
        for c in tqdm(cs, desc="diarizing", unit="recording", disable=not sys.stderr.isatty()):
            r = diarize_audio(load_cut_audio(c, rate), rate, voice, asr, opts, cut_id=c.id)
            r.refs = cut_segments(c)
            results.append(r)
        typer.echo(summary_line(write_meeting_results(results, out_dir, name)))
        typer.echo(f"results in {out_dir}")
        return
    with stdin_audio(files) as (paths, shown):
        _diarize_files(paths, shown, rate, voice, asr, opts, output)


def _diarize_files(files, shown, rate: int, voice, asr, opts, output: str):
    """As `auden-kit decode` on files: in order, a file that fails is named and the others still
    diarized, exit 1 with the count. ``shown`` writes ``-`` for the spool of audio piped in."""
    from auden_kit.cascade import diarize_audio
    from auden_kit.data.segments import render_segments

    failed = 0
    bar = _files_bar(files)  # seconds of audio with an ETA
    for f in files:
        counted = bar.n if bar is not None else 0.0
        name = Path(shown(f)).stem
        try:
            r = diarize_audio(f, rate, voice, asr, opts, cut_id=name,  # read block by block
                              progress=None if bar is None else lambda s: bar.update(min(s / 2, bar.total - bar.n)))
        except UserError as e:
            typer.echo(f"error: {shown(e)}", err=True)
            failed += 1
            continue
        finally:
            if bar is not None:  # a file without speech has no second pass; a failed one stops early
                bar.update(max(0.0, min(counted + bar.seconds[f], bar.total) - bar.n))
        if r.segments:
            typer.echo(render_segments({name: r.segments}, output), nl=False)
        else:
            typer.echo(f"{shown(f)}: no speech found", err=True)
    if bar is not None:
        bar.close()
    if failed:
        typer.echo(f"{failed} of {len(files)} file(s) failed", err=True)
        raise typer.Exit(1)


def _files_bar(files):
    """A progress bar over the files' seconds of audio (both passes of each, voices then words,
    count half) when stderr is a terminal; None otherwise or when no duration is known."""
    from auden_kit.api import seconds_bar
    from auden_kit.data.audio import audio_seconds

    if not sys.stderr.isatty():
        return None
    seconds = {f: audio_seconds(f) or 0.0 for f in files}  # an unreadable file: named when it is diarized
    if not sum(seconds.values()):
        return None
    bar = seconds_bar(sum(seconds.values()), "diarizing")
    bar.seconds = seconds
    return bar


SCORE_EPILOG = ("Example: auden-kit score-segments ref.stm hyp.stm   |   auden-kit score-segments ref.rttm hyp.rttm "
                "--collar 0   |   auden-kit score-segments ref.json hyp.stm --out metrics.json")


def score_segments(
    ref: Path = typer.Argument(..., help="Reference: .stm (words: cpWER, tcpWER and DER), .rttm (DER only) or "
                                         ".json (SegLST)."),
    hyp: Path = typer.Argument(..., help="Hypothesis, any of the same formats (e.g. `auden-kit decode --output stm`)."),
    collar: float = typer.Option(0.25, help="DER collar in seconds, each side of every reference boundary "
                                            "(md-eval's convention); DER at collar 0 is reported too."),
    tcp_collar: float = typer.Option(5.0, help="tcpWER time collar in seconds."),
    out: Optional[Path] = typer.Option(None, help="Also write the metrics (with per-recording rows) as JSON."),
    normalize: bool = typer.Option(True, help="Case-fold both sides and drop punctuation (apostrophes kept) "
                                              "before scoring words."),
):
    """Score diarized transcripts against references: cpWER, tcpWER, speaker-agnostic WER, DER with
    miss / false alarm / confusion, speaker count. Recordings are matched by id; a reference
    recording missing from the hypothesis counts as a failed output (all words deleted, all
    speech missed), never dropped."""
    import json

    from auden_kit.data.segments import read_segments
    from auden_kit.io import atomic_write_text
    from auden_kit.metrics.diarization import score_meetings, summary_line

    refs, hyps = read_segments(ref), read_segments(hyp)
    if normalize:
        from auden_kit.metrics.wer import normalize_for_scoring
        from auden_kit.results import Segment

        refs, hyps = ({rid: [Segment(s.start, s.end, s.speaker, normalize_for_scoring(s.text or "")) for s in segs]
                       for rid, segs in d.items()} for d in (refs, hyps))
    if not refs:
        raise UserError(f"reference '{ref}' holds no segments")
    if not hyps:  # scored (every recording failed), but say so: a wrong file or format is the likelier cause
        typer.echo(f"note: hypothesis '{hyp}' holds no segments (RTTM: no SPEAKER lines): every recording is "
                   "scored as a failed output", err=True)
    unknown = sorted(set(hyps) - set(refs))
    if unknown and len(unknown) == len(hyps):
        raise UserError(f"no recording of '{hyp}' is in '{ref}' (hypothesis ids: {', '.join(unknown[:5])}; "
                        f"reference ids: {', '.join(sorted(refs)[:5])})")
    m = score_meetings([(rid, refs[rid], hyps.get(rid)) for rid in sorted(refs)], collar=collar,
                       tcp_collar=tcp_collar)
    words = m["ref_words"] > 0
    line = summary_line(m)
    if not words:  # an RTTM reference has no words: the word metrics mean nothing
        line = line[line.index("DER"):] + "  (no reference words: cpWER/tcpWER not scored)"
    typer.echo(line)
    if unknown:
        typer.echo(f"note: {len(unknown)} hypothesis recording(s) not in the reference were ignored: "
                   f"{', '.join(unknown[:5])}")
    if out is not None:
        atomic_write_text(out, json.dumps(m, indent=1) + "\n")
