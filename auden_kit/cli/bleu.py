"""``auden-kit bleu``: score a hypothesis file against a reference file (one sentence per line),
the way `decode --cuts` scores speech translation: BLEU (cased 13a, or ``--lc``) and chrF, each
with its sacrebleu signature."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from auden_kit.errors import UserError

EPILOG = ("Example: auden-kit bleu exp/decode/hyp-test-beam4.en-es.txt exp/decode/ref-test-beam4.en-es.txt   |   "
          "auden-kit bleu hyp.txt ref.txt --lc --json")


def _lines(path: Path) -> list[str]:
    if not path.is_file():
        raise UserError(f"'{path}' does not exist")
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise UserError(f"'{path}' is not UTF-8 text ({e})") from None


def bleu(
    hyp: Path = typer.Argument(..., help="Hypotheses, one detokenised sentence per line."),
    ref: Path = typer.Argument(..., help="References, line by line with the hypotheses."),
    lc: bool = typer.Option(False, "--lc", help="Lowercase and remove punctuation first (as Auden/TTA and "
                                                "icefall report); default: case-sensitive 13a."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object instead of text."),
):
    """BLEU and chrF of a hypothesis file against a reference file, with sacrebleu signatures."""
    from auden_kit.metrics.bleu import bleu as corpus_bleu
    from auden_kit.metrics.bleu import chrf

    hyps, refs = _lines(hyp), _lines(ref)
    if len(hyps) != len(refs):
        raise UserError(f"'{hyp}' has {len(hyps)} lines but '{ref}' has {len(refs)}: they must pair up line by line")
    scores = [corpus_bleu(hyps, refs, lc=lc), chrf(hyps, refs)]
    if json_out:
        typer.echo(json.dumps({s.name: {"score": round(s.score, 4), "signature": s.signature} for s in scores}))
    else:
        for s in scores:
            typer.echo(str(s))
