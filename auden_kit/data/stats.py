"""Corpus statistics: hours, speakers, duration histogram, speaking-rate outliers."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class CorpusStats:
    num_cuts: int = 0
    total_seconds: float = 0.0
    speakers: Counter = field(default_factory=Counter)
    durations: list[float] = field(default_factory=list)
    outliers: list[tuple[str, float]] = field(default_factory=list)  # (cut id, chars/s)

    @property
    def hours(self) -> float:
        return self.total_seconds / 3600

    def histogram(self, bins: int = 10) -> list[tuple[float, float, int]]:
        if not self.durations:
            return []
        lo, hi = min(self.durations), max(self.durations)
        width = (hi - lo) / bins or 1.0
        counts = [0] * bins
        for d in self.durations:
            counts[min(bins - 1, int((d - lo) / width))] += 1
        return [(lo + i * width, lo + (i + 1) * width, c) for i, c in enumerate(counts)]

    def render(self) -> str:
        lines = [
            f"cuts: {self.num_cuts}",
            f"total: {self.hours:.3f} h ({self.total_seconds:.1f} s)",
            f"speakers: {len(self.speakers)}",
        ]
        if self.durations:
            ds = sorted(self.durations)
            lines.append(f"duration s: min {ds[0]:.2f}  median {ds[len(ds) // 2]:.2f}  max {ds[-1]:.2f}")
            lines.append("histogram (s):")
            peak = max(c for _, _, c in self.histogram()) or 1
            for a, b, c in self.histogram():
                lines.append(f"  {a:6.2f}-{b:6.2f} {c:6d} {'#' * round(40 * c / peak)}")
        if self.outliers:
            lines.append(f"chars/s outliers ({len(self.outliers)}):")
            for cid, r in self.outliers[:20]:
                lines.append(f"  {cid}: {r:.1f} chars/s")
        return "\n".join(lines)


def corpus_stats(cuts, low: float = 5.0, high: float = 30.0) -> CorpusStats:
    """Statistics of a CutSet; cuts speaking fewer than ``low`` or more than ``high``
    characters per second are listed as outliers (often a wrong transcript)."""
    st = CorpusStats()
    for c in cuts:
        st.num_cuts += 1
        st.total_seconds += c.duration
        st.durations.append(c.duration)
        text = " ".join(s.text or "" for s in c.supervisions)
        for s in c.supervisions:
            if s.speaker:
                st.speakers[s.speaker] += 1
        if text and c.duration > 0:
            rate = len(text) / c.duration
            if rate < low or rate > high:
                st.outliers.append((c.id, rate))
    return st
