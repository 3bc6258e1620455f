"""Diarized multi-speaker ASR (task tagspeech): vocabulary and grammar, parsing anything, chunked
encoders, incremental decoding, speaker linking across windows, meeting simulation, a tiny
model that learns, decoding to RTTM/STM/SegLST, the cascade baseline."""

import dataclasses
import json
import random
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from auden_kit.errors import UserError
from auden_kit.results import Segment as S
from auden_kit.results import SegmentsResult
from auden_kit.tasks.tagspeech import (Grammar, TagSpeechModelConfig, TagSpeechTask, TagVocab, chunked_encode,
                                       parse_tokens, segment_tokens)

CLI = [sys.executable, "-m", "auden_kit.cli.main"]


class WordTok:
    """A toy tokenizer: ids 3.. are words."""

    vocab_size, blank_id, sos_id, eos_id, unk_id = 20, 0, 1, 1, 2
    words = [f"w{i}" for i in range(20)]

    def encode(self, text):
        return [self.words.index(w) for w in text.split()]

    def decode(self, ids):
        return " ".join(self.words[i] for i in ids)


VOCAB = TagVocab(text=20, times=126, speakers=4, time_bin=0.08)
SEGS = [S(0.0, 1.2, "bob", "w3 w4"), S(0.96, 2.0, "ann", "w5"), S(2.4, 4.0, "bob", "w6 w7 w8")]


def test_targets_round_trip_and_speaker_order():
    ids = segment_tokens(SEGS, VOCAB, WordTok())
    back = parse_tokens(ids + [VOCAB.eos], VOCAB, WordTok())
    assert [(s.speaker, s.text) for s in back] == [("spk1", "w3 w4"), ("spk2", "w5"), ("spk1", "w6 w7 w8")]
    for a, b in zip(back, SEGS):
        assert abs(a.start - b.start) <= 0.04 + 1e-9 and abs(a.end - b.end) <= 0.04 + 1e-9
    # the grammar accepts the reference sequence token by token
    g = Grammar(VOCAB, 5.0, 100)
    for i in ids:
        assert bool(g.mask()[i]), i
        g.update(i)
    assert bool(g.mask()[VOCAB.eos])


def test_gender_tokens_round_trip_stay_consistent_and_score(tmp_path):
    """Gender tokens: `<t> <spk> <gender> words <t>`, a speaker's one gender (from its first segment
    that has one), parsed back, kept for a speaker by the grammar, written to RTTM's speaker-type
    field and SegLST and read back, and scored per speaker through the DER mapping."""
    from auden_kit.data.segments import read_rttm, read_seglst, write_segments
    from auden_kit.metrics.diarization import score_meetings

    v = TagVocab(text=20, times=126, speakers=4, time_bin=0.08, genders=3)
    segs = [S(0.0, 1.2, "bob", "w3 w4"), S(0.96, 2.0, "ann", "w5", "f"), S(2.4, 4.0, "bob", "w6 w7 w8", "m")]
    ids = segment_tokens(segs, v, WordTok())
    assert ids[:3] == [v.time_id(0.0), v.spk_id(0), v.gender_id("m")] and v.kind(v.gender_id("")) == "gender"
    back = parse_tokens(ids + [v.eos], v, WordTok())
    assert [(s.speaker, s.gender) for s in back] == [("spk1", "m"), ("spk2", "f"), ("spk1", "m")]
    g = Grammar(v, 5.0, 100)
    for u, i in enumerate(ids):
        assert bool(g.mask()[i]), i
        if u == len(ids) - 5:  # bob's second segment: only his gender is allowed
            assert g.state == "gender" and g.mask().nonzero().flatten().tolist() == [v.gender_id("m")]
        g.update(i)
    for trial in range(10):  # random logits: always parses, a speaker never changes gender
        g, seq = Grammar(v, 6.0, 60), []
        torch.manual_seed(trial)
        while True:
            t = int((torch.randn(v.size) * 3).masked_fill(~g.mask(), float("-inf")).argmax())
            if t == v.eos or len(seq) >= 60:
                break
            seq.append(t)
            g.update(t)
        out = parse_tokens(seq, v, WordTok(), 6.0)
        assert all(len({s.gender for s in out if s.speaker == k}) == 1 for k in {s.speaker for s in out})
    write_segments(tmp_path / "h.rttm", {"r": back}, "rttm")
    write_segments(tmp_path / "h.json", {"r": back}, "json")
    assert [s.gender for s in read_rttm(tmp_path / "h.rttm")["r"]] == ["m", "f", "m"]
    assert [s.gender for s in read_seglst(tmp_path / "h.json")["r"]] == ["m", "f", "m"]
    ref = [S(0.0, 1.2, "bob", "w3 w4", "m"), S(0.96, 2.0, "ann", "w5", "f"), S(2.4, 4.0, "bob", "w6 w7 w8", "m")]
    assert score_meetings([("r", ref, back)])["gender_acc"] == 100.0
    wrong = [dataclasses.replace(s, gender="f") for s in back]
    assert score_meetings([("r", ref, wrong)])["gender_acc"] == 50.0
    assert "gender_acc" not in score_meetings([("r", ref, [dataclasses.replace(s, gender="") for s in back])])


def test_guided_attention_targets_follow_segments():
    task = TagSpeechTask()
    task.model_cfg = TagSpeechModelConfig(semantic_model="x", voice_model="y", align_margin=0.0)
    spans = []
    ids = segment_tokens(SEGS, VOCAB, WordTok(), spans=spans)
    assert len(spans) == len(ids) and spans[0] == (0.0, 1.2) and spans[-1] == (2.4, 4.0)
    inside, guided = task.attention_targets([spans], (1, len(ids) + 1, 100), 0.04)
    assert guided[0, : len(ids)].all() and not guided[0, len(ids)]  # eos is free
    assert inside[0, 0].nonzero().flatten().tolist() == list(range(0, 30))  # 0-1.2 s at 40 ms
    assert inside[0, -2].nonzero().flatten().tolist() == list(range(60, 100))


def test_parse_never_raises_on_garbage():
    rng = random.Random(0)
    for _ in range(300):
        ids = [rng.randrange(VOCAB.size + 3) for _ in range(rng.randint(0, 40))]
        segs = parse_tokens(ids, VOCAB, WordTok(), duration=6.0)
        for s in segs:
            assert s.end > s.start and s.text and s.speaker.startswith("spk")


def test_constrained_decoding_always_parses():
    """Random logits through the grammar: starts never go back, ends follow starts, speakers are
    numbered in order, every segment has words, times stay in the window, the cap holds."""
    torch.manual_seed(0)
    for trial in range(40):
        dur, cap = random.Random(trial).uniform(1.0, 9.0), 60
        g = Grammar(VOCAB, dur, cap)
        seq = []
        while True:
            logits = torch.randn(VOCAB.size) * 3
            t = int(logits.masked_fill(~g.mask(), float("-inf")).argmax())
            if t == VOCAB.eos or len(seq) >= cap:
                break
            seq.append(t)
            g.update(t)
        assert len(seq) <= cap
        segs = parse_tokens(seq, VOCAB, WordTok(), dur)
        starts = [s.start for s in segs]
        assert starts == sorted(starts)
        assert all(s.end > s.start and s.end <= dur + 0.04 + 1e-6 and s.text for s in segs)
        seen = [int(s.speaker[3:]) for s in segs]
        assert all(k <= max(seen[:i], default=0) + 1 for i, k in enumerate(seen))


def test_grammar_blocks_repeated_ngrams_within_a_segment():
    """no_repeat_ngram=4: a decoder looping on "a b c a b c ..." is stopped where a 4-gram would
    come back (its next piece is masked), while the same words may repeat in the next segment."""
    g = Grammar(VOCAB, 9.0, 200, no_repeat_ngram=4)
    for t in [VOCAB.time_id(0.0), VOCAB.spk_id(0), 5, 6, 7, 5, 6, 7]:
        g.update(t)
    assert not g.mask()[5] and g.mask()[8]  # "5 6 7 5 6 7" may not go on with 5 ("5 6 7 5" again)
    for t in [8, VOCAB.time_id(2.0), VOCAB.time_id(2.0), VOCAB.spk_id(1), 5, 6, 7, 5, 6, 7]:
        g.update(t)
    assert not g.mask()[5]
    g2 = Grammar(VOCAB, 9.0, 200, no_repeat_ngram=4)
    for t in [VOCAB.time_id(0.0), VOCAB.spk_id(0), 5, 6, 7, 5, VOCAB.time_id(1.0), VOCAB.time_id(1.0),
              VOCAB.spk_id(1), 5, 6, 7]:
        g2.update(t)
    assert g2.mask()[5]  # a new segment starts its own count


def test_segments_cut_at_pauses_and_regrouped_by_voice():
    """voice_regroup: a decoded segment over two stretches of speech is cut at the pause, and a
    piece whose voice is another speaker's goes to that speaker; pieces stay with a speaker whose
    voice they share; speakers numbered again by first appearance."""
    from auden_kit.tasks.tagspeech import regroup_by_voice

    shift = 0.04
    frames = torch.zeros(100, 3)  # 4 s: ann's voice on axis 0, bob's on axis 1
    frames[0:25, 0] = 1  # 0-1 s ann
    frames[25:50, 1] = 1  # 1-2 s bob
    frames[50:75, 1] = 1  # 2-3 s bob
    frames[75:100, 0] = 1  # 3-4 s ann
    frames += 0.05
    frames = torch.nn.functional.normalize(frames, dim=-1)
    stretches = [(0.0, 0.95), (1.05, 1.95), (2.05, 2.95), (3.05, 4.0)]
    segs = [S(0.0, 1.95, "spk1", "a b"), S(2.05, 2.95, "spk2", "c"), S(3.05, 4.0, "spk1", "d")]
    out = regroup_by_voice(segs, stretches, frames, shift)
    assert [(s.start, s.end, s.speaker) for s in out] == [
        (0.0, 0.95, "spk1"), (1.05, 1.95, "spk2"), (2.05, 2.95, "spk2"), (3.05, 4.0, "spk1")]
    assert [s.text for s in out] == ["", "", "c", "d"]  # a cut segment's words come from the ASR
    # one speaker only, or no frames: nothing to regroup, only the cut
    assert [s.speaker for s in regroup_by_voice([S(0.0, 1.95, "spk1", "a")], stretches, frames, shift)] == ["spk1"] * 2
    # a speaker whose every piece goes elsewhere is gone, the rest renumbered
    segs = [S(0.0, 0.95, "spk1", "a"), S(1.05, 1.95, "spk2", "b"), S(2.05, 2.95, "spk3", "c"),
            S(3.05, 4.0, "spk2", "d")]
    out = regroup_by_voice(segs, stretches, frames, shift)
    assert [s.speaker for s in out] == ["spk1", "spk2", "spk2", "spk1"]
    # chunks: one segment over 1-3 s with no pause in it (bob, then ann from 2 s) is cut into
    # chunks of about 0.5 s, each goes to its voice, neighbours that kept one speaker are joined
    stretches2 = [(0.0, 0.95), (1.05, 4.0)]
    frames2 = frames.clone()
    frames2[50:75] = frames[0]  # 2-3 s: ann
    segs = [S(0.0, 0.95, "spk1", "a"), S(1.05, 3.05, "spk2", "b c")]
    out = regroup_by_voice(segs, stretches2, frames2, shift, chunk=0.5)
    assert [(s.start, s.end, s.speaker) for s in out] == [
        (0.0, 0.95, "spk1"), (1.05, 2.05, "spk2"), (2.05, 3.05, "spk1")], out
    # fill: speech in no segment (3.05-4.0 s, ann's voice) becomes a piece of the nearest segment's
    # speaker, then goes to the closest voice
    assert [(s.start, s.end, s.speaker) for s in regroup_by_voice(segs, stretches2, frames2, shift, fill=0.3)] == [
        (0.0, 0.95, "spk1"), (1.05, 3.05, "spk2"), (3.05, 4.0, "spk1")]
    from auden_kit.tasks.tagspeech import _join_touching, uncovered

    joined = _join_touching([S(2.0, 3.0, "spk1", "c"), S(0.0, 1.0, "spk1", "a"), S(0.5, 1.5, "spk2", "b"),
                             S(1.01, 1.8, "spk1", ""), S(1.5, 1.7, "spk1", "")])
    assert [(s.start, s.end, s.speaker, s.text) for s in joined] == [
        (0.0, 1.8, "spk1", "a"), (0.5, 1.5, "spk2", "b"), (2.0, 3.0, "spk1", "c")]

    assert uncovered([(0.0, 2.0), (3.0, 5.0)], [(0.5, 1.0), (1.1, 1.5), (3.0, 4.8)], 0.3) == [(0.0, 0.5), (1.5, 2.0)]
    with pytest.raises(Exception, match="model.voice_regroup"):
        TagSpeechModelConfig(semantic_model="a", voice_model="b", voice_regroup=True).validate()
    with pytest.raises(Exception, match="model.regroup_fill"):
        TagSpeechModelConfig(semantic_model="a", voice_model="b", words_from="asr", regroup_fill=-1).validate()


def test_grammar_does_not_end_before_the_last_speech():
    """speech_end: the output may not end until a segment has ended that late (the decoder ended
    early on some windows, leaving their last speech unsaid); at the window's end, or with no room
    left, it may."""
    g = Grammar(VOCAB, 9.0, 200, speech_end=6.0)
    assert not g.mask()[VOCAB.eos]
    for t in [VOCAB.time_id(0.0), VOCAB.spk_id(0), 5, VOCAB.time_id(2.0)]:
        g.update(t)
    assert not g.mask()[VOCAB.eos] and g.mask()[VOCAB.time_id(3.0)]
    for t in [VOCAB.time_id(3.0), VOCAB.spk_id(1), 6, VOCAB.time_id(6.0)]:
        g.update(t)
    assert g.mask()[VOCAB.eos]
    late = Grammar(VOCAB, 9.0, 200, speech_end=20.0)  # past the window: the last bin ends it anyway
    for t in [VOCAB.time_id(0.0), VOCAB.spk_id(0), 5]:
        late.update(t)
    assert late.mask()[VOCAB.text + late.last_bin]
    late.update(VOCAB.text + late.last_bin)
    assert late.mask()[VOCAB.eos]
    assert Grammar(VOCAB, 9.0, 200).mask()[VOCAB.eos]  # off by default


class FrameEncoder(torch.nn.Module):
    """Stand-in encoder with no context: output frame j = mean of input frames 4j..4j+3."""

    frame_shift = 0.04

    def forward(self, x, lens):
        T = x.shape[1] // 4
        return x[:, : 4 * T].reshape(x.shape[0], T, 4, -1).mean(2), lens // 4


def test_chunked_encoder_lines_up_with_whole():
    x = torch.randn(2, 1037, 3)
    lens = torch.tensor([1037, 611])
    whole, wl = FrameEncoder()(x, lens)
    part, pl = chunked_encode(FrameEncoder(), x, lens, chunk=200, ctx=40)
    assert pl.tolist() == wl.tolist()
    for n in range(2):
        k = int(wl[n])
        assert torch.allclose(part[n, :k], whole[n, :k], atol=1e-6)


def test_incremental_decoder_matches_full():
    from auden_kit.heads.attention_decoder import AttentionDecoder

    torch.manual_seed(0)
    d = AttentionDecoder(50, 32, d_model=64, num_layers=2, num_heads=4, ff_dim=128).eval()
    mem, pad = d.memory(torch.randn(3, 20, 32), torch.tensor([20, 15, 9]))
    ys = torch.randint(2, 50, (3, 7))
    full = d.decode(mem, pad, ys, torch.zeros(3, 7, dtype=torch.bool))
    cache = d.start_cache(mem, pad)
    steps = torch.stack([d.step(cache, ys[:, u]) for u in range(7)], 1)
    assert torch.allclose(full, steps, atol=1e-5)
    # longer than the key/value buffer's first size (64 positions, then doubled), memory unpadded
    mem2, pad2 = d.memory(torch.randn(2, 12, 32), torch.tensor([12, 12]))
    ys2 = torch.randint(2, 50, (2, 150))
    full2 = d.decode(mem2, pad2, ys2, torch.zeros(2, 150, dtype=torch.bool))
    cache2 = d.start_cache(mem2, pad2)
    assert torch.allclose(full2, torch.stack([d.step(cache2, ys2[:, u]) for u in range(150)], 1), atol=1e-5)
    # the layer-by-layer pass that also returns the cross-attention (guided-attention loss)
    logits, attn = d.decode_with_attention(mem, pad, ys, torch.zeros(3, 7, dtype=torch.bool))
    assert torch.allclose(full, logits, atol=1e-5)
    assert torch.allclose(attn.sum(-1), torch.ones(3, 7), atol=1e-5) and float(attn[2, :, 9:].sum()) == 0
    # training mode: the cross-attention dropout is its own setting (0: what eval mode computes, when
    # the decoder's other dropouts are 0 too)
    nd = AttentionDecoder(50, 32, d_model=64, num_layers=2, num_heads=4, ff_dim=128, dropout=0.0)
    nd.load_state_dict(d.state_dict())
    nd.train()
    nd.cross_attention_dropout = 0.0
    assert torch.allclose(nd.decode_with_attention(mem, pad, ys, torch.zeros(3, 7, dtype=torch.bool))[0], full,
                          atol=1e-5)
    nd.cross_attention_dropout = 0.5
    assert not torch.allclose(nd.decode_with_attention(mem, pad, ys, torch.zeros(3, 7, dtype=torch.bool))[0],
                              full, atol=1e-3)


def test_windows_link_speakers_by_voice():
    task = TagSpeechTask()
    task.model_cfg = TagSpeechModelConfig(semantic_model="x", voice_model="y", link_threshold=0.5)
    a, b = [1.0, 0.0, 0.1], [0.0, 1.0, 0.1]
    w1 = SegmentsResult("r:0", [S(0, 1, "spk1", "w1"), S(1, 2, "spk2", "w2")], embeddings={"spk1": a, "spk2": b})
    # the next window meets the same people in the other order, and a stranger
    w2 = SegmentsResult("r:1", [S(0, 1, "spk1", "w3"), S(1, 2, "spk2", "w4"), S(2, 3, "spk3", "w5")],
                        embeddings={"spk1": b, "spk2": a, "spk3": [-1.0, -1.0, 0.0]})
    m = task.merge([(0.0, w1), (30.0, w2)], "r")
    assert [(s.start, s.speaker, s.text) for s in m.segments] == [
        (0.0, "spk1", "w1"), (1.0, "spk2", "w2"), (30.0, "spk2", "w3"), (31.0, "spk1", "w4"), (32.0, "spk3", "w5")]
    # a recording whose speech fits one window after leading silence: that window's offset still counts
    one = task.merge([(70.0, w1)], "r")
    assert [(s.start, s.end, s.speaker) for s in one.segments] == [(70.0, 71.0, "spk1"), (71.0, 72.0, "spk2")]


def test_linking_embeddings_are_the_voice_models_utterance_embeddings():
    """link_embedding voice: per speaker, the duration-weighted mean of the unit-length embeddings
    of its segments, each read alone by the voice model; unit length."""
    import math

    class Voice:
        def segment_embeddings(self, x, spans):
            assert spans == [(0.0, 1.0), (1.0, 4.0), (4.0, 5.0)]
            return torch.tensor([[2.0, 0.0], [0.0, 5.0], [1.0, 1.0]])

    segs = [S(0, 1, "spk1", "a"), S(1, 4, "spk1", "b"), S(4, 5, "spk2", "c")]
    emb = TagSpeechTask._voice_embeddings(Voice(), torch.zeros(500, 80), segs)
    assert emb["spk1"] == pytest.approx([1 / math.sqrt(10), 3 / math.sqrt(10)])
    assert emb["spk2"] == pytest.approx([1 / math.sqrt(2), 1 / math.sqrt(2)])
    with pytest.raises(UserError, match="model.link_embedding"):
        TagSpeechModelConfig(semantic_model="x", voice_model="y", link_embedding="mfcc").validate()


def test_link_speakers_never_merges_one_windows_speakers():
    """Linking across windows: speakers of one window stay apart however alike their voices
    (the decoder told them apart there), a speaker who comes back windows later is found again,
    and clusters join by their average similarity, not by one close pair."""
    from auden_kit.clustering import agglomerate

    a, a2, b, c = [1.0, 0.0, 0.0], [0.95, 0.05, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]
    # windows: 0 {a, a2 (alike, yet two people there)}, 1 {b, c}, 2 {c}, 3 {a}
    emb = np.array([a, a2, b, c, c, a])
    assert agglomerate(emb, 0.7, [0, 0, 1, 1, 2, 3]) == [0, 1, 2, 3, 3, 0]
    # with no window constraint the two alike voices are one speaker
    assert agglomerate(emb, 0.7, [0, 1, 2, 3, 4, 5]) == [0, 0, 1, 2, 2, 0]
    # average linkage: x joins {y, z} only if it is close to both on average
    x, y, z = [1.0, 0.0], [1.0, 0.2], [0.2, 1.0]
    assert agglomerate(np.array([y, z, x]), 0.9, [0, 0, 1]) == [0, 1, 0]
    assert agglomerate(np.array([y, z, x]), 0.999, [0, 0, 1]) == [0, 1, 2]
    assert agglomerate(np.zeros((0, 3)), 0.7, []) == []
    # a fixed number of speakers stops there, and never crosses a constraint to get there
    assert agglomerate(emb, 0.99, None, num_speakers=3) == [0, 0, 1, 2, 2, 0]
    lab = agglomerate(emb, 0.99, [0, 0, 1, 1, 2, 3], num_speakers=1)  # two windows hold two speakers
    assert len(set(lab)) == 2 and lab[0] != lab[1] and lab[2] != lab[3]


def test_short_speakers_join_the_closest_voice():
    from auden_kit.tasks.tagspeech import absorb_short_speakers

    segs = [S(0, 4, "spk1", "a b"), S(4, 5.5, "spk2", "c"), S(5.5, 9, "spk3", "d e", "f"), S(9, 10, "spk2", "g")]
    emb = {"spk1": [1.0, 0.0], "spk2": [0.1, 1.0], "spk3": [0.0, 1.0]}
    out = absorb_short_speakers(segs, emb, 3.0)  # spk2 (2.5 s) sounds like spk3: joins it, renumbered
    assert [(s.speaker, s.text, s.gender) for s in out] == [
        ("spk1", "a b", ""), ("spk2", "c", ""), ("spk2", "d e", "f"), ("spk2", "g", "")]
    assert absorb_short_speakers(segs, emb, 1.0) == segs  # nobody that short
    assert absorb_short_speakers(segs, emb, 60.0) == segs  # everybody that short: kept as decoded
    from auden_kit.errors import UserError

    with pytest.raises(UserError, match="model.min_speaker_seconds"):
        TagSpeechModelConfig(semantic_model="x", voice_model="y", min_speaker_seconds=-1).validate()


def test_overlap_regions_get_a_second_talker():
    from auden_kit.tasks.tagspeech import add_overlap_talkers, overlap_regions, talker_counts

    assert talker_counts([S(0, 0.4, "a"), S(0.2, 0.6, "b"), S(0.3, 0.5, "c")], 8, 0.1).tolist() == [
        1, 1, 2, 2, 2, 1, 0, 0]
    p = torch.tensor([0.1, 0.9, 0.8, 0.2, 0.7, 0.1, 0.95, 0.99])
    assert overlap_regions(p, 0.5, 0.5, 0.0) == [(0.5, 1.5), (2.0, 2.5), (3.0, 4.0)]
    assert overlap_regions(p, 0.5, 0.5, 0.6) == [(0.5, 1.5), (3.0, 4.0)]  # too short a run: dropped
    emb = {"spk1": [1.0, 0.0], "spk2": [0.0, 1.0], "spk3": [0.7, 0.7]}
    voices = {(4.5, 5.5): torch.tensor([0.1, 1.0]), (9.6, 10.0): torch.tensor([1.0, 0.1]),
              (20.0, 21.0): torch.tensor([0.6, 0.8])}
    segs = [S(0, 5.2, "spk1", "a b"), S(5.2, 9, "spk2", "c"), S(9.5, 12, "spk3", "d"),
            S(19, 22, "spk2", "e"), S(30, 31, "spk1", "f")]
    out = add_overlap_talkers(segs, [(4.5, 5.5), (9.6, 10.0), (20.0, 21.0), (30.2, 30.8), (40, 41)],
                              lambda a, b: voices.get((a, b), torch.tensor([0.0, 1.0])), emb)
    # 4.5-5.5: spk1 there (0.7 of its 1 s); spk2, which starts in it, sounds closest: its segment now
    # starts at 4.5. 9.6-10: spk3 there; spk1 sounds closest but has no segment that meets it: a
    # segment of its own without words. 20-21: spk2 there; spk3 (0.7, 0.7) is closest to (0.6, 0.8).
    # 30.2-30.8: spk1 there, spk2 (voice (0, 1)) the closest other. 40-41: nobody there: unchanged
    assert [(s.start, s.end, s.speaker, s.text) for s in out] == [
        (0, 5.2, "spk1", "a b"), (4.5, 9, "spk2", "c"), (9.5, 12, "spk3", "d"), (9.6, 10.0, "spk1", ""),
        (19, 22, "spk2", "e"), (20.0, 21.0, "spk3", ""), (30, 31, "spk1", "f"), (30.2, 30.8, "spk2", "")]
    segs2 = [S(0, 3, "spk1", "a"), S(2.8, 6, "spk2", "b")]  # spk1 ends just before the region: stretched
    out = add_overlap_talkers(segs2, [(3.0, 4.0)], lambda a, b: torch.tensor([1.0, 0.1]), emb)
    assert [(s.start, s.end, s.speaker) for s in out] == [(0, 4.0, "spk1"), (2.8, 6, "spk2")]
    both = [S(0, 5, "spk1", "a"), S(3, 8, "spk2", "b")]  # two talkers there already: nothing to add
    assert add_overlap_talkers(both, [(3.0, 5.0)], lambda a, b: torch.tensor([1.0, 0.0]), emb) == both
    from auden_kit.errors import UserError

    for bad in ({"overlap_threshold": 1.0}, {"overlap_min_seconds": -1}, {"overlap_loss_scale": 0}):
        with pytest.raises(UserError, match=r"model\.overlap_"):
            TagSpeechModelConfig(semantic_model="x", voice_model="y", overlap_head=True, **bad).validate()


def test_speakers_of_two_voices_are_split():
    from auden_kit.errors import UserError
    from auden_kit.tasks.tagspeech import split_by_voice

    a, b = [1.0, 0.0, 0.5], [0.0, 1.0, 0.5]  # cosine 0.2
    segs = [S(0, 3, "spk1", "a"), S(3, 6, "spk2", "b"), S(6, 9, "spk1", "c"), S(9, 12, "spk1", "d"),
            S(12, 12.5, "spk1", "e"), S(13, 16, "spk2", "f")]
    emb = {0: a, 1: a, 2: a, 3: b, 5: a}  # spk1: two voices (a 6 s, b 3 s); spk2 one; 4: too short, not embedded
    out = split_by_voice(segs, emb, threshold=0.5, least=3.0)
    assert [(s.speaker, s.text) for s in out] == [
        ("spk1", "a"), ("spk2", "b"), ("spk1", "c"), ("spk3", "d"), ("spk1", "e"), ("spk2", "f")]
    assert split_by_voice(segs, emb, threshold=0.5, least=4.0) == segs  # the second voice holds too little
    assert split_by_voice(segs, emb, threshold=0.1, least=3.0) == segs  # the voices are not that far apart
    # one odd segment (1 s, a voice far from both: overlapped speech) neither blocks the split, as a
    # split into exactly two groups did (it was one group, the two voices the other), nor becomes a
    # speaker: it joins the closer voice
    odd = segs[:4] + [S(12, 13, "spk1", "o")]
    out = split_by_voice(odd, {0: a, 1: a, 2: a, 3: b, 4: [-1.0, -0.9, 0.0]}, threshold=0.5, least=3.0)
    assert [s.speaker for s in out] == ["spk1", "spk2", "spk1", "spk3", "spk3"]
    # three voices in one speaker: three speakers, the longest keeps the name
    three = [S(0, 4, "spk1", "a"), S(4, 7, "spk1", "b"), S(7, 10, "spk1", "c"), S(10, 14, "spk1", "a2")]
    out = split_by_voice(three, {0: a, 1: b, 2: [-1.0, 0.0, 0.0], 3: a}, threshold=0.5, least=3.0)
    assert [s.speaker for s in out] == ["spk1", "spk2", "spk3", "spk1"]
    for bad in ({"split_voices": 1.0}, {"split_voices": 0.5, "fusion": "semantic"}, {"split_min_seconds": -1}):
        with pytest.raises(UserError, match=r"model\.split_"):
            TagSpeechModelConfig(semantic_model="x", voice_model="y", **bad).validate()


def test_split_voices_reads_segments_as_the_voice_model_does(meetings, trained_model, voice_model, tmp_path):
    """split_voices copies the voice folder's pooling and embedding into the model (frozen, saved),
    and a segment's embedding is the voice model's own embedding of that stretch of features."""
    from lhotse import load_manifest

    from auden_kit.config import from_dict
    from auden_kit.errors import UserError
    from auden_kit.hub import load_pretrained, save_pretrained
    from auden_kit.training.trainer import TrainConfig, resolve

    def build(voice):
        cfg = from_dict(TrainConfig, {"task": "tagspeech", "exp_dir": "unused", "model": {
            "semantic_model": str(trained_model), "voice_model": str(voice), "d_model": 32, "decoder_layers": 1,
            "decoder_ff_dim": 64, "max_window": 20, "max_speakers": 4, "split_voices": 0.5}})
        task, mcfg = resolve(cfg)
        task.setup(mcfg, task.build_assets(cfg, mcfg, []))
        return task.build_model().eval(), (mcfg, task.assets, cfg.data.fbank)

    model, saved = build(voice_model / "model")
    own = load_pretrained(voice_model / "model").model.eval()
    assert torch.equal(model.voice_embed.weight, own.embedding.weight)
    assert not any(p.requires_grad for p in [*model.voice_pool.parameters(), *model.voice_embed.parameters()])
    assert any(k.startswith("voice_embed.") for k in model.state_dict())  # saved with the model folder
    x = torch.from_numpy(next(iter(load_manifest(meetings[1]))).load_features())
    got = model.segment_embeddings(x, [(0.5, 2.5), (1.0, 4.0)])
    with torch.no_grad():
        want = own(x[None, 100:400], torch.tensor([300]))[0]
    assert got.shape[0] == 2 and torch.allclose(got[1], want, atol=1e-4)
    with pytest.raises(UserError, match="no utterance embedding"):  # an ASR folder
        build(trained_model)
    # the split can be switched off in the model folder's config: its layers still load
    save_pretrained(tmp_path / "m", "tagspeech", saved[0], model, *saved[1:])
    cfg = yaml.safe_load((tmp_path / "m" / "config.yaml").read_text())
    cfg["model"]["split_voices"] = 0.0
    (tmp_path / "m" / "config.yaml").write_text(yaml.safe_dump(cfg))
    back = load_pretrained(tmp_path / "m").model
    assert back.cfg.split_voices == 0 and torch.equal(back.voice_embed.weight, own.embedding.weight)


def test_agglomerate_without_constraints_is_scipys_average_linkage():
    """The cascade's clustering: the same partition as scipy's average linkage on cosine distance,
    cut at a distance or at a number of clusters (scipy only in this test)."""
    hierarchy = pytest.importorskip("scipy.cluster.hierarchy")
    from auden_kit.clustering import agglomerate

    rng = np.random.default_rng(0)
    for trial in range(20):
        centres = rng.normal(size=(rng.integers(2, 6), 16))
        emb = centres[rng.integers(0, len(centres), size=40)] + rng.normal(scale=0.6, size=(40, 16))
        z = hierarchy.linkage(emb, method="average", metric="cosine")
        for dist in (0.3, 0.6, 0.9):
            ref = hierarchy.fcluster(z, t=dist, criterion="distance")
            ours = agglomerate(emb, 1 - dist)
            assert len(set(zip(ref, ours))) == len(set(ref)) == len(set(ours)), (trial, dist)  # same partition
        ref = hierarchy.fcluster(z, t=4, criterion="maxclust")
        ours = agglomerate(emb, 0.0, num_speakers=4)
        assert len(set(zip(ref, ours))) == len(set(ref)) == len(set(ours)) == 4


def _average_linkage_by_hand(emb, threshold, groups, num_speakers):
    """Average linkage spelled out: clusters as member lists, every pair's mean cosine computed
    again at every merge, the first best pair (by slot order) merged into its lower slot."""
    x = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    slots = {i: [i] for i in range(len(x))}
    while len(slots) > max(num_speakers, 1):
        best, pair = -np.inf, None
        for a in sorted(slots):
            for b in sorted(slots):
                if a == b or {groups[r] for r in slots[a]} & {groups[r] for r in slots[b]}:
                    continue
                v = float((x[slots[a]] @ x[slots[b]].T).mean())
                if v > best + 1e-12:
                    best, pair = v, (a, b)
        if pair is None or (not num_speakers and best < threshold):
            break
        slots[min(pair)] += slots.pop(max(pair))
    label = {r: k for k, s in enumerate(sorted(slots.values(), key=min)) for r in s}
    return [label[r] for r in range(len(x))]


def test_agglomerate_with_constraints_matches_the_algorithm_spelled_out():
    """The cached-row-maxima clustering makes the merges of average linkage recomputed from scratch
    at every step, with cannot-link groups and with a number of speakers."""
    from auden_kit.clustering import agglomerate

    rng = np.random.default_rng(3)
    for trial in range(30):
        n = int(rng.integers(2, 30))
        centres = rng.normal(size=(int(rng.integers(1, 5)), 8))
        emb = centres[rng.integers(0, len(centres), size=n)] + rng.normal(scale=0.7, size=(n, 8))
        groups = list(rng.integers(0, max(1, n // 3), size=n)) if trial % 2 else list(range(n))
        num = int(rng.integers(1, 4)) if trial % 3 == 0 else 0
        threshold = float(rng.uniform(0.0, 0.8))
        assert agglomerate(emb, threshold, groups, num) == \
            _average_linkage_by_hand(emb, threshold, groups, num), trial


class _ToneVoice:
    """A voice model for the cascade's tests: a window's embedding is its energy at 200 and 700 Hz
    (one "speaker" per tone)."""

    def infer(self, wavs, rate):
        out = []
        for w in wavs:
            spec = np.abs(np.fft.rfft(np.asarray(w, dtype=np.float64)))
            f = np.fft.rfftfreq(len(w), 1 / rate)
            out.append(dataclasses.make_dataclass("E", ["embedding"])(
                [spec[(f > lo) & (f < hi)].sum() + 1e-3 for lo, hi in ((150, 250), (650, 750))]))
        return out


class _TonesAsr:
    def iter_results(self, wavs, rate, **_):
        for i, w in enumerate(wavs):
            yield i, dataclasses.make_dataclass("T", ["text"])(f"turn{i}")


def test_cascade_threshold_tuned_on_dev_scores_as_diarizing():
    """`tune_threshold` (dev recordings embedded once, clustered at each threshold, no words)
    gives the DER that diarizing at that threshold gives, and chooses the lowest: two speakers
    (two tones between pauses) are found at a threshold below their distance and merged above it."""
    from auden_kit.cascade import CascadeOptions, diarize_audio, tune_threshold
    from auden_kit.metrics.diarization import score_meetings

    rate = 16000
    t = np.arange(2 * rate) / rate
    gap = np.zeros(rate // 2)
    tone = {200: 0.3 * np.sin(2 * np.pi * 200 * t), 700: 0.3 * np.sin(2 * np.pi * 700 * t)}
    wav = torch.tensor(np.concatenate([tone[200], gap, tone[700], gap, tone[200]]), dtype=torch.float32)
    ref = [S(0.0, 2.0, "a", "x"), S(2.5, 4.5, "b", "y"), S(5.0, 7.0, "a", "z")]
    opts = CascadeOptions()
    best, scores = tune_threshold([(wav, ref)], rate, _ToneVoice(), opts, [1.5, 0.5])
    assert best == 0.5 and scores[0.5]["der"] < 5 and scores[0.5]["spk_count_acc"] == 100
    assert scores[1.5]["der"] > 20 and scores[1.5]["spk_count_acc"] == 0  # one speaker for both tones
    for th in (0.5, 1.5):
        r = diarize_audio(wav, rate, _ToneVoice(), _TonesAsr(), dataclasses.replace(opts, threshold=th))
        assert all(s.text.startswith("turn") for s in r.segments)
        assert score_meetings([("0", ref, r.segments)])["der"] == scores[th]["der"]
    with pytest.raises(UserError, match="no reference segments"):  # nothing to tune against
        tune_threshold([(wav, [])], rate, _ToneVoice(), opts, [0.5, 1.5])


class _ToneAsr:
    """Each turn's text says which tone it holds and how long it is (in 10 ms), whichever call it
    comes in."""

    def iter_results(self, wavs, rate, **_):
        for i, w in enumerate(wavs):
            e = _ToneVoice().infer([w], rate)[0].embedding
            yield i, dataclasses.make_dataclass("T", ["text"])(f"{'lo' if e[0] > e[1] else 'hi'}{len(w) // (rate // 100)}")


def test_cascade_reads_a_file_block_by_block_as_the_waveform(tmp_path, monkeypatch):
    """An audio file is diarized in two passes over blocks of it (memory does not grow with its
    length) with the same turns and texts as its waveform held whole; the speech found block by
    block is the speech found in the whole waveform, none twice."""
    import soundfile as sf

    from auden_kit import cascade
    from auden_kit.data.pauses import speech_segments, stretches_by_block

    rate = 16000
    rng = np.random.default_rng(0)
    parts, t = [], np.arange(int(1.7 * rate)) / rate
    for k in range(12):  # 12 turns of two tones, 0.4-0.9 s pauses of faint noise between them
        parts += [0.3 * np.sin(2 * np.pi * (200, 700)[k % 3 == 1] * t), 1e-4 * rng.normal(size=int(rng.uniform(0.4, 0.9) * rate))]
    wav = torch.tensor(np.concatenate(parts), dtype=torch.float32)
    path = tmp_path / "tones.wav"
    sf.write(path, wav.numpy(), rate, subtype="FLOAT")
    find = lambda b, _: speech_segments(b, rate, max_seconds=60, min_pause=0.2)  # noqa: E731
    whole = find(wav, 0)
    assert len(whole) == 12
    for block in (1.3, 3.0, 100.0):
        found = [(s + a, s + b) for s, buf, r in stretches_by_block(cascade._blocks(path, rate, block), find)
                 for a, b in r]
        assert len(found) == 12 and all(abs(x - y) <= rate // 50 for f, w in zip(found, whole) for x, y in zip(f, w))
    one = list(stretches_by_block([wav], find))  # one block: find() of all of it, once
    assert len(one) == 1 and one[0][0] == 0 and one[0][2] == whole
    opts = cascade.CascadeOptions(threshold=0.5)
    held = cascade.diarize_audio(wav, rate, _ToneVoice(), _ToneAsr(), opts).segments
    assert [s.text[:2] for s in held] == [("lo", "hi")[k % 3 == 1] for k in range(12)]
    assert len({s.speaker for s in held}) == 2
    read_in_blocks = []
    real = cascade._blocks
    monkeypatch.setattr(cascade, "_blocks", lambda *a: (read_in_blocks.append(a[2]), real(*a))[1])
    for block in (1.3, 4.0):
        got = cascade.diarize_audio(path, rate, _ToneVoice(), _ToneAsr(), opts, block_seconds=block).segments
        assert [(s.speaker, s.text[:2]) for s in got] == [(s.speaker, s.text[:2]) for s in held]
        assert max(abs(a.start - b.start) + abs(a.end - b.end) for a, b in zip(got, held)) <= 0.04
        # each turn's words come from its own samples, wherever the blocks cut the file
        assert all(abs(int(s.text[2:]) - (s.end - s.start) * 100) < 1.5 for s in got)
    assert read_in_blocks == [1.3, 1.3, 4.0, 4.0]  # voices, then words: each pass reads the file in blocks
    seen = []  # what a progress bar is fed: each block's seconds as it is read, both passes
    cascade.diarize_audio(path, rate, _ToneVoice(), _ToneAsr(), opts, block_seconds=4.0, progress=seen.append)
    assert len(seen) == 2 * int(np.ceil(wav.numel() / (4 * rate))) and abs(sum(seen) - 2 * wav.numel() / rate) < 1e-3


def test_diarize_cli_on_files(meetings, trained_model, voice_model, tmp_path):
    """`auden-kit diarize FILES --output rttm`: the cascade on audio files (read block by block),
    one RTTM line per speaker turn of each file, inside it; as `auden-kit decode`, a missing or
    unreadable file is named and the other files are still diarized, with exit code 1 and no
    traceback."""
    import soundfile as sf

    audio = sorted((meetings[0] / "audio").rglob("*.flac"))[:2]
    assert len(audio) == 2
    cli = [sys.executable, "-m", "auden_kit.cli.main", "diarize", "--voice-model", str(voice_model / "model"),
           "--asr-model", str(trained_model)]
    r = subprocess.run(cli + ["--output", "rttm"] + [str(a) for a in audio], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = [ln.split() for ln in r.stdout.splitlines()]
    for a in audio:
        turns = [(float(x[3]), float(x[4])) for x in lines if x[0] == "SPEAKER" and x[1] == a.stem]
        assert turns and all(0 <= s and s + d <= sf.info(a).duration + 0.02 for s, d in turns), (a, turns)
    (tmp_path / "bad.wav").write_bytes(b"RIFF0000WAVEnot audio")
    r = subprocess.run(cli + [str(tmp_path / "nope.wav"), str(tmp_path / "bad.wav"), str(audio[0])],
                       capture_output=True, text=True)  # the bad ones named, the good one still diarized
    assert r.returncode == 1 and "Traceback" not in r.stderr and "2 of 3 file(s) failed" in r.stderr
    assert "nope.wav' does not exist" in r.stderr and "bad.wav" in r.stderr
    assert r.stdout.splitlines()[0] == f"# {audio[0].stem}" and len(r.stdout.splitlines()) > 1, r.stdout
    # '-': the audio piped to stdin, diarized as the file is, named '-'
    first = subprocess.run(cli + ["--output", "rttm", str(audio[0])], capture_output=True, text=True).stdout
    r = subprocess.run(cli + ["--output", "rttm", "-"], input=audio[0].read_bytes(), capture_output=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.decode() == first.replace(f" {audio[0].stem} ", " - ") and first.count("SPEAKER") > 1


def test_long_recordings_are_clustered_in_stages(monkeypatch):
    """Past ``CLUSTER_ROWS`` windows the cascade clusters runs of windows, then their clusters
    (bounded memory): on voices that come and go through a long recording it finds the clusters
    that clustering every window at once finds. ``agglomerate`` on summed rows with their sizes is
    average linkage over the rows they sum."""
    from auden_kit import cascade
    from auden_kit.clustering import agglomerate

    rng = np.random.default_rng(3)
    centres = rng.normal(size=(5, 32))
    who = np.repeat(rng.integers(0, 5, size=60), rng.integers(3, 12, size=60))  # turns of 3-11 windows
    emb = centres[who] + rng.normal(scale=0.9, size=(len(who), 32))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    at_once = cascade.cluster_windows(emb, 0.6)
    assert len(set(zip(at_once, who))) == len(set(who)) == 5  # the 5 voices found
    for rows in (40, 97, 150):
        monkeypatch.setattr(cascade, "CLUSTER_ROWS", rows)
        staged = cascade.cluster_windows(emb, 0.6)
        # the same clusters, up to an outlier window or two that the order of merges decides
        agree = sum(np.bincount(at_once[staged == k]).max() for k in set(staged))
        assert agree >= 0.99 * len(emb) and len(set(staged)) <= 6, rows
        assert len(set(cascade.cluster_windows(emb, 0.6, num_speakers=3))) == 3
    x = rng.normal(size=(30, 8))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    k = rng.integers(1, 5, size=30)  # row i stands for k[i] copies of itself
    copies = np.repeat(x, k, axis=0)
    for th in (0.0, 0.2, 0.5):
        by_copy = np.array(agglomerate(copies, th))
        assert list(by_copy[np.cumsum(k) - k]) == agglomerate(x * k[:, None], th, sizes=k)


def test_asr_words_fill_segments_by_time():
    """words_from=ctc: each CTC token goes to the segment its time falls in (in an overlap: the
    segment that started last; in a gap: the nearest one), a word at a time; a segment with none
    has no words."""
    from auden_kit.decoding import Hypothesis
    from auden_kit.tasks.tagspeech import timed_words

    shift = 0.04  # token time = (frame + 0.5) * shift
    hyp = Hypothesis(tokens=[10, 11, 12, 13], frames=[12, 27, 40, 52])  # 0.5 s, 1.1 s (overlap), 1.62 s, 2.1 s (gap)
    out = timed_words(SEGS, hyp, shift, WordTok())
    assert [(s.start, s.speaker, s.text) for s in out] == [
        (0.0, "bob", "w10"), (0.96, "ann", "w11 w12 w13"), (2.4, "bob", "")]
    assert timed_words([], hyp, shift, WordTok()) == []

    class PieceTok(WordTok):  # w10 and w12 begin words, w11 and w13 continue them
        def id_to_piece(self, i):
            return ("\u2581" if i in (10, 12) else "") + self.words[i]

    # w11 (1.1 s) lies in both segments and w13 (2.1 s) in none: both stay with their word's start
    out = timed_words(SEGS, hyp, shift, PieceTok())
    assert [s.text for s in out] == ["w10 w11", "w12 w13", ""]
    with pytest.raises(Exception, match="model.words_from"):
        TagSpeechModelConfig(semantic_model="a", voice_model="b", words_from="whisper").validate()
    with pytest.raises(Exception, match="no CTC head"):
        TagSpeechModelConfig(semantic_model="a", voice_model="b", words_from="ctc", semantic_ctc=False).validate()


def test_config_errors_name_the_key():
    from auden_kit.config import from_dict
    from auden_kit.errors import UserError

    with pytest.raises(UserError, match="model.voice_model"):
        TagSpeechModelConfig(semantic_model="a").validate()
    with pytest.raises(UserError, match="model.fusion"):
        TagSpeechModelConfig(semantic_model="a", voice_model="b", fusion="sum").validate()
    with pytest.raises(UserError, match="model.cached_streams"):
        TagSpeechModelConfig(semantic_model="a", voice_model="b", cached_streams=True, freeze_voice=False).validate()
    with pytest.raises(UserError, match="model.train_filter.min_segment"):
        from_dict(TagSpeechModelConfig, {"semantic_model": "a", "voice_model": "b",
                                          "train_filter": {"min_segment": 5, "max_segment": 1}}).validate()


def test_tagspeech_training_filter():
    """TagSpeech's filter (0.5-30 s segments, <= 30 chars/s, <= 10 segments) drops a window for
    the first segment that breaks it and says why; off by default; the task applies it to
    training windows only."""
    from lhotse import MonoCut, SupervisionSegment

    from auden_kit.config import from_dict
    from auden_kit.data.segments import SegmentFilter

    def window(*sups):
        return MonoCut("w", start=0, duration=20, channel=0, supervisions=[
            SupervisionSegment(f"s{i}", "r", start=a, duration=d, text=t, speaker="A") for i, (a, d, t) in enumerate(sups)])

    ok = window((0, 2, "hello there"), (3, 1, "yes"))
    short = window((0, 2, "hello there"), (3, 0.3, "yes"))
    fast = window((0, 1, "a" * 40))
    many = window(*[(i, 0.8, "yes") for i in range(11)])
    f = from_dict(SegmentFilter, {"min_segment": 0.5, "max_segment": 30, "max_chars_per_second": 30,
                                  "max_segments": 10})
    assert f(ok) and not f(short) and not f(fast) and not f(many)
    assert "s1" in f.why_not(short) and "chars/s" in f.why_not(fast) and "11 segments" in f.why_not(many)
    assert all(SegmentFilter()(c) for c in (ok, short, fast, many)) and not SegmentFilter().active
    task = TagSpeechTask()
    task.model_cfg = TagSpeechModelConfig(semantic_model="a", voice_model="b", train_filter=f)
    assert task.keep_training_cut(ok) and not task.keep_training_cut(short)
    from lhotse import CutSet

    from auden_kit.data.datamodule import DataConfig, _filter

    both = CutSet.from_cuts([ok, short.with_id("w2")])
    assert [c.id for c in _filter(both, DataConfig(), task, train=True)] == ["w"]
    assert len(list(_filter(both, DataConfig(), task, train=False))) == 2


# ---------------------------------------------------------------------------- end to end
def test_simulated_meetings_are_meetings(meetings):
    from lhotse import load_manifest

    cuts = load_manifest(meetings[1])
    assert len(cuts) == 6
    for c in cuts:
        spk = {s.speaker for s in c.supervisions}
        assert 2 <= len(spk) <= 3 and 4 <= c.duration <= 14
        assert all(0 <= s.start < s.end <= c.duration + 1e-3 and s.text for s in c.supervisions)
    r = subprocess.run(CLI + ["data", "validate", str(meetings[1])], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("decoder", ["small", "llm"])
def test_tagspeech_learns_the_meetings(meetings, trained_model, decoder, tmp_path):
    """A tiny tagspeech model (the tiny ASR encoder as both streams, gender tokens on) on 6
    meetings: the loss falls below half, the grammar-constrained decoding of the training
    meetings gets their speaker count, most words and the speakers' genders, and every output
    parses; the same (without genders, 3 meetings) with a (tiny random) Hugging Face causal LM
    with LoRA as the decoder, which must also come back from its model folder unchanged. (The
    CLI, the model folder, the formats and the cascade run end to end in tests/test_recipes.py.)"""
    from lhotse import load_manifest

    from auden_kit.config import from_dict
    from auden_kit.metrics.diarization import score_meetings
    from auden_kit.training.trainer import TrainConfig, resolve

    torch.manual_seed(0)
    cfg = from_dict(TrainConfig, {
        "task": "tagspeech", "exp_dir": "unused",
        "model": {"semantic_model": str(trained_model), "voice_model": str(trained_model), "d_model": 64,
                  "decoder_layers": 2, "decoder_ff_dim": 128, "max_window": 20, "max_speakers": 4, "dropout": 0.0,
                  "label_smoothing": 0.0, "gender_tokens": decoder == "small", "overlap_head": decoder == "small",
                  **({"llm_path": _tiny_llm(tmp_path / "llm"), "llm_anchor_every": 0.64, "llm_lora_rank": 16,
                     "llm_lora_targets": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]} if decoder == "llm" else {})}})
    task, mcfg = resolve(cfg)
    cuts = list(load_manifest(meetings[1]))[: 6 if decoder == "small" else 3]
    task.setup(mcfg, task.build_assets(cfg, mcfg, cuts))
    model = task.build_model()
    feats = [torch.from_numpy(c.load_features()) for c in cuts]
    lens = torch.tensor([f.shape[0] for f in feats])
    batch = {"inputs": torch.nn.utils.rnn.pad_sequence(feats, batch_first=True), "input_lens": lens,
             "targets": task.batch_targets(cuts, True), "cut_ids": [c.id for c in cuts]}
    with torch.no_grad():  # the frozen streams once (what the stream cache does)
        sem, slens, voice = model.streams(batch["inputs"], lens)
    batch["targets"]["streams"] = {"semantic": sem, "lens": slens, "voice": voice}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    model.train()
    first = None
    for step in range(300 if decoder == "small" else 200):  # 200 left the small one near its bounds on one thread
        loss, stats, n = task.compute_loss(model, batch, step)
        opt.zero_grad()
        (loss / n).backward()
        opt.step()
        first = first if first is not None else stats["ce"] / n
        first_ov = stats.get("overlap") if step == 0 else first_ov
    assert stats["ce"] / n < 0.5 * first, (first, stats["ce"] / n)
    model.eval()
    if decoder == "small":  # the overlap head learned the talker counts of the frames
        from auden_kit.tasks.tagspeech import talker_counts

        assert stats["overlap"] < 0.5 * first_ov, (first_ov, stats["overlap"])
        with torch.no_grad():
            pred = model.overlap(sem, voice, slens).argmax(-1)
            # a row's output does not depend on the padding it is batched with
            i = int(slens.argmin())
            L = int(slens[i])
            assert L < sem.shape[1]  # padded in the batch
            alone = model.overlap(sem[i:i + 1, :L], voice[i:i + 1, :L], slens[i:i + 1])
            assert torch.allclose(alone[0], model.overlap(sem, voice, slens)[i, :L], atol=1e-5)
        hit = sum(int((pred[i, : int(slens[i])] == talker_counts(r, int(slens[i]), model.frame_shift)).sum())
                  for i, r in enumerate(batch["targets"]["refs"]))
        assert hit / int(slens.sum()) > 0.9, hit / int(slens.sum())
    results = task.infer(model, batch)
    m = score_meetings([(r.cut_id, r.refs, r.segments) for r in results])
    assert m["fail_rate"] == 0 and m["cpwer"] < 60 and m["spk_count_acc"] >= 50, m
    if decoder == "small":  # with gender tokens: the gender token after each reference speaker token
        # (teacher-forced: what the model learned, whatever decoding's speaker errors), and each
        # decoded speaker's gender scored through the DER mapping (those errors included)
        v = task.vocab
        with torch.no_grad():
            mem, mlens, _ = model.encode(batch["inputs"], lens, batch["targets"]["streams"])
            dec = model.decoder
            ys_in, ys_out, pad = dec._inputs(batch["targets"]["tokens"], mem.device)
            logits, _ = dec.decode_with_attention(*dec.memory(mem, mlens), ys_in, pad)
            # step by step (the search's path: pointer keys of the memory computed once) = all at once
            cache = dec.start_cache(*dec.memory(mem, mlens))
            steps = torch.stack([dec.step(cache, ys_in[:, u]) for u in range(ys_in.shape[1])], 1)
            assert model._mem_keys is not None and set(model._mem_keys[1]) == {"time", "copy"}
        # float32 sums in another order: 2-3e-4 on logits of magnitude ~8 in a fresh install of
        # 2026-12-05 (1e-4 held before); a wrong cache or mask is off by whole units
        assert torch.allclose(steps[~pad], logits[~pad], atol=1e-3), (steps[~pad] - logits[~pad]).abs().max()
        g0 = v.text + v.times + v.speakers
        at = (ys_out >= g0) & (ys_out < g0 + v.genders)
        said = logits[..., g0: g0 + v.genders].argmax(-1) + g0
        assert len(set(ys_out[at].tolist())) == 2  # both genders among the targets
        assert float((said[at] == ys_out[at]).float().mean()) >= 0.9
        assert m["gender_acc"] >= 80, m
    if decoder == "llm":  # the folder names the LM and holds the adapters, not the LM's weights
        from auden_kit.hub import load_pretrained, load_state, save_pretrained

        save_pretrained(tmp_path / "model", "tagspeech", mcfg, model, task.assets, cfg.data.fbank)
        assert not any(k.startswith("decoder.lm.") for k in load_state(tmp_path / "model" / "model.safetensors"))
        back = load_pretrained(tmp_path / "model")
        again = back.task.infer(back.model.eval(), batch)
        assert [r.segments for r in again] == [r.segments for r in results]


def _with_asr_words(meetings, trained_model, words_from: str):
    """A tagspeech model whose words come from the semantic ASR folder (``words_from``), the ASR
    model itself, and a batch of two meetings; both transducers made to say word 5 now and then
    (the tiny ASR model says little on meetings)."""
    from lhotse import load_manifest

    from auden_kit.config import from_dict
    from auden_kit.hub import load_pretrained
    from auden_kit.training.trainer import TrainConfig, resolve

    cfg = from_dict(TrainConfig, {"task": "tagspeech", "exp_dir": "unused", "model": {
        "semantic_model": str(trained_model), "voice_model": str(trained_model), "d_model": 32, "decoder_layers": 1,
        "decoder_ff_dim": 64, "max_window": 20, "max_speakers": 4, "words_from": words_from}})
    task, mcfg = resolve(cfg)
    cuts = list(load_manifest(meetings[1]))[:2]
    task.setup(mcfg, task.build_assets(cfg, mcfg, cuts))
    model = task.build_model().eval()
    asr = load_pretrained(trained_model).model.eval()
    own = {k: v for k, v in asr.state_dict().items() if k.startswith(("decoder.", "joiner."))}
    got = model.semantic_rnnt.state_dict()
    assert own and all(torch.equal(got[k], v) for k, v in own.items())
    assert not any(p.requires_grad for p in model.semantic_rnnt.parameters())
    feats = [torch.from_numpy(c.load_features()) for c in cuts]
    lens = torch.tensor([f.shape[0] for f in feats])
    batch = {"inputs": torch.nn.utils.rnn.pad_sequence(feats, batch_first=True), "input_lens": lens,
             "cut_ids": [c.id for c in cuts]}
    with torch.no_grad():
        for m in (model.semantic_rnnt, asr):
            m.joiner.output_linear.bias[5] += 4.0
    return cfg, task, mcfg, model, asr, batch, feats


def test_words_from_the_semantic_models_transducer(meetings, trained_model, tmp_path):
    """words_from=transducer: the ASR folder's prediction network and joiner are copied into the
    model (frozen, saved with it), and each decoded segment's words are that transducer's greedy
    tokens over the semantic stream, timed into the segments."""
    from auden_kit.decoding.transducer import greedy_search
    from auden_kit.hub import load_pretrained, load_state, save_pretrained
    from auden_kit.tasks.tagspeech import parse_tokens, timed_words

    cfg, task, mcfg, model, asr, batch, _ = _with_asr_words(meetings, trained_model, "transducer")
    lens = batch["input_lens"]
    results = task.infer(model, batch)
    with torch.no_grad():
        sem, slens, _ = model.streams(batch["inputs"], lens)
        hyps = greedy_search(asr, sem, slens)
    assert all(len(h.tokens) > 3 for h in hyps), [len(h.tokens) for h in hyps]
    assert any(task.tokenizer.decode([5]) in s.text for r in results for s in r.segments)
    for r, h, n in zip(results, hyps, lens.tolist()):
        segs = parse_tokens(r.tokens, task.vocab, task.tokenizer, n * 0.01)
        assert r.segments == timed_words(segs, h, model.frame_shift, task.tokenizer)
    save_pretrained(tmp_path / "m", "tagspeech", mcfg, model, task.assets, cfg.data.fbank)
    assert any(k.startswith("semantic_rnnt.joiner.") for k in load_state(tmp_path / "m" / "model.safetensors"))
    back = load_pretrained(tmp_path / "m")
    assert [x.segments for x in back.task.infer(back.model.eval(), batch)] == [x.segments for x in results]


def test_words_from_the_asr_reading_each_stretch_of_speech(meetings, trained_model):
    """words_from=asr: the ASR model reads each stretch of speech between pauses alone (its
    encoder and transducer, as on utterances); batched over stretches and rows, the words equal
    reading every stretch one by one, timed into the decoded segments."""
    from auden_kit.data.pauses import feature_log_energy, speech_frames
    from auden_kit.decoding import Hypothesis
    from auden_kit.decoding.transducer import greedy_search
    from auden_kit.tasks.tagspeech import parse_tokens, timed_words

    _, task, _, model, asr, batch, feats = _with_asr_words(meetings, trained_model, "asr")
    results = task.infer(model, batch)
    # a window of digital silence (fbank's floor in every bin): no speech to read, so no segment,
    # whatever the decoder writes there
    silent = torch.full((1, 600, feats[0].shape[1]), float(np.log(np.finfo(np.float32).eps)))
    assert task.infer(model, {"inputs": silent, "input_lens": torch.tensor([600])})[0].segments == []
    n_words = 0
    for r, f in zip(results, feats):
        stretches = speech_frames(feature_log_energy(f))
        assert len(stretches) > 1  # the meetings have pauses
        own = Hypothesis()
        with torch.no_grad():
            for a, b in stretches:
                enc, enc_lens = asr.encoder(f[None, a:b], torch.tensor([b - a]))
                h = greedy_search(asr, enc, enc_lens)[0]
                own.tokens += h.tokens
                own.frames += [a / 4 + x for x in h.frames]  # 4 fbank frames per output frame
        n_words += len(own.tokens)
        segs = parse_tokens(r.tokens, task.vocab, task.tokenizer, f.shape[0] * 0.01)
        assert r.segments == timed_words(segs, own, model.frame_shift, task.tokenizer)
    assert n_words > 3
    # an ASR model without a transducer: its CTC head reads the stretches
    from auden_kit.decoding.ctc import ctc_greedy

    model.semantic_rnnt = None
    with torch.no_grad():
        model.semantic_ctc.bias[7] += 6.0  # say word 7 now and then
    for r, f in zip(task.infer(model, batch), feats):
        own = Hypothesis()
        with torch.no_grad():
            for a, b in speech_frames(feature_log_energy(f)):
                enc, enc_lens = asr.encoder(f[None, a:b], torch.tensor([b - a]))
                h = ctc_greedy(model.semantic_ctc(enc).log_softmax(-1), enc_lens)[0]
                own.tokens += h.tokens
                own.frames += [a / 4 + x for x in h.frames]
        assert own.tokens
        segs = parse_tokens(r.tokens, task.vocab, task.tokenizer, f.shape[0] * 0.01)
        assert r.segments == timed_words(segs, own, model.frame_shift, task.tokenizer)


def test_validate_reads_mixed_cuts(fbank_cuts, tmp_path):
    """`data validate` checks MixedCuts: track audio, and supervisions inside the mixture."""
    from lhotse import CutSet, load_manifest
    from lhotse.utils import fastcopy

    a, b = list(load_manifest(fbank_cuts["train-clean-100"]))[:2]
    good = a.mix(b, offset_other_by=a.duration * 0.5)
    CutSet.from_cuts([good]).to_file(tmp_path / "mixed.jsonl.gz")
    r = subprocess.run(CLI + ["data", "validate", str(tmp_path / "mixed.jsonl.gz")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    sup = a.supervisions[0]
    bad_a = fastcopy(a, supervisions=[fastcopy(sup, duration=sup.duration + 100.0)])  # runs past the mixture
    CutSet.from_cuts([bad_a.mix(b, offset_other_by=1.0)]).to_file(tmp_path / "bad.jsonl.gz")
    r = subprocess.run(CLI + ["data", "validate", str(tmp_path / "bad.jsonl.gz")], capture_output=True, text=True)
    assert r.returncode == 1 and "lies outside" in r.stderr and sup.id in r.stderr, r.stderr


def test_utterance_groups_split_between_segments():
    """Recordings -> utterance groups (pauses < max_pause join); a group over max_duration is split
    at segment starts: every segment lands whole in exactly one part, parts <= the limit."""
    from lhotse import MonoCut, Recording, SupervisionSegment
    from lhotse.audio import AudioSource

    from auden_kit.data.meetings import utterance_groups

    sups = [SupervisionSegment(f"s{i}", "r", start=5.0 * i, duration=4.0, text="w", speaker="AB"[i % 2])
            for i in range(20)]  # 100 s of talk, 1 s pauses
    sups.append(SupervisionSegment("late", "r", start=130.0, duration=3.0, text="w", speaker="A"))
    recording = Recording("r", [AudioSource("file", [0], "never-read.wav")], 16000, 140 * 16000, 140.0)
    rec = MonoCut("r", start=0, duration=140, channel=0, supervisions=sups, recording=recording)
    whole = utterance_groups([rec], max_pause=2.0)
    assert [round(g.duration) for g in whole] == [99, 3]
    parts = utterance_groups([rec], max_pause=2.0, max_duration=30.0)
    assert all(p.duration <= 30.0 for p in parts) and len({p.id for p in parts}) == len(parts)
    inside = [s.id for p in parts for s in p.supervisions if s.start >= -1e-6 and s.end <= p.duration + 1e-6]
    assert sorted(inside) == sorted(s.id for s in sups)


def test_stream_cache_reads_back_cuts_that_start_late(meetings, trained_model, tmp_path):
    """The stream cache of cuts that start inside their recording (split utterance groups,
    windows) reads back whole and equal to running the encoders (the Lhotse temporal array
    carries the cut's start; without it a late cut read back 0 frames and training hit NaN)."""
    import numpy as np
    from lhotse import CutSet, load_manifest

    from auden_kit.tasks.tagspeech import load_streams, write_stream_cache

    cuts = [c for c in load_manifest(meetings[1])][:2]
    late = CutSet.from_cuts([cuts[0], cuts[1].truncate(offset=2.0).with_id("late")])
    src = tmp_path / "late.jsonl.gz"
    late.to_file(src)
    conf = tmp_path / "train.yaml"
    conf.write_text(yaml.safe_dump({"task": "tagspeech", "exp_dir": str(tmp_path / "exp"), "model": {
        "semantic_model": str(trained_model), "voice_model": str(trained_model), "d_model": 32, "decoder_layers": 1,
        "decoder_ff_dim": 64, "decoder_heads": 2, "max_window": 20, "max_speakers": 4, "cached_streams": True}}))
    out = tmp_path / "streams.jsonl.gz"
    write_stream_cache(str(conf), str(src), out, tmp_path / "arrays")
    back = list(load_manifest(out))
    assert back[1].start == 2.0
    got = load_streams(back, voice=True)
    feats = [torch.from_numpy(c.load_features()) for c in back]
    from auden_kit.config import from_dict
    from auden_kit.training.trainer import TrainConfig, resolve

    cfg = from_dict(TrainConfig, yaml.safe_load(conf.read_text()))
    task, mcfg = resolve(cfg)
    task.setup(mcfg, task.build_assets(cfg, mcfg, back))
    model = task.build_model().eval()
    with torch.no_grad():
        sem, lens, _ = model.streams(torch.nn.utils.rnn.pad_sequence(feats, batch_first=True),
                                     torch.tensor([f.shape[0] for f in feats]))
    assert got["lens"].tolist() == lens.tolist() and min(lens.tolist()) > 0
    for i, n in enumerate(lens.tolist()):
        assert np.allclose(got["semantic"][i, :n], sem[i, :n], atol=2 ** -7)


def test_speaker_pointer_compares_voices():
    """speaker_turns finds every speaker-token position with its segment start and the segments
    before it; the speaker pointer scores a returning voice as its earlier speaker and an unheard
    one as the next new number (the threshold), on hand-made voice frames."""
    from types import SimpleNamespace

    from auden_kit.tasks.tagspeech import TagSpeechModel, speaker_turns

    v = TagVocab(text=10, times=60, speakers=4, time_bin=0.08)
    t, spk = v.time_id, v.spk_id
    seq = [t(0.0), spk(0), 5, t(1.2), t(1.2), spk(1), 6, 7, t(2.4), t(2.4), spk(0), 5, t(4.0)]
    turns = list(speaker_turns(seq, v))
    assert [(u, s) for u, s, _ in turns] == [(1, 0), (5, 15), (10, 30)]
    assert turns[2][2] == [(0, 15, 0), (15, 30, 1)]
    assert list(speaker_turns(seq[:5], v))[-1][:2] == (1, 0)  # a prefix: what decoding sees
    e = torch.eye(8)
    voice = torch.cat([e[0].repeat(30, 1), e[1].repeat(30, 1), e[0].repeat(40, 1)])  # A, B, A at 0.04 s frames
    proj = torch.nn.Linear(8, 8)
    with torch.no_grad():
        proj.weight.copy_(torch.eye(8))
        proj.bias.zero_()
    fake = SimpleNamespace(vocab=v, frame_shift=0.04, spk_proj=proj, cfg=SimpleNamespace(speaker_window=1.0),
                           spk_scale=torch.tensor(10.0), spk_new=torch.tensor(0.5))
    with torch.no_grad():
        cs = TagSpeechModel.speaker_frames(fake, voice, 100)
        out = [(u, TagSpeechModel.speaker_bias(fake, cs, start, done)) for u, start, done in turns]
    assert [u for u, _ in out] == [1, 5, 10]
    first, second, third = (b for _, b in out)
    assert first.tolist() == [5.0, 0, 0, 0]  # nobody yet: only "new" scores
    assert int(second[:2].argmax()) == 1  # B is not A: the next new number wins
    assert int(third[:3].argmax()) == 0 and third[0] == pytest.approx(10.0)  # A again


def _tiny_llm(path, with_tokenizer: bool = False):
    """A tiny random Llama saved offline (the layout of any local causal-LM folder)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=40, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2,
                                 max_position_embeddings=1024)).save_pretrained(path)
    if with_tokenizer:
        from tokenizers import Tokenizer, models, pre_tokenizers
        from transformers import PreTrainedTokenizerFast

        t = Tokenizer(models.WordLevel({w: i for i, w in enumerate(["<unk>"] + WordTok.words)}, unk_token="<unk>"))
        t.pre_tokenizer = pre_tokenizers.Whitespace()
        PreTrainedTokenizerFast(tokenizer_object=t, unk_token="<unk>").save_pretrained(path)
    return str(path)


def test_llm_decoder_prefix_cache_lora_and_nothing_of_the_lm_saved(tmp_path):
    """The LLM decoder: the prefix interleaves stacked frames and time anchors (left-padded), step-
    by-step decoding equals the full pass, attention maps back onto memory frames, LoRA adapters
    start as a no-op and are the only trained LM-side weights, the LM's own weights are never in
    the state dict and never change, and text pieces start from the LM tokenizer's embeddings."""
    from auden_kit.heads.llm_decoder import LLMDecoder, lexical_embeddings, load_local_lm

    path = _tiny_llm(tmp_path / "llm", with_tokenizer=True)
    lm = load_local_lm(path, attentions=True)
    before = {k: v.clone() for k, v in lm.state_dict().items()}
    lex = lexical_embeddings(lm, path, WordTok.words, VOCAB.size)
    assert lex is not None and torch.allclose(lex[5], lm.get_input_embeddings().weight[6]) and lex[30].abs().sum() == 0
    torch.manual_seed(0)
    d = LLMDecoder(VOCAB.size, 32, lm, 1, 1, frame_shift=0.04, time_token=VOCAB.time_id, stack=4, anchor_every=0.32,
                   lora_rank=4, dropout=0.0, lexical=lex).eval()
    assert len(d.lora) == 4 and not any(k.startswith("lm.") for k in d.state_dict())
    mem, pad = d.memory(torch.randn(3, 21, 32), torch.tensor([21, 15, 5]))
    pre, mask, where = d.prefix(mem, pad)
    # 21 frames -> 6 stacked (4 each) in groups of 2 under 3 anchors = 9; 15 -> 4 + 2; 5 -> 2 + 1
    assert pre.shape[1] == 9 and mask.sum(1).tolist() == [9, 6, 3]
    assert where[0, :8].tolist() == [1] * 4 + [2] * 4 and int(where[0, 8]) == 4  # anchor at 3, frame 8 -> 4
    ys = torch.randint(2, VOCAB.size, (3, 6))
    nopad = torch.zeros(3, 6, dtype=torch.bool)
    full, attn = d.decode_with_attention(mem, pad, ys, nopad)
    assert torch.allclose(full, d.decode(mem, pad, ys, nopad), atol=1e-5)
    cache = d.start_cache(mem, pad)
    steps = torch.stack([d.step(cache, ys[:, u]) for u in range(6)], 1)
    assert torch.allclose(full, steps, atol=1e-4), (full - steps).abs().max()
    attn = attn.detach()
    assert float(attn[2, :, 5:].sum()) == 0 and bool((attn.sum(-1) <= 1 + 1e-5).all())
    # LoRA starts at zero: the same outputs as the plain model
    plain = LLMDecoder(VOCAB.size, 32, load_local_lm(path, attentions=False), 1, 1, 0.04, VOCAB.time_id, 4, 0.32,
                       train="frozen", dropout=0.0, lexical=lex).eval()
    plain.load_state_dict({k: v for k, v in d.state_dict().items() if not k.startswith("lora.")})
    assert torch.allclose(plain.decode(mem, pad, ys, nopad), full, atol=1e-5)
    d.train()
    loss = d.loss(torch.randn(2, 12, 32), torch.tensor([12, 8]), [[3, 4, 5], [6]])
    loss.backward()
    assert all(p.grad is not None for p in d.lora.parameters())
    opt = torch.optim.SGD([p for p in d.parameters() if p.requires_grad], lr=0.1)
    opt.step()
    assert all(torch.equal(before[k], v) for k, v in lm.state_dict().items())


def test_llm_decoder_config_errors_name_the_key(tmp_path):
    from auden_kit.errors import UserError
    from auden_kit.heads.llm_decoder import LLMDecoder, load_local_lm

    with pytest.raises(UserError, match="model.llm_path.*config.json"):
        load_local_lm(str(tmp_path / "missing"), attentions=False)
    lm = load_local_lm(_tiny_llm(tmp_path / "llm"), attentions=False)
    with pytest.raises(UserError, match="model.llm_lora_targets.*q_proj"):
        LLMDecoder(VOCAB.size, 32, lm, 1, 1, 0.04, VOCAB.time_id, lora_targets=["c_attn"])
