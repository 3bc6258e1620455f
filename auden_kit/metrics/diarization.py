"""Who spoke what and when: cpWER, tcpWER, speaker-agnostic WER, DER, speaker counting.

Every function takes segments (:class:`auden_kit.results.Segment`: start, end, speaker, text) of
one recording, reference and hypothesis. :func:`score_meetings` scores a whole test set and is
what recipes report; a recording whose decoding failed (hypothesis ``None``) is scored as a
complete deletion / miss and counted in ``fail_rate``: it is never dropped.

* **cpWER** (concatenated minimum-permutation WER, CHiME-6): the words of each speaker are
  concatenated in time order, every reference speaker is paired with one hypothesis speaker (or
  nobody) so that the summed edit distance is smallest (linear assignment), unpaired speakers'
  words are all deletions / insertions.
* **tcpWER** (time-constrained cpWER, as MeetEval defines it): like cpWER, but a hypothesis word
  may only match or substitute a reference word whose time overlaps its own widened by
  ``collar`` seconds; word times are spread over the segment in proportion to word length.
* **WER** (speaker-agnostic): all words of the recording in time order, speakers ignored.
* **DER**: frame-based (10 ms), md-eval style. Frames within ``collar`` seconds of a reference
  segment boundary are not scored; overlapped speech is scored; hypothesis speakers are mapped
  to reference speakers one-to-one to maximise matched time. DER = (miss + false alarm +
  confusion) / reference speaker time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Optional, Sequence

import numpy as np

from auden_kit.metrics.wer import scoring_units

FRAME = 0.01  # DER resolution in seconds


# ---------------------------------------------------------------------------- word level
def _words(segs: Sequence) -> list[str]:
    return [w for s in sorted(segs, key=lambda s: (s.start, s.end)) for w in scoring_units(s.text or "")]


def _timed_words(segs: Sequence) -> list[tuple[str, float, float]]:
    """Words with times spread over their segment in proportion to their length (+1 for the
    space), in time order."""
    out = []
    for s in sorted(segs, key=lambda s: (s.start, s.end)):
        ws = scoring_units(s.text or "")
        if not ws:
            continue
        total = sum(len(w) + 1 for w in ws)
        t = s.start
        span = max(s.end - s.start, 0.0)
        for w in ws:
            d = span * (len(w) + 1) / total
            out.append((w, t, t + d))
            t += d
    return out


def _by_speaker(segs: Sequence) -> dict[str, list]:
    out: dict[str, list] = {}
    for s in segs:
        out.setdefault(s.speaker, []).append(s)
    return out


def edit_ops(ref: Sequence, hyp: Sequence, allowed: Optional[np.ndarray] = None) -> tuple[int, int, int]:
    """(substitutions, deletions, insertions) of the cheapest alignment of ``ref`` to ``hyp``
    (word lists). ``allowed[i, j]`` False forbids pairing ref word i with hyp word j (time
    constraint): they can then only be a deletion plus an insertion."""
    n, m = len(ref), len(hyp)
    if n == 0 or m == 0:
        return 0, n, m
    eq = np.array([[a == b for b in hyp] for a in ref], dtype=bool)
    if allowed is None:
        allowed = np.ones((n, m), dtype=bool)
    big = n + m + 1
    # dp over rows; cost and its (sub, del, ins) split kept alongside
    cost = np.arange(m + 1)
    subs = np.zeros(m + 1, dtype=np.int64)
    dels = np.zeros(m + 1, dtype=np.int64)
    ins = np.arange(m + 1)
    js = np.arange(m + 1)
    for i in range(n):
        # candidates for row i+1 without horizontal moves: deletion (from above) or diagonal
        diag_cost = cost[:-1] + np.where(allowed[i], np.where(eq[i], 0, 1), big)
        up_cost = cost + 1
        new = up_cost.copy()
        n_sub, n_del, n_ins = subs.copy(), dels + 1, ins.copy()
        take = np.concatenate([[False], diag_cost < new[1:]])
        new[take] = diag_cost[take[1:]]
        n_sub[take] = subs[:-1][take[1:]] + (~eq[i][take[1:]]).astype(np.int64)
        n_del[take] = dels[:-1][take[1:]]
        n_ins[take] = ins[:-1][take[1:]]
        # horizontal moves (insertions): new[j] = min_k<=j new[k] + (j - k)
        best = np.minimum.accumulate(new - js)
        # the argmin: the last k <= j reaching the running minimum (ties keep the non-horizontal move)
        src = np.maximum.accumulate(np.where(new - js == best, js, 0))
        cost = best + js
        subs, dels, ins = n_sub[src], n_del[src], n_ins[src] + (js - src)
    return int(subs[m]), int(dels[m]), int(ins[m])


@dataclass
class WordErrors:
    subs: int = 0
    dels: int = 0
    ins: int = 0
    ref_words: int = 0

    @property
    def errors(self) -> int:
        return self.subs + self.dels + self.ins

    def rate(self) -> float:
        return 100.0 * self.errors / max(1, self.ref_words)

    def add(self, other: "WordErrors") -> "WordErrors":
        return WordErrors(self.subs + other.subs, self.dels + other.dels, self.ins + other.ins,
                          self.ref_words + other.ref_words)


def _assign(cost: np.ndarray) -> list[tuple[int, int]]:
    """Minimum-cost one-to-one pairs of rows and columns (rectangular allowed)."""
    from scipy.optimize import linear_sum_assignment

    if cost.size == 0:
        return []
    r, c = linear_sum_assignment(cost)
    return list(zip(r.tolist(), c.tolist()))


def cp_errors(ref: Sequence, hyp: Sequence, collar: Optional[float] = None) -> tuple[WordErrors, dict]:
    """cpWER (``collar`` None) or tcpWER (``collar`` seconds) errors of one recording, and the
    speaker mapping found {ref speaker: hyp speaker}."""
    R, H = _by_speaker(ref), _by_speaker(hyp)
    rs, hs = sorted(R), sorted(H)
    if collar is None:
        rw = {k: _words(v) for k, v in R.items()}
        hw = {k: _words(v) for k, v in H.items()}
    else:
        rt = {k: _timed_words(v) for k, v in R.items()}
        ht = {k: _timed_words(v) for k, v in H.items()}
        rw = {k: [w for w, _, _ in v] for k, v in rt.items()}
        hw = {k: [w for w, _, _ in v] for k, v in ht.items()}

    def pair(a, b) -> tuple[int, int, int]:
        allowed = None
        if collar is not None and rt[a] and ht[b]:
            r0 = np.array([s for _, s, _ in rt[a]]); r1 = np.array([e for _, _, e in rt[a]])
            h0 = np.array([s for _, s, _ in ht[b]]) - collar; h1 = np.array([e for _, _, e in ht[b]]) + collar
            allowed = (h0[None, :] < r1[:, None]) & (h1[None, :] > r0[:, None])
        return edit_ops(rw[a], hw[b], allowed)

    ops = {(i, j): pair(a, b) for i, a in enumerate(rs) for j, b in enumerate(hs)}
    n = len(rs) + len(hs)  # square: every speaker may also pair with "nobody"
    cost = np.zeros((n, n))
    for i, a in enumerate(rs):
        for j in range(n):
            cost[i, j] = sum(ops[(i, j)]) if j < len(hs) else len(rw[a])
    for j, b in enumerate(hs):
        for i in range(len(rs), n):
            cost[i, j] = len(hw[b])
    tot = WordErrors(ref_words=sum(len(v) for v in rw.values()))
    mapping = {}
    for i, j in _assign(cost):
        if i < len(rs) and j < len(hs):
            s, d, ins = ops[(i, j)]
            tot = tot.add(WordErrors(s, d, ins))
            mapping[rs[i]] = hs[j]
        elif i < len(rs):
            tot = tot.add(WordErrors(dels=len(rw[rs[i]])))
        elif j < len(hs):
            tot = tot.add(WordErrors(ins=len(hw[hs[j]])))
    return tot, mapping


def agnostic_errors(ref: Sequence, hyp: Sequence) -> WordErrors:
    """Speaker-agnostic errors: all words in time order against all words in time order."""
    r, h = _words(ref), _words(hyp)
    s, d, i = edit_ops(r, h)
    return WordErrors(s, d, i, len(r))


# ---------------------------------------------------------------------------- DER
@dataclass
class DiarErrors:
    miss: float = 0.0
    false_alarm: float = 0.0
    confusion: float = 0.0
    total: float = 0.0  # scored reference speaker time, seconds

    def add(self, o: "DiarErrors") -> "DiarErrors":
        return DiarErrors(self.miss + o.miss, self.false_alarm + o.false_alarm, self.confusion + o.confusion,
                          self.total + o.total)

    def rate(self) -> float:
        return 100.0 * (self.miss + self.false_alarm + self.confusion) / max(self.total, 1e-9)


def _activity(segs: Sequence, speakers: list[str], n: int) -> np.ndarray:
    a = np.zeros((n, len(speakers)), dtype=bool)
    idx = {s: i for i, s in enumerate(speakers)}
    for s in segs:
        lo, hi = int(round(s.start / FRAME)), int(round(s.end / FRAME))
        a[max(lo, 0): min(hi, n), idx[s.speaker]] = True
    return a


def diarization_errors(ref: Sequence, hyp: Sequence, collar: float = 0.25) -> tuple[DiarErrors, dict]:
    """DER terms of one recording (seconds) and the optimal mapping {ref speaker: hyp speaker}."""
    end = max([s.end for s in ref] + [s.end for s in hyp] + [0.0])
    n = int(np.ceil(end / FRAME)) + 1
    rs, hs = sorted({s.speaker for s in ref}), sorted({s.speaker for s in hyp})
    R, H = _activity(ref, rs, n), _activity(hyp, hs, n)
    scored = np.ones(n, dtype=bool)
    if collar > 0:
        c = int(round(collar / FRAME))
        for s in ref:
            for t in (s.start, s.end):
                f = int(round(t / FRAME))
                scored[max(f - c, 0): f + c] = False
    R, H = R[scored], H[scored]
    mapping = {}
    overlap = R.T.astype(np.int64) @ H.astype(np.int64) if rs and hs else np.zeros((len(rs), len(hs)))
    correct = np.zeros(R.shape[0], dtype=np.int64)
    for i, j in _assign(-overlap):
        mapping[rs[i]] = hs[j]
        correct += R[:, i] & H[:, j]
    nr, nh = R.sum(1), H.sum(1)
    miss = np.maximum(nr - nh, 0).sum()
    fa = np.maximum(nh - nr, 0).sum()
    conf = (np.minimum(nr, nh) - correct).sum()
    return DiarErrors(miss * FRAME, fa * FRAME, conf * FRAME, nr.sum() * FRAME), mapping


# ---------------------------------------------------------------------------- a test set
@dataclass
class MeetingScores:
    cp: WordErrors = field(default_factory=WordErrors)
    tcp: WordErrors = field(default_factory=WordErrors)
    agnostic: WordErrors = field(default_factory=WordErrors)
    der: DiarErrors = field(default_factory=DiarErrors)
    der0: DiarErrors = field(default_factory=DiarErrors)
    count_ok: int = 0
    count_abs_err: int = 0
    failed: int = 0
    n: int = 0
    gender_ok: int = 0
    gender_n: int = 0
    gender_predicted: bool = False
    per_meeting: list = field(default_factory=list)


def score_meetings(items: Iterable[tuple[str, Sequence, Optional[Sequence]]], collar: float = 0.25,
                   tcp_collar: float = 5.0) -> dict:
    """Score (recording id, reference segments, hypothesis segments or None when decoding
    failed) over a test set. Returns percentages (cpwer, tcpwer, wer, der, der_collar0, miss,
    false_alarm, confusion), speaker counting (spk_count_acc in %, spk_count_mae), fail_rate in %,
    the collars used, and ``per_meeting`` rows; with genders on both sides (``Segment.gender``),
    ``gender_acc``: the share of reference speakers of known gender whose DER-mapped hypothesis
    speaker has that gender (an unmapped speaker counts as wrong)."""
    t = MeetingScores()
    for rid, ref, hyp in items:
        failed = hyp is None
        hyp = [] if failed else [s for s in hyp if s.end > s.start or (s.text or "").strip()]
        cp, _ = cp_errors(ref, hyp)
        tcp, _ = cp_errors(ref, hyp, collar=tcp_collar)
        ag = agnostic_errors(ref, hyp)
        der, mapping = diarization_errors(ref, hyp, collar)
        der0, _ = diarization_errors(ref, hyp, 0.0)
        nref, nhyp = len({s.speaker for s in ref}), len({s.speaker for s in hyp})
        t.cp, t.tcp, t.agnostic = t.cp.add(cp), t.tcp.add(tcp), t.agnostic.add(ag)
        t.der, t.der0 = t.der.add(der), t.der0.add(der0)
        t.count_ok += int(nref == nhyp)
        t.count_abs_err += abs(nref - nhyp)
        t.failed += int(failed)
        t.n += 1
        ref_g, hyp_g = _genders(ref), _genders(hyp)
        for spk, g in ref_g.items():
            t.gender_n += 1
            t.gender_ok += int(hyp_g.get(mapping.get(spk)) == g)
        t.gender_predicted = t.gender_predicted or bool(hyp_g)
        t.per_meeting.append({"id": rid, "cpwer": round(cp.rate(), 2), "tcpwer": round(tcp.rate(), 2),
                              "der": round(der.rate(), 2), "ref_speakers": nref, "hyp_speakers": nhyp,
                              "failed": failed, "mapping": mapping})
    n = max(t.n, 1)
    return {
        "cpwer": round(t.cp.rate(), 2), "tcpwer": round(t.tcp.rate(), 2), "wer": round(t.agnostic.rate(), 2),
        "der": round(t.der.rate(), 2), "der_collar0": round(t.der0.rate(), 2),
        "miss": round(100 * t.der.miss / max(t.der.total, 1e-9), 2),
        "false_alarm": round(100 * t.der.false_alarm / max(t.der.total, 1e-9), 2),
        "confusion": round(100 * t.der.confusion / max(t.der.total, 1e-9), 2),
        "spk_count_acc": round(100.0 * t.count_ok / n, 2), "spk_count_mae": round(t.count_abs_err / n, 3),
        "fail_rate": round(100.0 * t.failed / n, 2), "meetings": t.n, "ref_words": t.cp.ref_words,
        "collar": collar, "tcp_collar": tcp_collar, "per_meeting": t.per_meeting,
        **({"gender_acc": round(100.0 * t.gender_ok / t.gender_n, 2)} if t.gender_n and t.gender_predicted else {}),
    }


def _genders(segs: Sequence) -> dict[str, str]:
    """{speaker: gender} from segments (a speaker's first known gender)."""
    out: dict[str, str] = {}
    for s in segs:
        if getattr(s, "gender", "") and s.speaker not in out:
            out[s.speaker] = s.gender
    return out


def write_meeting_results(results, out_dir, name: str) -> dict:
    """For decoded meetings (:class:`~auden_kit.results.SegmentsResult` with ``refs``): write
    ``results-NAME.jsonl``, ``metrics-NAME.json`` (the test-set scores), ``per-meeting-NAME.json``,
    and the hypotheses and references as RTTM, STM and SegLST (``hyp-NAME.*``, ``ref-NAME.*``).
    Returns the metrics."""
    import json
    from pathlib import Path

    from auden_kit.data.segments import write_segments
    from auden_kit.io import atomic_write_text

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / f"results-{name}.jsonl",
                      "".join(json.dumps(r.to_dict(), ensure_ascii=False) + "\n" for r in results))
    scored = [(r.cut_id, r.refs, None if r.failed else r.segments) for r in results if r.refs is not None]
    metrics: dict = {}
    if scored:
        metrics = score_meetings(scored)
        atomic_write_text(out / f"per-meeting-{name}.json", json.dumps(metrics.pop("per_meeting"), indent=1) + "\n")
    atomic_write_text(out / f"metrics-{name}.json", json.dumps(metrics, indent=1) + "\n")
    for fmt in ("rttm", "stm", "json"):
        write_segments(out / f"hyp-{name}.{fmt}", {r.cut_id: r.segments for r in results}, fmt)
        if scored:
            write_segments(out / f"ref-{name}.{fmt}", {r.cut_id: r.refs or [] for r in results}, fmt)
    return metrics


def summary_line(m: dict) -> str:
    if not m:
        return "no references: nothing scored"
    return (f"cpWER {m['cpwer']:.2f}  tcpWER {m['tcpwer']:.2f}  WER {m['wer']:.2f}  DER {m['der']:.2f} "
            f"(collar {m['collar']} s; {m['der_collar0']:.2f} at 0)  speaker count {m['spk_count_acc']:.1f} %  "
            f"fail rate {m['fail_rate']:.1f} %  "
            + (f"gender {m['gender_acc']:.1f} %  " if "gender_acc" in m else "") + f"({m['meetings']} recordings)")
