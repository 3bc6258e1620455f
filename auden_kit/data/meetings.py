"""Simulated meetings from single-speaker utterances (diarized-ASR training and offline tests).

Lhotse's ``ConversationalMeetingSimulator`` (Landini et al. 2022: pauses and overlaps drawn
jointly for all speakers) arranges utterances of 2-4 speakers into a conversation; this module
seeds it completely (it draws pauses from NumPy's global generator), keeps meetings within a
duration range, renders each one to a 16 kHz FLAC file and writes recordings + supervisions
manifests, so the result looks like a real meeting corpus (AMI, AliMeeting): one recording,
many time-stamped supervisions with speakers and words, overlapping where people talk at once.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from pathlib import Path
from typing import Sequence

import numpy as np

from auden_kit.errors import UserError

log = logging.getLogger(__name__)


@dataclasses.dataclass
class MeetingOptions:
    num_meetings: int = 100
    speakers: Sequence[int] = (2, 3, 4)  # speaker counts, drawn uniformly
    min_duration: float = 15.0
    max_duration: float = 60.0
    max_utts_per_speaker: int = 6
    same_spk_pause: float = 0.3  # mean pauses / overlap (s): shift of a unit-scale Gamma
    diff_spk_pause: float = 0.3
    diff_spk_overlap: float = 0.6
    overlap_prob: float = 0.3  # probability that a change of speaker overlaps
    seed: int = 0
    prefix: str = "meeting"

    def validate(self):
        if self.num_meetings < 1:
            raise UserError(f"--num-meetings must be >= 1, got {self.num_meetings}")
        if not self.speakers or min(self.speakers) < 1:
            raise UserError(f"--speakers must be positive counts, got {list(self.speakers)}")
        if not 0 < self.min_duration < self.max_duration:
            raise UserError(f"need 0 < --min-duration < --max-duration, got {self.min_duration}, {self.max_duration}")
        if not 0 <= self.overlap_prob <= 1:
            raise UserError(f"--overlap-prob must be in [0, 1], got {self.overlap_prob}")
        for k in ("same_spk_pause", "diff_spk_pause", "diff_spk_overlap"):
            if getattr(self, k) <= 0:
                raise UserError(f"--{k.replace('_', '-')} must be positive, got {getattr(self, k)}")


def simulate_meetings(cuts, out_dir: str | Path, opts: MeetingOptions):
    """Simulate ``opts.num_meetings`` meetings from the single-speaker speech of ``cuts`` (cuts
    with one supervision, or whole recordings: their segments that overlap no other); write
    ``out_dir/audio/<id>.flac``; return (RecordingSet, SupervisionSet)."""
    from lhotse import CutSet, RecordingSet, SupervisionSet
    from lhotse.workflows.meeting_simulation import ConversationalMeetingSimulator

    opts.validate()
    src = [c.truncate(offset=max(0.0, s.start), duration=min(s.end, c.duration) - max(0.0, s.start),
                      keep_excessive_supervisions=False) for c in cuts for s in _solo_segments(c)]
    speakers = {c.supervisions[0].speaker for c in src}
    if len(speakers) < max(opts.speakers):
        raise UserError(f"meeting simulation needs at least {max(opts.speakers)} speakers with transcribed "
                        f"single-speaker cuts; the input has {len(speakers)} (of {len(src)} usable cuts)")
    rates = {c.sampling_rate for c in src}
    rate = 16000
    sim = ConversationalMeetingSimulator(same_spk_pause=opts.same_spk_pause, diff_spk_pause=opts.diff_spk_pause,
                                         diff_spk_overlap=opts.diff_spk_overlap, prob_diff_spk_overlap=opts.overlap_prob)
    audio_dir = Path(out_dir) / "audio"
    audio_dir.mkdir(parents=True, exist_ok=True)
    recordings, sups = [], []
    src_set = CutSet.from_cuts(src)
    if rates != {rate}:
        src_set = src_set.resample(rate)
    from scipy.stats import bernoulli

    sim._init_defaults()
    sim.bernoulli = bernoulli
    by_speaker: dict = {}
    for c in src_set:
        by_speaker.setdefault(c.supervisions[0].speaker, []).append(c)
    rng = random.Random(opts.seed)
    for _ in range(10):
        if len(recordings) >= opts.num_meetings:
            break
        for m in _draw(sim, by_speaker, opts, rng, 4 * (opts.num_meetings - len(recordings)) + 8):
            if len(recordings) >= opts.num_meetings:
                break
            if opts.min_duration <= m.duration <= opts.max_duration:
                _render(m, audio_dir, f"{opts.prefix}-{len(recordings):05d}", rate, recordings, sups)
    if len(recordings) < opts.num_meetings:
        raise UserError(f"only {len(recordings)} of {opts.num_meetings} simulated meetings lasted "
                        f"{opts.min_duration}-{opts.max_duration} s; widen the range or change --max-utts-per-speaker")
    log.info("%d meetings, %.1f minutes, %d segments", len(recordings),
             sum(r.duration for r in recordings) / 60, len(sups))
    return RecordingSet.from_recordings(recordings), SupervisionSet.from_segments(sups)


def _solo_segments(cut) -> list:
    """The transcribed, speaker-labelled supervisions of ``cut`` that overlap no other one (single-
    speaker cuts give their one; whole meetings give their non-overlapped segments)."""
    sups = sorted(cut.supervisions, key=lambda s: (s.start, s.end))
    out, reach = [], float("-inf")
    for i, s in enumerate(sups):
        alone = reach <= s.start and (i + 1 == len(sups) or sups[i + 1].start >= s.end)
        reach = max(reach, s.end)
        if alone and s.speaker is not None and (s.text or "").strip() and s.end > max(0.0, s.start):
            out.append(s)
    return out


def _draw(sim, by_speaker: dict, opts: MeetingOptions, rng: random.Random, n: int) -> list:
    """``n`` meetings: speakers and their utterances drawn here (count of speakers from
    ``opts.speakers``, 2..max utterances per speaker, without repeating an utterance in a
    meeting, shuffled together), arranged in time by the simulator's mixture step (pauses and
    overlaps). Lhotse's own sampler streams an infinitely repeated CutSet and always takes the
    maximum number of utterances: ~1 s per meeting here, 100x slower than this."""
    from lhotse import CutSet

    names = sorted(by_speaker)
    out = []
    for _ in range(n):
        spks = rng.sample(names, rng.choice(list(opts.speakers)))
        utts = []
        for spk in spks:
            k = rng.randint(min(2, opts.max_utts_per_speaker), opts.max_utts_per_speaker)
            utts += rng.sample(by_speaker[spk], min(k, len(by_speaker[spk])))
        rng.shuffle(utts)
        np.random.seed(rng.randrange(2 ** 31))  # the simulator's pauses come from NumPy's global generator
        out.append(sim._create_mixture(CutSet.from_cuts(utts)))
    return out


def _render(m, audio_dir: Path, rid: str, rate: int, recordings: list, sups: list) -> None:
    """Mix meeting ``m`` into ``audio_dir/<rid>.flac``; append its recording and supervisions."""
    import soundfile as sf
    from lhotse import Recording, SupervisionSegment

    path = audio_dir / f"{rid}.flac"
    try:
        audio = m.load_audio()
    except Exception as e:  # noqa: BLE001 - Lhotse's message holds the whole mixture; keep one line
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise UserError(f"cannot load the audio of source cuts {[t.cut.id for t in m.tracks][:3]} "
                        f"for meeting {rid}: {first} (relative audio paths are read from the current "
                        "directory: run where the source manifests were made)") from None
    audio = audio.mean(0) if audio.ndim == 2 else audio
    peak = float(np.abs(audio).max())
    if peak > 0.99:  # overlapped speech may clip: scale the whole meeting
        audio = audio * (0.99 / peak)
    tmp = path.with_suffix(".tmp.flac")
    sf.write(str(tmp), audio, rate, subtype="PCM_16")
    tmp.replace(path)
    rec = Recording.from_file(path, recording_id=rid)
    recordings.append(rec)
    for k, s in enumerate(sorted(m.supervisions, key=lambda s: (s.start, s.speaker))):
        sups.append(SupervisionSegment(id=f"{rid}-{k:03d}", recording_id=rid, start=round(s.start, 3),
                                       duration=round(min(s.duration, rec.duration - s.start), 3),
                                       channel=0, text=s.text, speaker=s.speaker, language=s.language,
                                       gender=s.gender))


def utterance_groups(cuts, max_pause: float, max_duration: float = 0.0) -> list:
    """Cuts of whole recordings -> utterance groups (TagSpeech's and SOT's unit): supervisions joined
    across pauses shorter than ``max_pause``, overlapping speech kept. With ``max_duration`` (0: no
    limit), a longer group is split between supervisions (greedily, at a segment start), so no
    segment is cut by a window edge; a single segment longer than the limit stays whole."""
    from lhotse import CutSet

    groups = CutSet.from_cuts(cuts).trim_to_supervision_groups(max_pause=max_pause)
    out = []
    for g in groups:
        if not max_duration or g.duration <= max_duration:
            out.append(g)
            continue
        sups = sorted(g.supervisions, key=lambda s: (s.start, s.end))
        i = 0
        while i < len(sups):
            start, end = max(0.0, sups[i].start), sups[i].end
            j = i + 1
            while j < len(sups) and max(end, sups[j].end) - start <= max_duration:
                end = max(end, sups[j].end)
                j += 1
            end = min(end, g.duration)
            part = g.truncate(offset=start, duration=end - start, keep_excessive_supervisions=True)
            out.append(part.with_id(f"{g.id}-{int(round(start * 100)):07d}"))
            i = j
    return out
