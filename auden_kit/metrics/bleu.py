"""Translation scores the field's way, through sacrebleu.

* :func:`bleu` corpus BLEU on detokenised text: case-sensitive ``13a`` by default (ESPnet-ST,
  fairseq, the WMT convention); ``lc=True`` lowercases and removes punctuation first, the form
  Auden/TTA and icefall report.
* :func:`chrf` character n-gram F-score (chrF2), alongside.

The tokenizer follows the target language (:func:`tokenizer_for`): ``zh`` for Chinese (what
sacrebleu itself picks for ``-l xx-zh``), ``char`` for languages written without spaces between
words (Japanese, Thai, Lao, Khmer, Burmese: CoVoST 2's character-level BLEU; sacrebleu's
``ja-mecab`` would need MeCab), ``13a`` for the rest.

Every score comes with sacrebleu's signature (``nrefs:1|case:mixed|eff:no|tok:13a|...``) so a
number can be compared with another paper's only when the signatures match.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

from auden_kit.errors import UserError
from auden_kit.metrics.wer import normalize_for_scoring


@dataclasses.dataclass
class Score:
    name: str  # BLEU, BLEU-lc, chrF
    score: float
    signature: str
    detail: str = ""  # sacrebleu's full line (n-gram precisions, brevity penalty)

    def __str__(self) -> str:
        return f"{self.name} {self.score:.2f}  ({self.signature})"


ZH_LANGUAGES = frozenset("zh zho chi cmn yue wuu nan hak gan hsn cdo".split())
CHAR_LANGUAGES = frozenset("ja jpn th tha lo lao km khm my mya bo bod".split())
TOKENIZERS = ("13a", "zh", "char", "intl", "none")


def tokenizer_for(lang: str | None) -> str:
    """sacrebleu's tokenizer for text in ``lang`` (a language code, region allowed: ``zh-TW``)."""
    base = (lang or "").lower().replace("_", "-").split("-")[0]
    return "zh" if base in ZH_LANGUAGES else "char" if base in CHAR_LANGUAGES else "13a"


def _streams(hyps: Sequence[str], refs) -> list[list[str]]:
    """``refs`` as sacrebleu's reference streams: one reference per hypothesis (a list of str), or
    several (a list of such lists: every hypothesis has one in each)."""
    try:
        import sacrebleu  # noqa: F401
    except ImportError:  # pragma: no cover - a dependency of the package
        raise UserError("sacrebleu is not installed: run ./setup.sh (or pip install sacrebleu)") from None
    streams = [list(refs)] if not refs or isinstance(refs[0], str) else [list(r) for r in refs]
    for k, r in enumerate(streams):
        if len(hyps) != len(r):
            which = f"reference set {k + 1} has" if len(streams) > 1 else "but"
            raise UserError(f"{len(hyps)} hypotheses {which} {len(r)} references: they must pair up line by line")
    if not hyps:
        raise UserError("no hypothesis/reference pairs to score")
    return streams


def bleu(hyps: Sequence[str], refs, lc: bool = False, tokenize: str = "13a") -> Score:
    """Corpus BLEU of ``hyps`` against their references: one each (a list of str) or several
    (a list of reference lists; Fisher-CallHome, NIST). ``lc``: lowercase and remove punctuation
    from both sides before scoring (sacrebleu then also runs lowercased); ``tokenize``: one of
    :data:`TOKENIZERS`."""
    from sacrebleu.metrics import BLEU

    if tokenize not in TOKENIZERS:
        raise UserError(f"BLEU tokenizer '{tokenize}' is not one of {', '.join(TOKENIZERS)}")
    streams = _streams(hyps, refs)
    if lc:
        hyps, streams = [normalize_for_scoring(h) for h in hyps], [[normalize_for_scoring(r) for r in st]
                                                                    for st in streams]
    metric = BLEU(lowercase=lc, tokenize=tokenize)
    s = metric.corpus_score(list(hyps), streams)
    sig = str(metric.get_signature()) + ("|punct:removed" if lc else "")
    return Score("BLEU-lc" if lc else "BLEU", float(s.score), sig, str(s))


def chrf(hyps: Sequence[str], refs) -> Score:
    """Corpus chrF2 (character 6-grams, beta 2) of ``hyps`` against their references (as :func:`bleu`)."""
    from sacrebleu.metrics import CHRF

    streams = _streams(hyps, refs)
    metric = CHRF()
    s = metric.corpus_score(list(hyps), streams)
    return Score("chrF", float(s.score), str(metric.get_signature()), str(s))


def translation_scores(hyps: Sequence[str], refs: Sequence[str], lang: str | None = None) -> list[Score]:
    """BLEU (cased), BLEU-lc (no punctuation) and chrF of the same pairs; ``lang``: the target
    language, which picks the BLEU tokenizer (:func:`tokenizer_for`)."""
    tok = tokenizer_for(lang)
    return [bleu(hyps, refs, tokenize=tok), bleu(hyps, refs, lc=True, tokenize=tok), chrf(hyps, refs)]
