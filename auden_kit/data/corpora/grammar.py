"""A small English grammar for the synthetic corpus: sentences with a controllable vocabulary.

Words are grouped by part of speech; a template is a sequence of categories
(or literal words). ``Grammar(vocab_size=N)`` keeps the first words of each
category so that the total is about ``N``; sampling with a seeded generator
gives the same sentences for the same seed.
"""

from __future__ import annotations

import random

WORDS: dict[str, list[str]] = {
    "DET": "the a every one my your his her our their this that some".split(),
    "ADJ": (
        "big small old young red green blue happy quiet bright dark warm cold quick slow heavy "
        "gentle clever brave tired hungry busy strange lucky silver golden wooden tiny tall "
        "yellow black white proud calm funny kind wild rich poor famous lonely careful"
    ).split(),
    "AGENT": (
        "cat dog bird horse child farmer teacher doctor sailor king queen baker driver girl boy "
        "man woman friend neighbor student captain pilot artist painter singer writer soldier "
        "hunter fox rabbit mouse lion tiger wolf bear nurse cook fisherman merchant"
    ).split(),
    "OBJ": (
        "apple book letter ball box cup key lamp map coat hat ring stone boat car bread cake "
        "basket candle chair table window door picture bottle blanket bell pencil flower "
        "clock hammer rope shoe wagon kettle mirror ladder drum guitar"
    ).split(),
    "VT": (
        "found saw took carried painted opened closed dropped washed bought sold moved lifted "
        "held hid kept made brought wanted cleaned fixed liked pushed pulled needed"
    ).split(),
    "VI": (
        "walked ran slept waited sang danced laughed sat stood jumped worked played smiled "
        "rested stayed arrived shouted listened cried travelled"
    ).split(),
    "PREP": "in on near behind under beside inside across through over by".split(),
    "PLACE": (
        "garden kitchen market river forest village city school house field harbor station "
        "library church castle bridge valley mountain island street park farm hall shop tower "
        "beach office hotel cellar meadow"
    ).split(),
    "ADV": "today yesterday again slowly quickly quietly early late once tonight carefully happily soon".split(),
    "NAME": "john mary peter anna david susan james lucy thomas emma robert alice george helen henry kate".split(),
}

TEMPLATES: list[list[str]] = [
    ["DET", "ADJ", "AGENT", "VT", "DET", "OBJ", "PREP", "the", "PLACE"],
    ["DET", "AGENT", "VI", "PREP", "the", "ADJ", "PLACE", "ADV"],
    ["NAME", "VT", "DET", "ADJ", "OBJ", "ADV"],
    ["NAME", "and", "NAME", "VI", "PREP", "the", "PLACE"],
    ["DET", "ADJ", "AGENT", "VT", "NAME", "PREP", "the", "PLACE"],
    ["ADV", "DET", "AGENT", "VT", "DET", "ADJ", "ADJ", "OBJ"],
    ["DET", "OBJ", "PREP", "the", "PLACE", "was", "ADJ"],
    ["NAME", "VI", "ADV", "and", "the", "AGENT", "VI", "too"],
    ["DET", "ADJ", "OBJ", "was", "PREP", "DET", "ADJ", "PLACE"],
    ["the", "AGENT", "and", "the", "AGENT", "VT", "DET", "OBJ"],
]


class Grammar:
    """Sentence sampler over :data:`TEMPLATES` with about ``vocab_size`` content words."""

    def __init__(self, vocab_size: int | None = None):
        total = sum(len(v) for v in WORDS.values())
        if vocab_size is None or vocab_size <= 0 or vocab_size >= total:
            self.words = {k: list(v) for k, v in WORDS.items()}
        else:
            frac = vocab_size / total
            self.words = {k: v[: max(2, round(len(v) * frac))] for k, v in WORDS.items()}

    @property
    def vocabulary(self) -> list[str]:
        literal = {w for t in TEMPLATES for w in t if w not in self.words}
        return sorted(set(w for v in self.words.values() for w in v) | literal)

    def sample(self, rng: random.Random) -> str:
        template = rng.choice(TEMPLATES)
        return " ".join(rng.choice(self.words[w]) if w in self.words else w for w in template)

    def sample_unique(self, n: int, rng: random.Random, exclude: set[str] | None = None) -> list[str]:
        """``n`` distinct sentences not in ``exclude`` (which is updated)."""
        seen = exclude if exclude is not None else set()
        out: list[str] = []
        tries = 0
        while len(out) < n:
            s = self.sample(rng)
            tries += 1
            if s not in seen:
                seen.add(s)
                out.append(s)
            elif tries > 50 * n + 1000:
                raise ValueError(
                    f"the grammar cannot make {n} distinct sentences with this vocabulary; "
                    "raise --vocab-size or ask for fewer utterances"
                )
        return out
