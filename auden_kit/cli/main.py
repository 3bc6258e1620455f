"""Entry point: ``auden-kit <group> <command>``. User mistakes print one line, not a traceback."""

from __future__ import annotations

import sys

import typer

from auden_kit.cli import average, bleu, convert, data, decode, diarize, export, info, probe, recipe, train, voice
from auden_kit.errors import UserError

app = typer.Typer(
    name="auden-kit",
    help="auden-kit: speech toolkit (data, training, decoding, recipes). "
    "Start with `cd egs/mini_synth && ./run.sh`.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# (name, help, epilog, function); groups (data, recipe) are added as sub-apps
COMMANDS = [
    ("info", "Versions, device, threads, k2 and espeak-ng availability.", "Example: auden-kit info --json",
     info.info),
    ("train", "Train a model from a YAML config with key=value overrides.", train.EPILOG, train.train),
    ("decode", "Decode audio files or a cut manifest with a model folder.", decode.EPILOG, decode.decode),
    ("average", "Average checkpoints into a model folder.", average.EPILOG, average.average),
    ("export", "Export a model folder as TorchScript or ONNX files (encoder, decoder, joiner).", export.EPILOG,
     export.export),
    ("import-icefall", "Convert an icefall Zipformer checkpoint to a model folder.", convert.EPILOG,
     convert.import_icefall),
    ("embed", "Voice models: utterance embeddings of files or a manifest.", voice.EMBED_EPILOG, voice.embed),
    ("score", "Voice models: EER/minDCF of a trial list from embeddings (cosine, AS-norm).", voice.SCORE_EPILOG,
     voice.score),
    ("verify", "Voice models: are two recordings the same speaker?", voice.VERIFY_EPILOG, voice.verify),
    ("probe", "Probe a frozen encoder: kNN / linear / MLP accuracy of a label (speaker, keyword, ...).",
     probe.EPILOG, probe.probe),
    ("diarize", "Cascade diarized ASR: voice-embedding clustering + an ASR model (baseline of task tagspeech).",
     diarize.EPILOG, diarize.diarize),
    ("score-segments", "Diarized ASR: cpWER, tcpWER, DER of RTTM/STM/SegLST files against references.",
     diarize.SCORE_EPILOG, diarize.score_segments),
    ("bleu", "BLEU and chrF (sacrebleu) of a hypothesis file against a reference file.", bleu.EPILOG, bleu.bleu),
    ("wer", "WER (or CER) of a hypothesis file against a reference file (Kaldi text or line by line).",
     bleu.WER_EPILOG, bleu.wer),
]
for _name, _help, _epilog, _fn in COMMANDS:
    app.command(_name, help=_help, epilog=_epilog)(_fn)
app.add_typer(data.app, name="data", help="Build, check and featurize data (synth, validate, stats, fbank, tokenizer).")
app.add_typer(recipe.app, name="recipe", help="List recipes and their stages; start a new recipe.")

def main(argv: list[str] | None = None) -> int:
    from auden_kit.runtime import tune_allocator

    tune_allocator()  # large activations are reused instead of page-faulted in every step
    try:
        rv = app(args=argv, standalone_mode=False)
        if isinstance(rv, int):  # click returns Exit codes in non-standalone mode
            return rv
    except UserError as e:
        typer.echo(f"error: {e}", err=True)
        return 1
    except typer.Exit as e:
        return e.exit_code
    except typer.Abort:
        typer.echo("aborted", err=True)
        return 130
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        return 130
    except Exception as e:  # usage errors (unknown option, missing argument, ...)
        if isinstance(e, _click_exceptions()):
            e.show()
            return e.exit_code
        raise
    return 0


def _click_exceptions() -> tuple:
    """Click's exception base classes: recent typer releases bundle their own copy of click
    (``typer._click``) beside any installed ``click``."""
    import importlib

    out = []
    for mod in ("click.exceptions", "typer._click.exceptions"):
        try:
            out.append(importlib.import_module(mod).ClickException)
        except (ImportError, AttributeError):
            pass
    return tuple(out)


if __name__ == "__main__":
    sys.exit(main())
