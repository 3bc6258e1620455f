"""``auden-kit bleu``: score a hypothesis file against a reference file (one sentence per line),
the way `decode --cuts` scores speech translation: BLEU (cased, or ``--lc``; tokenized for the
target language) and chrF, each with its sacrebleu signature."""

from __future__ import annotations

import json
import re
from pathlib import Path

import typer

from auden_kit.errors import UserError

EPILOG = ("Example: auden-kit bleu exp/decode/hyp-test-beam4.en-es.txt exp/decode/ref-test-beam4.en-es.txt   |   "
          "auden-kit bleu hyp.txt ref.txt --lc --json   |   auden-kit bleu hyp.txt ref.txt --lang ja")

# decode's per-direction files: hyp-<name>.<src>-<tgt>.txt
DIRECTION_FILE = re.compile(r"\.([A-Za-z]{2,3}(?:_[A-Za-z]{2,4})?)-([A-Za-z]{2,3}(?:[-_][A-Za-z]{2,4})?)\.txt$")


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
    lang: str = typer.Option("", "--lang", help="The target language (picks the tokenizer); default: from a "
                                                "file name decode wrote (hyp-test.en-zh.txt: zh)."),
    tokenize: str = typer.Option("", help="sacrebleu tokenizer: 13a, zh, char, intl or none (default: zh for "
                                          "Chinese, char for Japanese, Thai and other languages written without "
                                          "spaces, else 13a)."),
):
    """BLEU and chrF of a hypothesis file against a reference file, with sacrebleu signatures."""
    from auden_kit.metrics.bleu import bleu as corpus_bleu
    from auden_kit.metrics.bleu import chrf, tokenizer_for

    hyps, refs = _lines(hyp), _lines(ref)
    if len(hyps) != len(refs):
        raise UserError(f"'{hyp}' has {len(hyps)} lines but '{ref}' has {len(refs)}: they must pair up line by line")
    if not lang and (m := DIRECTION_FILE.search(hyp.name)):
        lang = m.group(2)
    scores = [corpus_bleu(hyps, refs, lc=lc, tokenize=tokenize or tokenizer_for(lang)), chrf(hyps, refs)]
    if json_out:
        typer.echo(json.dumps({s.name: {"score": round(s.score, 4), "signature": s.signature} for s in scores}))
    else:
        for s in scores:
            typer.echo(str(s))
