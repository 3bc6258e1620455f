"""``auden-kit bleu`` and ``auden-kit wer``: score a hypothesis file against a reference file.

``bleu`` (one sentence per line) scores the way `decode --cuts` scores speech translation: BLEU
(cased, or ``--lc``; tokenized for the target language) and chrF, each with its sacrebleu
signature. ``wer`` scores Kaldi text files (or lines) as `decode --cuts` scores ASR."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import List, Optional

import typer

from auden_kit.errors import UserError

EPILOG = ("Example: auden-kit bleu exp/decode/hyp-test-beam4.en-es.txt exp/decode/ref-test-beam4.en-es.txt   |   "
          "auden-kit bleu hyp.txt ref.txt --lc --json   |   auden-kit bleu hyp.txt ref.txt --lang ja   |   "
          "auden-kit bleu hyp.txt ref.0 ref.1 ref.2 ref.3   (four references per sentence)")

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
    ref: List[Path] = typer.Argument(..., help="References, line by line with the hypotheses; several files: "
                                               "several references per sentence (multi-reference BLEU)."),
    lc: bool = typer.Option(False, "--lc", help="Lowercase and remove punctuation first (as Auden/TTA and "
                                                "icefall report); default: case-sensitive."),
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

    hyps, refs = _lines(hyp), [_lines(r) for r in ref]
    for r, lines in zip(ref, refs):
        if len(hyps) != len(lines):
            raise UserError(f"'{hyp}' has {len(hyps)} lines but '{r}' has {len(lines)}: they must pair up line by "
                            "line")
    if not lang and (m := DIRECTION_FILE.search(hyp.name)):
        lang = m.group(2)
    scores = [corpus_bleu(hyps, refs, lc=lc, tokenize=tokenize or tokenizer_for(lang)), chrf(hyps, refs)]
    if json_out:
        typer.echo(json.dumps({s.name: {"score": round(s.score, 4), "signature": s.signature} for s in scores}))
    else:
        for s in scores:
            typer.echo(str(s))


WER_EPILOG = ("Example: auden-kit wer data/test/text exp/other_toolkit/hyp.txt   |   auden-kit wer ref.txt hyp.txt "
              "--plain --normalize   |   auden-kit wer ref hyp --cer --out-dir exp/score")


def wer(
    ref: Path = typer.Argument(..., help="References: Kaldi text ('<utt-id> <words>' per line), or one sentence "
                                         "per line with --plain."),
    hyp: Path = typer.Argument(..., help="Hypotheses, in the same form."),
    plain: bool = typer.Option(False, "--plain", help="Pair the files line by line (no utterance ids)."),
    normalize: bool = typer.Option(False, "--normalize", help="Case-fold and remove punctuation on both sides "
                                                               "first (ESPnet's lc.rm)."),
    cer: bool = typer.Option(False, "--cer", help="Score characters (spaces ignored). Without it, words; "
                                                  "Chinese and Japanese characters count one by one."),
    out_dir: Optional[Path] = typer.Option(None, help="Also write recogs-, errs- (per-utterance alignments, "
                                                      "frequent substitutions) and wer-summary-NAME.txt here."),
    name: str = typer.Option("score", help="NAME of the files --out-dir writes."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object instead of text."),
):
    """Word (or character) error rate of a hypothesis file against a reference file, as Kaldi's
    compute-wer: an utterance of the references that the hypotheses lack counts as all deleted; a
    hypothesis without a reference is not scored (both are noted)."""
    from auden_kit.data.corpora.folder import read_map
    from auden_kit.metrics.wer import compute_wer, normalize_for_scoring, write_results

    if plain:
        refs, hyps = _lines(ref), _lines(hyp)
        if len(hyps) != len(refs):
            raise UserError(f"'{hyp}' has {len(hyps)} lines but '{ref}' has {len(refs)}: with --plain they must "
                            "pair up line by line")
        rmap = {f"{i:06d}": t for i, t in enumerate(refs, 1)}
        hmap = {f"{i:06d}": t for i, t in enumerate(hyps, 1)}
    else:
        rmap, hmap = read_map(ref, allow_empty=True), read_map(hyp, allow_empty=True)
        extra = [u for u in hmap if u not in rmap]
        if extra and len(extra) == len(hmap):
            raise UserError(f"no utterance of '{hyp}' is in '{ref}' (e.g. '{extra[0]}'): files of one sentence per "
                            "line need --plain")
    if not rmap:
        raise UserError(f"'{ref}' holds no reference")
    missing = [u for u in rmap if u not in hmap]
    fold = normalize_for_scoring if normalize else (lambda t: t)
    pairs = [(u, fold(rmap[u]), fold(hmap.get(u, ""))) for u in rmap]
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        stats = write_results(out_dir, name, pairs, char_level=cer)
    else:
        stats = compute_wer(pairs, char_level=cer)
    line = stats.summary().replace("%WER", "%CER", 1) if cer else stats.summary()
    if json_out:
        typer.echo(json.dumps({"cer" if cer else "wer": round(stats.wer, 4), "errors": stats.errors,
                               "ref_units": stats.ref_words, "ins": stats.ins, "del": stats.dels, "sub": stats.subs,
                               "utterances": len(pairs), "missing": len(missing),
                               "unscored_hypotheses": 0 if plain else len(extra), "normalized": normalize}))
    else:
        typer.echo(f"{line}  ({len(pairs)} utterances{', case-folded, without punctuation' if normalize else ''})")
        if missing:
            typer.echo(f"note: {len(missing)} of {len(rmap)} reference utterance(s) have no hypothesis and count "
                       f"as deleted, e.g. '{missing[0]}'")
        if not plain and extra:
            typer.echo(f"note: {len(extra)} hypothesis utterance(s) have no reference and are not scored, e.g. "
                       f"'{extra[0]}'")
        if out_dir is not None:
            typer.echo(f"details: {out_dir}/errs-{name}.txt")
