"""``auden-kit decode``: audio files or a cut manifest, with a model folder (any task).

Files go through the Python API (:mod:`auden_kit.api`), so they may be of any length (long ones
are split at pauses and stitched) and give what ``auden_kit.load(DIR)`` gives in Python.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

from auden_kit.cli.common import STDIN, require_piped, setup_logging, stdin_audio
from auden_kit.errors import UserError

EPILOG = ("Example: auden-kit decode --model exp/model-avg a.wav b.flac   |   "
          "auden-kit decode --model exp/st-model --tgt-lang es a.wav   |   "
          "auden-kit decode --model exp/streaming-model --streaming a.wav   |   "
          "arecord -f S16_LE -r 16000 -t wav - | auden-kit decode --model exp/streaming-model --streaming -   |   "
          "auden-kit decode --model exp/tagspeech/model-avg --output rttm meeting.wav > meeting.rttm   |   "
          "ffmpeg -i talk.mp4 -f wav - | auden-kit decode --model exp/model-avg -   |   "
          "auden-kit decode --model exp/model-avg --cuts data/fbank/cuts_test.jsonl.gz --out-dir exp/decode   |   "
          "auden-kit decode --model exp/model-avg --data-dir ../espnet/egs2/an4/asr1/data/test --out-dir exp/decode")


def _line(res, output: str) -> str:
    from auden_kit.results import SegmentsResult

    if isinstance(res, SegmentsResult):  # who spoke what and when: text lines, RTTM, STM or SegLST
        from auden_kit.data.segments import render_segments

        return render_segments({Path(res.cut_id).stem: res.segments}, output).rstrip("\n")
    if output in ("rttm", "stm", "tagspeech"):
        raise UserError(f"--output {output} is for diarized-ASR models (task tagspeech)")
    if output == "json":
        d = res.to_dict()
        d.pop("id", None)
        return json.dumps({"file": res.cut_id, **d}, ensure_ascii=False)
    if hasattr(res, "transcript"):  # speech translation: translation, then the transcript
        return f"{res.cut_id}\t[{res.src_lang}->{res.tgt_lang}] {res.text}\t({res.transcript})"
    if hasattr(res, "text"):
        return f"{res.cut_id}\t{res.text}"
    if hasattr(res, "labels"):
        return f"{res.cut_id}\t" + "\t".join(f"{h}={v[0][0]} ({v[0][1]:.3f})" for h, v in res.labels.items())
    return f"{res.cut_id}\t{json.dumps(res.to_dict(), ensure_ascii=False)}"


def decode(
    files: List[Path] = typer.Argument(None, help="Audio files (any rate, channels, length; wav/flac/ogg/mp3); "
                                                  "- reads the audio piped to stdin."),
    model: Path = typer.Option(..., "--model", "-m", help="Model folder (from `auden-kit average`)."),
    cuts: Optional[Path] = typer.Option(None, help="Decode this cut manifest in batches instead of files."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="A Kaldi/ESPnet data directory (wav.scp, "
                                            "segments, text) or a folder of audio files (+ text): with transcripts "
                                            "decoded and scored as --cuts, without them one line per utterance."),
    out_dir: Optional[Path] = typer.Option(None, help="With --cuts or --data-dir: where the result files go."),
    method: str = typer.Option("", help="ASR: greedy, modified_beam_search, ctc_greedy, ctc_prefix_beam, "
                                        "attention_rescoring (default: greedy, or ctc_greedy for CTC-only models)."),
    beam: int = typer.Option(4, help="Beam size for beam searches."),
    output: str = typer.Option("text", help="text (one line per file) or json (all fields of the result); "
                                            "diarized ASR (tagspeech): text, rttm, stm, json (SegLST) or tagspeech."),
    max_duration: float = typer.Option(300.0, help="Seconds of audio per batch."),
    max_segment: float = typer.Option(30.0, help="Files longer than this (seconds) are split at pauses into "
                                                 "pieces of at most this length and stitched."),
    name: str = typer.Option("", help="With --cuts or --data-dir: suffix of the result files (default: manifest or "
                                      "folder name + method)."),
    device: str = typer.Option("cpu", help="cpu or cuda."),
    streaming: bool = typer.Option(False, help="Files only, causal ASR models: feed the audio in pieces of "
                                               "--piece-ms through the streaming encoder (greedy search); '-' is "
                                               "the WAV piped in, read live (partial text on a terminal; Ctrl-C "
                                               "ends it)."),
    piece_ms: int = typer.Option(320, help="With --streaming: audio per piece in milliseconds."),
    tgt_lang: str = typer.Option("", "--tgt-lang", help="Speech translation: the output language (default: the "
                                                        "model's usual target for the identified source)."),
    src_lang: str = typer.Option("", "--src-lang", help="Speech translation: the spoken language, when known "
                                                        "(default: identified by the model)."),
    normalize: bool = typer.Option(False, help="ASR with --cuts or --data-dir: score references and output "
                                               "case-folded without punctuation (a model trained on other "
                                               "casing than the test set's)."),
    match_level: bool = typer.Option(True, help="Bring audio whose speech is far quieter or louder than the "
                                                "model's training audio to the training median (a gain; model "
                                                "folders record the level range; --streaming measures it on the first "
                                                "2 s, which it holds back)."),
    asr_method: str = typer.Option(
        "", "--asr-method", help="Speech translation: the transcript's search (greedy, modified_beam_search, "
                                 "ctc_greedy, ctc_prefix_beam, or attention_rescoring: the n-best rescored by the "
                                 "decoder that translates)."),
):
    """Decode audio files (one line per file) or a manifest (result files and a summary)."""
    from auden_kit.api import load

    setup_logging()
    if sum(bool(x) for x in (files, cuts is not None, data_dir is not None)) != 1:
        raise UserError("give audio files to decode, or --cuts MANIFEST, or --data-dir DIR (one of them)")
    if output not in ("text", "json", "rttm", "stm", "tagspeech"):
        raise UserError(f"--output must be text, json, rttm, stm or tagspeech, got '{output}'")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise UserError(f"--device must be cpu or cuda, got '{device}'")
    if streaming and method not in ("", "greedy"):
        raise UserError(f"--streaming uses greedy search; --method {method} is not available with it")
    if beam < 1 or max_duration <= 0 or max_segment <= 0 or piece_ms <= 0:
        raise UserError("--beam, --max-duration, --max-segment and --piece-ms must be positive")
    m = load(model, device=device)
    opts = {}
    if m.task.decode_methods:
        method = m.task.check_method(m.model, method)
        opts = {"method": method, "beam": beam}
    elif method:
        raise UserError(f"--method: a '{m.task.name}' model has no decoding methods")
    for key, value in (("tgt_lang", tgt_lang), ("src_lang", src_lang), ("asr_method", asr_method)):
        if value:
            if key not in m.task.infer_options:
                raise UserError(f"--{key.replace('_', '-')}: a '{m.task.name}' model does not take it "
                                "(speech-translation models do)")
            opts[key] = value
    if normalize:
        if m.task.name != "asr" or files:
            raise UserError("--normalize scores ASR output against references: give an ASR model and --cuts or "
                            "--data-dir (speech translation reports lowercased BLEU beside the cased one already)")
        opts["normalize"] = True
    if streaming and (not files or not hasattr(m.task, "streaming_decoder")):
        raise UserError("--streaming decodes audio files with an ASR model; use it without --cuts or --data-dir")
    if cuts is not None:
        _decode_cuts(m, cuts, out_dir or Path("."), opts, max_duration, name, match_level)
        return
    if data_dir is not None:
        if m.task.name == "tagspeech":
            raise UserError("--data-dir decodes a directory's utterances one by one; a diarized-ASR model reads whole "
                            "recordings: give the audio files, or --cuts from `auden-kit data fbank --split windows`")
        audio = _data_dir_cuts(data_dir, m.features.sample_rate)
        if all(s.text for c in audio for s in c.supervisions):  # references: scored as a manifest
            import tempfile

            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / f"{data_dir.resolve().name}.jsonl.gz"
                audio.to_file(path)
                _decode_cuts(m, path, out_dir or Path("."), opts, max_duration, name, match_level)
            return
        with_text = sum(bool(s.text) for c in audio for s in c.supervisions)
        if with_text:  # some have a text: say why nothing is scored
            typer.echo(f"note: {len(audio) - with_text} of {len(audio)} utterances of '{data_dir}' have no text, so "
                       "nothing is scored; the hypotheses are listed (give every utterance a text to get a WER)",
                       err=True)
        files = [c.id for c in audio]
        opts.pop("normalize", None)  # nothing to score
    # '-' is spooled to a file, except for --streaming, which reads it live as it arrives
    spooled = data_dir is None and not streaming
    if not spooled and sum(str(f) == STDIN for f in files or []) > 1:
        raise UserError("'-' (the audio piped to stdin) may be given once")
    with stdin_audio(files if spooled else []) as (paths, shown):
        _decode_files(m, paths if spooled else files, audio if data_dir is not None else None, shown,
                      output, streaming, piece_ms, max_segment, max_duration, match_level, opts)


def _decode_files(m, files, audio, shown, output: str, streaming: bool, piece_ms: int, max_segment: float,
                  max_duration: float, match_level: bool, opts: dict):
    """One line (or block) per input on stdout, in input order; a failed input is named on stderr
    and the others still decoded; exit 1 with the count of failures. ``shown`` writes ``-`` for
    the spool of audio piped in, in a result's id or an error message."""
    failed = 0
    if streaming:
        results = _stream_files(m, files, piece_ms, match_level)
    else:
        results = m.iter_results(audio if audio is not None else [str(f) for f in files], max_segment=max_segment,
                                 batch_duration=max_duration, match_level=match_level,
                                 progress=sys.stderr.isatty(), **opts)  # seconds of audio done, with an ETA
    for fid, res in results:
        if isinstance(res, UserError):
            typer.echo(f"error: {shown(str(res))}", err=True)
            failed += 1
            continue
        res.cut_id = shown(res.cut_id)
        line = _line(res, output)
        if line:
            typer.echo(line)
        else:  # an RTTM/STM/text listing of nobody speaking is empty: say so where people read
            typer.echo(f"{shown(fid)}: no speech found", err=True)
    if failed:
        typer.echo(f"{failed} of {len(files)} file(s) failed", err=True)
        raise typer.Exit(1)


def _data_dir_cuts(data_dir: Path, rate: int):
    """The utterances of a Kaldi/ESPnet data directory or an audio folder (what `auden-kit data
    folder` reads) as audio cuts at the model's sample rate."""
    import tempfile

    from lhotse import CutSet, load_manifest

    from auden_kit.data.corpora.folder import prepare_folder

    with tempfile.TemporaryDirectory() as tmp:
        rp, sp = prepare_folder(data_dir, tmp, "dir", "part")
        cuts = CutSet.from_manifests(recordings=load_manifest(rp), supervisions=load_manifest(sp))
    cuts = cuts.trim_to_supervisions(keep_overlapping=False).to_eager()
    # segments of a recording read through a command (`sph2pipe ... |`): run it once, not once per segment
    import warnings

    import lhotse

    lhotse.set_caching_enabled(True)
    warnings.filterwarnings("ignore", message="You requested a subset of a recording that is read from disk via a bash")
    return CutSet.from_cuts(c if c.sampling_rate == rate else c.resample(rate) for c in cuts)


def _stream_files(m, files, piece_ms: int, match_level: bool = True):
    """Each file fed to a stream in pieces of ``piece_ms``; ``-`` is the WAV piped to stdin, read
    live as it arrives (a microphone: ``arecord -f S16_LE -r 16000 -t wav - | auden-kit decode
    --streaming -m DIR -``), its partial text shown on a terminal's stderr as it grows."""
    from auden_kit.data.audio import load_audio, wav_stream

    rate = m.features.sample_rate
    n = max(1, rate * piece_ms // 1000)
    for f in files:
        try:
            s = m.stream(match_level=match_level)
            s.cut_id = str(f)
            if str(f) == STDIN:
                require_piped("arecord -f S16_LE -r 16000 -t wav - | auden-kit decode --streaming --model DIR -")
                show = _partial_line() if sys.stderr.isatty() else None
                try:
                    for piece, sr in wav_stream(sys.stdin.buffer, piece_ms / 1000):
                        s.accept(piece, sr)
                        if show is not None:
                            show(s.partial.text)
                except KeyboardInterrupt:  # Ctrl-C ends a live stream: what was heard is still decoded
                    pass
                if show is not None:
                    show(None)
                if s.resampler is None:
                    raise UserError("'-': the WAV stream holds no samples")
            else:
                wav = load_audio(f, rate)
                for start in range(0, wav.numel(), n):
                    s.accept(wav[start:start + n], rate)
            yield str(f), s.finish()
        except UserError as e:
            yield str(f), e


def _partial_line():
    """A function that shows a growing text on one terminal line of stderr (its end, when longer
    than the terminal is wide), and clears the line when called with None."""
    import shutil

    def show(text):
        width = max(20, shutil.get_terminal_size((80, 24)).columns - 1)
        sys.stderr.write("\r\033[K" + ("" if text is None else text[-width:]))
        sys.stderr.flush()

    return show


def _decode_cuts(m, cuts_path: Path, out_dir: Path, opts: dict, max_duration: float, name: str,
                 match_level: bool = True):
    import time

    from auden_kit.api import seconds_bar
    from auden_kit.data.datamodule import DataConfig, make_loader

    if not cuts_path.is_file():
        raise UserError(f"cut manifest '{cuts_path}' does not exist")
    cfg = DataConfig(max_duration=max_duration, num_workers=0, spec_augment=False, fbank=m.features,
                     min_cut_duration=0.0, max_cut_duration=1e9)
    from auden_kit.data.datamodule import load_cuts

    try:
        first = next(iter(load_cuts([str(cuts_path)])), None)
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - not a manifest, or a broken one
        raise UserError(f"cannot read cut manifest '{cuts_path}' ({e.__class__.__name__}: {e})") from None
    if first is None:
        raise UserError(f"cut manifest '{cuts_path}' holds no cuts")
    cfg.on_the_fly_feats = not first.has_features
    if first.has_features and first.num_features != m.features.num_features:
        pitch = " --pitch" if m.features.pitch else ""
        raise UserError(f"'{cuts_path}' has {first.num_features}-dim features but the model was trained on "
                        f"{m.features.describe()}; recompute features (`auden-kit data fbank "
                        f"--num-mel-bins {m.features.num_mel_bins}{pitch}`) or decode the audio files")
    loader, _ = make_loader(cfg, [str(cuts_path)], train=False, task=m.task)
    score = {"normalize": opts.pop("normalize")} if "normalize" in opts else {}
    results = []
    audio_s = 0.0
    moved = 0
    t0 = time.time()
    # seconds of audio with an ETA on a terminal (the manifest's durations; one quick pass over it)
    bar = seconds_bar(sum(c.duration for c in load_cuts([str(cuts_path)])), "decoding") if sys.stderr.isatty() else None
    try:
        for batch in loader:
            if "error" in batch:
                raise UserError(batch["error"])
            if match_level:
                moved += m.match_batch_levels(batch)
            batch["inputs"] = batch["inputs"].to(m.device)
            batch["input_lens"] = batch["input_lens"].to(m.device)
            audio_s += sum(c.duration for c in batch["cuts"])
            results += m.task.infer(m.model, batch, **opts)
            if bar is not None:
                bar.update(sum(c.duration for c in batch["cuts"]))
    finally:
        if bar is not None:
            bar.close()
    elapsed = time.time() - t0
    method = opts.get("method", "")
    name = name or (f"{cuts_path.name.split('.')[0]}" + (f"-{method}" if method else "")
                    + (f"-beam{opts['beam']}" if "beam" in method else "")
                    + (f"-to-{opts['tgt_lang']}" if opts.get("tgt_lang") else ""))
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = m.task.write_results(results, out_dir, name, **score)
    typer.echo(f"{name}: {summary}")
    if moved:
        st = m.assets.data_stats
        typer.echo(f"note: {moved} of {len(results)} cuts had speech far outside the training audio's level range "
                   f"({st['level_db_p5']:.1f}..{st['level_db_p95']:.1f} dB) and were brought to its median "
                   f"({st['level_db_p50']:.1f} dB; --no-match-level decodes them as they are)", err=True)
    typer.echo(f"RTF {elapsed / max(audio_s, 1e-9):.4f} ({audio_s:.1f} s of audio in {elapsed:.1f} s); "
               f"results in {out_dir}")
