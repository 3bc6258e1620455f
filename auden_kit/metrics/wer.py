"""Word (or character) error rate with kaldialign, and icefall-style result files."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from auden_kit.io import atomic_write_text

EPS = "*"

# Scripts written without spaces between words (Chinese hanzi, Japanese kana and kanji) are scored
# per character, as WeNet, ESPnet and the M2MeT/AISHELL results do (CER / mixed error rate);
# words of other scripts in the same text stay words. English text is unchanged.
_UNSPACED = re.compile("([\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f])")


def normalize_for_scoring(text: str) -> str:
    """Lowercased, every Unicode punctuation character removed (an apostrophe inside a word kept:
    "don't"), spaces collapsed: references written for people ("Hello? I'm Diane.") against a
    model's word output ("HELLO I'M DIANE"). ESPnet's ``lc.rm``: what lowercased BLEU, the ST
    transcript's WER, cpWER and ``decode --normalize`` all score."""
    out = []
    for i, ch in enumerate(text):
        if unicodedata.category(ch).startswith("P"):
            inner = ch == "'" and 0 < i < len(text) - 1 and text[i - 1].isalnum() and text[i + 1].isalnum()
            out.append(ch if inner else " ")
        else:
            out.append(ch)
    return " ".join("".join(out).lower().split())


def scoring_units(text: str) -> list[str]:
    """The units a text is scored in: whitespace-separated words, with every character of an
    unspaced script (CJK) a unit of its own."""
    return _UNSPACED.sub(" \\1 ", text).split()


@dataclass
class ErrorStats:
    ins: int = 0
    dels: int = 0
    subs: int = 0
    ref_words: int = 0
    sentences: int = 0
    sentence_errors: int = 0
    per_utt: list = field(default_factory=list)  # (id, ref words, hyp words, alignment)
    sub_pairs: Counter = field(default_factory=Counter)

    @property
    def errors(self) -> int:
        return self.ins + self.dels + self.subs

    @property
    def wer(self) -> float:
        return 100.0 * self.errors / max(1, self.ref_words)

    def summary(self) -> str:
        return (f"%WER {self.wer:.2f} [ {self.errors} / {self.ref_words}, {self.ins} ins, {self.dels} del, "
                f"{self.subs} sub ]  %SER {100.0 * self.sentence_errors / max(1, self.sentences):.2f}")


def compute_wer(pairs, char_level: bool = False) -> ErrorStats:
    """pairs: iterable of (utt_id, reference text, hypothesis text)."""
    import kaldialign

    st = ErrorStats()
    for utt_id, ref, hyp in pairs:
        r = list(ref.replace(" ", "")) if char_level else scoring_units(ref)
        h = list(hyp.replace(" ", "")) if char_level else scoring_units(hyp)
        ali = kaldialign.align(r, h, EPS)
        n_err = 0
        for a, b in ali:
            if a == EPS:
                st.ins += 1
            elif b == EPS:
                st.dels += 1
            elif a != b:
                st.subs += 1
                st.sub_pairs[(a, b)] += 1
            else:
                continue
            n_err += 1
        st.ref_words += len(r)
        st.sentences += 1
        st.sentence_errors += int(n_err > 0)
        st.per_utt.append((utt_id, r, h, ali))
    return st


def write_results(out_dir: str | Path, name: str, results: list[tuple[str, str, str]],
                  char_level: bool = False) -> ErrorStats:
    """Write ``recogs-NAME.txt``, ``errs-NAME.txt`` and ``wer-summary-NAME.txt``; return the stats."""
    out_dir = Path(out_dir)
    stats = compute_wer(results, char_level=char_level)
    recogs = []
    for utt_id, ref, hyp in sorted(results):
        recogs.append(f"{utt_id}:\tref={ref.split()}\n{utt_id}:\thyp={hyp.split()}\n")
    atomic_write_text(out_dir / f"recogs-{name}.txt", "".join(recogs))
    lines = [stats.summary(), "", "PER-UTT DETAILS: corr or (ref->hyp)"]
    for utt_id, _, _, ali in sorted(stats.per_utt, key=lambda x: x[0]):
        lines.append(f"{utt_id}:\t" + " ".join(a if a == b else f"({a}->{b})" for a, b in ali))
    lines += ["", "SUBSTITUTIONS: count ref -> hyp"]
    for (a, b), c in stats.sub_pairs.most_common():
        lines.append(f"{c}   {a} -> {b}")
    atomic_write_text(out_dir / f"errs-{name}.txt", "\n".join(lines) + "\n")
    atomic_write_text(out_dir / f"wer-summary-{name}.txt", f"settings\tWER\n{name}\t{stats.wer:.2f}\n")
    return stats
