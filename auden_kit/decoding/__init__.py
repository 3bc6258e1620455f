"""Searches: transducer greedy / modified beam search, CTC greedy / prefix beam."""

from dataclasses import dataclass, field


@dataclass
class Hypothesis:
    """One decoding result: token ids, their output-frame indices, and a score."""

    tokens: list = field(default_factory=list)
    frames: list = field(default_factory=list)
    score: float = 0.0
