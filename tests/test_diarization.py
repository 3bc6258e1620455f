"""Diarized-ASR metrics (cpWER, tcpWER, DER, speaker counting) and segment file formats."""

import json
import random

import pytest

from auden_kit.data.segments import NO_WORDS, read_segments, render_segments, write_segments
from auden_kit.errors import UserError
from auden_kit.metrics.diarization import cp_errors, diarization_errors, edit_ops, score_meetings
from auden_kit.results import Segment as S

REF = [S(0.0, 2.0, "A", "hello there how are you"), S(1.5, 3.5, "B", "fine thanks"),
       S(4.0, 6.0, "A", "good to hear"), S(6.5, 9.0, "C", "shall we start the meeting")]


def relabel(segs, m):
    return [S(s.start, s.end, m[s.speaker], s.text) for s in segs]


def shift(segs, d):
    return [S(s.start + d, s.end + d, s.speaker, s.text) for s in segs]


def test_identity_and_relabelling_give_zero():
    hyp = relabel(REF, {"A": "spk2", "B": "spk0", "C": "x"})
    r = score_meetings([("m", REF, REF), ("m2", REF, hyp)])
    for k in ("cpwer", "tcpwer", "wer", "der", "der_collar0", "miss", "false_alarm", "confusion", "fail_rate"):
        assert r[k] == 0.0, k
    assert r["spk_count_acc"] == 100.0 and r["spk_count_mae"] == 0
    assert r["per_meeting"][1]["mapping"] == {"A": "spk2", "B": "spk0", "C": "x"}


def test_collar_absorbs_small_shift():
    hyp = shift(REF, 0.2)
    der, _ = diarization_errors(REF, hyp, collar=0.25)
    assert der.rate() == 0.0
    der0, _ = diarization_errors(REF, hyp, collar=0.0)
    assert der0.rate() > 0
    # tcpWER: a 0.2 s shift is within a 0.5 s collar; a 30 s shift is not
    assert cp_errors(REF, hyp, collar=0.5)[0].errors == 0
    far = cp_errors(REF, shift(REF, 30.0), collar=0.5)[0]
    assert far.errors == 2 * far.ref_words  # every word: one deletion + one insertion
    assert cp_errors(REF, shift(REF, 30.0))[0].errors == 0  # cpWER ignores time


def test_hand_computed_cpwer():
    ref = [S(0, 1, "A", "a b c"), S(1, 2, "B", "d e")]
    # hyp speaker 1 got A's words with one substitution; B's words were given to a third speaker
    # together with an inserted word; one hyp speaker speaks nothing of the reference
    hyp = [S(0, 1, "1", "a x c"), S(1, 2, "2", "d e f"), S(2, 3, "3", "g")]
    e, m = cp_errors(ref, hyp)
    assert (e.subs, e.dels, e.ins, e.ref_words) == (1, 0, 2, 5)
    assert m == {"A": "1", "B": "2"}
    # a speaker split in two: one half matches, the other half is all insertions/deletions
    hyp2 = [S(0, 1, "1", "a b"), S(0.5, 1, "2", "c"), S(1, 2, "3", "d e")]
    e2, _ = cp_errors(ref, hyp2)
    assert (e2.dels, e2.ins, e2.subs) == (1, 1, 0)


def test_hand_computed_der():
    ref = [S(0, 10, "A"), S(5, 10, "B")]  # 15 s of speaker time, 5 s overlapped
    hyp = [S(0, 10, "x"), S(8, 12, "y")]  # B found for 2 s of 5, 2 s false alarm after the end
    d, m = diarization_errors(ref, hyp, collar=0.0)
    assert m == {"A": "x", "B": "y"}
    assert d.total == pytest.approx(15.0)
    assert d.miss == pytest.approx(3.0) and d.false_alarm == pytest.approx(2.0) and d.confusion == 0
    # wrong speaker for half of A's time: confusion
    hyp2 = [S(0, 5, "x"), S(5, 10, "y")]
    d2, _ = diarization_errors([S(0, 10, "A")], hyp2, collar=0.0)
    assert d2.confusion == pytest.approx(5.0) and d2.miss == 0 and d2.false_alarm == 0


def test_failed_and_empty_outputs_are_errors_not_dropped():
    r = score_meetings([("ok", REF, REF), ("failed", REF, None)])
    n = sum(len(s.text.split()) for s in REF)
    assert r["fail_rate"] == 50.0
    assert r["cpwer"] == pytest.approx(100.0 * n / (2 * n))
    assert r["miss"] == pytest.approx(50.0, abs=0.5)
    assert r["spk_count_acc"] == 50.0 and r["spk_count_mae"] == 1.5
    # degenerate hypothesis segments (negative or zero length, no text) never crash scoring
    bad = [S(3.0, 1.0, "A", ""), S(2.0, 2.0, "B", "")]
    r2 = score_meetings([("bad", REF, bad)])
    assert r2["cpwer"] == 100.0


def test_edit_ops_time_constraint():
    assert edit_ops(list("abc"), list("abc")) == (0, 0, 0)
    import numpy as np

    allowed = np.eye(3, dtype=bool)
    allowed[1, 1] = False
    assert edit_ops(list("abc"), list("abc"), allowed) == (0, 1, 1)


def test_der_matches_pyannote_metrics():
    pm = pytest.importorskip("pyannote.metrics.diarization")
    from pyannote.core import Annotation, Segment as PS

    rng = random.Random(0)
    for trial in range(8):
        def rand_segs(spks):
            out, t, last = [], 0.0, {}
            for _ in range(rng.randint(3, 8)):
                spk = rng.choice(spks)  # speakers overlap each other, never themselves
                a = max(t + rng.uniform(-0.5, 1.5), last.get(spk, 0.0) + 0.01)
                b = a + rng.uniform(0.3, 3.0)
                out.append(S(round(a, 2), round(b, 2), spk))
                t = last[spk] = round(b, 2)
            return out

        ref, hyp = rand_segs(["A", "B", "C"]), rand_segs(["1", "2"])
        for collar in (0.0, 0.25):
            ours = diarization_errors(ref, hyp, collar)[0].rate()
            R, H = Annotation(), Annotation()
            for k, s in enumerate(ref):
                R[PS(s.start, s.end), k] = s.speaker
            for k, s in enumerate(hyp):
                H[PS(s.start, s.end), k] = s.speaker
            # pyannote's collar is the total width (md-eval's is per side)
            theirs = 100 * pm.DiarizationErrorRate(collar=2 * collar, skip_overlap=False)(R, H)
            assert ours == pytest.approx(theirs, abs=0.6), (trial, collar)


@pytest.mark.parametrize("fmt,ext", [("rttm", "rttm"), ("stm", "stm"), ("json", "json")])
def test_formats_round_trip(tmp_path, fmt, ext):
    p = tmp_path / f"out.{ext}"
    wordless = REF + [S(9.2, 9.8, "B", "")]  # a talker found without words read (overlap): kept
    write_segments(p, {"rec1": wordless, "rec2": REF[:1]}, fmt)
    back = read_segments(p)
    assert sorted(back) == ["rec1", "rec2"]
    assert [(s.start, s.end, s.speaker) for s in back["rec1"]] == [(s.start, s.end, s.speaker) for s in wordless]
    if fmt != "rttm":
        assert [s.text for s in back["rec1"]] == [s.text for s in wordless]
    text = render_segments({"rec1": wordless}, "text").splitlines()
    assert text[0] == "# rec1" and text[1].endswith("A: hello there how are you") and text[-1].endswith(NO_WORDS)
    # scoring a file against itself
    assert score_meetings([(k, v, v) for k, v in back.items()])["der"] == 0.0


def test_bad_segment_files_name_the_line(tmp_path):
    p = tmp_path / "bad.rttm"
    p.write_text("SPEAKER rec 1 0.0 1.0 <NA> <NA> A <NA> <NA>\nSPEAKER rec 1 zero 1.0 <NA> <NA> A\n")
    with pytest.raises(UserError, match="line 2"):
        read_segments(p)
    q = tmp_path / "bad.json"
    q.write_text(json.dumps([{"speaker": "A"}]))
    with pytest.raises(UserError, match="SegLST"):
        read_segments(q)


def test_unspaced_scripts_are_scored_per_character():
    """Mandarin (AliMeeting) transcripts have no spaces: cpWER and WER count characters (CER, as
    M2MeT's cpCER), while English words in the same text stay words."""
    from auden_kit.metrics.wer import compute_wer, scoring_units

    assert scoring_units("我们 开会 ok go") == ["我", "们", "开", "会", "ok", "go"]
    assert scoring_units("hello there") == ["hello", "there"]
    assert compute_wer([("u", "我们今天开会", "我们明天开会")]).wer == pytest.approx(100 / 6)
    ref = [S(0, 2, "A", "我们今天开会"), S(2, 4, "B", "好的")]
    hyp = [S(0, 2, "x", "我们明天开会"), S(2, 4, "y", "好的")]
    e, _ = cp_errors(ref, hyp)
    assert (e.subs, e.ref_words) == (1, 8)


def test_score_segments_cli(tmp_path):
    """`auden-kit score-segments REF HYP`: STM vs STM scores words and times (text normalised:
    case and punctuation), an RTTM reference scores DER only, a reference recording missing from
    the hypothesis is a failure (all missed), and disjoint ids are an error naming both files."""
    import subprocess
    import sys

    cli = [sys.executable, "-m", "auden_kit.cli.main", "score-segments"]
    ref = {"m1": REF, "m2": REF}
    write_segments(tmp_path / "ref.stm", ref, "stm")
    write_segments(tmp_path / "ref.rttm", ref, "rttm")
    shouty = [S(s.start, s.end, s.speaker + "x", s.text.upper() + "?") for s in REF]
    write_segments(tmp_path / "hyp.stm", {"m1": shouty}, "stm")
    r = subprocess.run(cli + [str(tmp_path / "ref.stm"), str(tmp_path / "hyp.stm"), "--out", str(tmp_path / "m.json")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["per_meeting"][0]["cpwer"] == 0 and m["per_meeting"][1]["failed"] and m["fail_rate"] == 50.0
    assert m["cpwer"] == 50.0 and m["der"] == 50.0 and "cpWER 50.00" in r.stdout
    r = subprocess.run(cli + [str(tmp_path / "ref.rttm"), str(tmp_path / "hyp.stm")], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("DER 50.00") and "not scored" in r.stdout
    write_segments(tmp_path / "other.rttm", {"zz": REF}, "rttm")
    r = subprocess.run(cli + [str(tmp_path / "ref.rttm"), str(tmp_path / "other.rttm")], capture_output=True, text=True)
    assert r.returncode != 0 and "zz" in r.stderr and "m1" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "junk.rttm").write_text("not an rttm line\n")  # scored as all failed, and said so
    r = subprocess.run(cli + [str(tmp_path / "ref.rttm"), str(tmp_path / "junk.rttm")], capture_output=True, text=True)
    assert r.returncode == 0 and "fail rate 100.0" in r.stdout and "junk.rttm' holds no segments" in r.stderr
