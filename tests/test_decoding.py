import pytest
import torch

from auden_kit.data.features import PAD_VALUE
from auden_kit.decoding.ctc import ctc_greedy, ctc_prefix_beam
from auden_kit.decoding.transducer import StreamingGreedyDecoder, greedy_search, modified_beam_search
from auden_kit.encoders.zipformer import ZipformerConfig
from auden_kit.tasks.asr import AsrModel, AsrModelConfig


def _model(seed=0, **kw):
    torch.manual_seed(seed)
    enc = ZipformerConfig(downsampling_factor=(1,), num_encoder_layers=(1,), encoder_dim=(32,),
                          encoder_unmasked_dim=(32,), feedforward_dim=(64,), num_heads=(2,), cnn_module_kernel=(7,),
                          query_head_dim=(8,), value_head_dim=(4,), pos_dim=16, embed_channels=(4, 8, 16))
    m = AsrModel(AsrModelConfig(encoder=enc, vocab_size=20, decoder_dim=16, joiner_dim=16, **kw)).eval()
    # make the joiner emit non-blank tokens often so the searches have something to do
    if m.cfg.use_transducer:
        with torch.no_grad():
            m.joiner.output_linear.bias[0] -= 1.0
    return m


def test_beam_one_equals_greedy():
    for seed in range(3):
        m = _model(seed)
        enc = torch.randn(3, 30, 32)
        lens = torch.tensor([30, 25, 12])
        g = greedy_search(m, enc, lens)
        b = modified_beam_search(m, enc, lens, beam=1)
        assert [h.tokens for h in g] == [h.tokens for h in b]
        assert [h.frames for h in g] == [h.frames for h in b]
        assert any(h.tokens for h in g)


def test_streaming_greedy_equals_full_chunk_masked_decode():
    """A causal model decoded chunk by chunk (pieces unrelated to the chunk size) gives the same
    tokens and frames as greedy search on the chunk-masked full-utterance forward."""
    from conftest import tiny_causal_asr

    m = tiny_causal_asr(20, blank_shift=1.0)
    for T, piece in ((237, 37), (100, 13)):
        x = torch.randn(2, T, 80)
        dec = StreamingGreedyDecoder(m, batch_size=2)
        for s in range(0, T, piece):
            dec.accept(x[:, s:s + piece])
        tail = dec.tail_frames()
        stream = dec.finish()
        padded = torch.cat([x, torch.full((2, tail, 80), PAD_VALUE)], dim=1)
        L = padded.shape[1]
        full, _ = m.encoder(padded, torch.tensor([L, L]), chunk_size=8, left_context_frames=16)
        n = dec.search.frames_done
        assert n >= (T - 7) // 4  # every real frame was decoded
        ref = greedy_search(m, full[:, :n], torch.tensor([n, n]))
        assert [h.tokens for h in stream] == [h.tokens for h in ref]
        assert [h.frames for h in stream] == [h.frames for h in ref]
        assert any(h.tokens for h in stream)


def test_wider_beam_scores_at_least_greedy_path():
    m = _model(1)
    enc = torch.randn(2, 20, 32)
    lens = torch.tensor([20, 17])
    b1 = modified_beam_search(m, enc, lens, beam=1)
    b4 = modified_beam_search(m, enc, lens, beam=4)
    assert all(x.score >= y.score - 1e-4 for x, y in zip(b4, b1))


def test_greedy_respects_max_symbols_per_frame():
    m = _model(2)
    with torch.no_grad():
        m.joiner.output_linear.bias[0] -= 10.0  # never blank
    enc = torch.randn(1, 10, 32)
    for k in (1, 3):
        h = greedy_search(m, enc, torch.tensor([10]), max_sym_per_frame=k)[0]
        assert len(h.tokens) == 10 * k


def _peaky(seed, N=3, T=40, V=8):
    g = torch.Generator().manual_seed(seed)
    best = torch.randint(0, V, (N, T), generator=g)
    logits = torch.randn(N, T, V, generator=g) + 6.0 * torch.nn.functional.one_hot(best, V)
    return logits.log_softmax(-1)


def test_ctc_prefix_beam_one_equals_greedy_on_peaky_outputs():
    for seed in range(4):
        lp = _peaky(seed)
        lens = torch.tensor([40, 33, 20])
        g = ctc_greedy(lp, lens)
        b = ctc_prefix_beam(lp, lens, beam=1)
        assert [h.tokens for h in g] == [h.tokens for h in b]


def test_ctc_greedy_collapses_repeats_and_blanks():
    V = 5
    path = [0, 1, 1, 0, 1, 2, 2, 2, 0, 0, 3]
    lp = torch.nn.functional.one_hot(torch.tensor([path]), V).float().mul(10).log_softmax(-1)
    h = ctc_greedy(lp, torch.tensor([len(path)]))[0]
    assert h.tokens == [1, 1, 2, 3] and h.frames == [1, 4, 5, 10]
    assert ctc_prefix_beam(lp, torch.tensor([len(path)]), beam=3)[0].tokens == [1, 1, 2, 3]


def _attention_model(seed=0, layout="torch"):
    return _model(seed, use_ctc=True, use_attention_decoder=True, attention_decoder_dim=32,
                  attention_decoder_layers=2, attention_decoder_heads=2, attention_decoder_ff_dim=64,
                  attention_decoder_layout=layout).eval()


@pytest.mark.parametrize("layout", ["torch", "icefall"])
def test_attention_decoder_is_causal_and_ignores_padding(layout):
    m = _attention_model(layout=layout)
    ad = m.attention_decoder
    enc, lens = torch.randn(2, 20, 32), torch.tensor([20, 11])
    with torch.no_grad():
        ys_in, _, pad = ad._inputs([[3, 4, 5, 6], [7, 8]], enc.device)
        out = ad.logits(enc, lens, ys_in, pad)
        changed = ys_in.clone()
        changed[0, 3] = 9  # a later token cannot change earlier positions
        assert torch.allclose(ad.logits(enc, lens, changed, pad)[0, :3], out[0, :3], atol=1e-5)
        alone_in, _, alone_pad = ad._inputs([[7, 8]], enc.device)
        alone = ad.logits(enc[1:, :11], lens[1:], alone_in, alone_pad)
        assert torch.allclose(alone[0], out[1, :3], atol=1e-5)  # padding of tokens and frames ignored


@pytest.mark.parametrize("layout", ["torch", "icefall"])
def test_attention_decoder_loss_is_the_negative_score_without_smoothing(layout):
    """Training loss (label smoothing 0) and the rescoring score are the same log-probability;
    with smoothing the loss is (1-a) * NLL + a * mean over the vocabulary of -log p."""
    m = _attention_model(layout=layout)
    enc, lens = torch.randn(3, 20, 32), torch.tensor([20, 14, 9])
    toks = [[3, 4, 5, 6], [7], []]
    ad = m.attention_decoder
    with torch.no_grad():
        nll = ad.loss(enc, lens, toks, label_smoothing=0.0)
        score = ad.score(enc, lens, toks)
        assert torch.allclose(nll, -score.sum(), rtol=1e-5)
        ys_in, ys_out, pad = ad._inputs(toks, enc.device)
        lp = ad.logits(enc, lens, ys_in, pad).log_softmax(-1)[~pad]  # (tokens incl. eos, V)
        a = 0.1
        expected = (1 - a) * nll + a * (-lp.mean(-1)).sum()
        assert torch.allclose(ad.loss(enc, lens, toks, label_smoothing=a), expected, rtol=1e-5)


def test_attention_rescoring_picks_the_best_combined_score():
    """Rescoring returns, per utterance, the n-best entry maximizing first-pass score + scale *
    attention log-prob (scored one hypothesis at a time here, in a batch there); with scale 0
    it returns the first pass's best."""
    from auden_kit.tasks.asr import AsrTask

    for seed in range(2):
        m = _attention_model(seed)
        enc, lens = torch.randn(2, 25, 32), torch.tensor([25, 18])
        nbest = modified_beam_search(m, enc, lens, beam=4, return_nbest=True)
        assert all(len(hs) > 1 for hs in nbest)
        for scale in (0.0, 1.0, 5.0):
            got = AsrTask.attention_rescoring(m, enc, lens, beam=4, scale=scale)
            for i, hs in enumerate(nbest):
                alone = [float(m.attention_decoder.score(enc[i:i + 1], lens[i:i + 1], [h.tokens])) for h in hs]
                combined = [h.score + scale * a for h, a in zip(hs, alone)]
                best = hs[max(range(len(hs)), key=combined.__getitem__)]
                assert got[i].tokens == best.tokens
                if scale == 0.0:
                    assert got[i].tokens == max(hs, key=lambda h: h.score).tokens
        # a decoder that continues after the hypothesis (ST's chained "<src> transcript <tgt>"):
        # the wrapped sequence is scored without an end of sentence
        wrap = (lambda i, toks: [9 + i, *toks, 11])
        got = AsrTask.attention_rescoring(m, enc, lens, beam=4, wrap=wrap)
        for i, hs in enumerate(nbest):
            alone = [float(m.attention_decoder.score(enc[i:i + 1], lens[i:i + 1], [wrap(i, list(h.tokens))],
                                                     eos=False)) for h in hs]
            combined = [h.score + a for h, a in zip(hs, alone)]
            assert got[i].tokens == hs[max(range(len(hs)), key=combined.__getitem__)].tokens
        # CTC-only first pass
        m.cfg.use_transducer = False
        got = AsrTask.attention_rescoring(m, enc, lens, beam=3)
        assert len(got) == 2


def test_attention_score_without_eos_leaves_out_only_the_end_of_sentence():
    m = _attention_model(0)
    ad = m.attention_decoder
    enc, lens = torch.randn(2, 20, 32), torch.tensor([20, 13])
    toks = [[3, 4, 5], [7]]
    with torch.no_grad():
        ys_in, ys_out, pad = ad._inputs(toks, enc.device)
        lp = ad.logits(enc, lens, ys_in, pad).log_softmax(-1)
        eos_lp = torch.stack([lp[i, len(t), ad.eos_id] for i, t in enumerate(toks)])
        assert torch.allclose(ad.score(enc, lens, toks, eos=False), ad.score(enc, lens, toks) - eos_lp, atol=1e-5)


def test_ctc_only_model_validates_with_ctc_greedy():
    from auden_kit.tasks.asr import AsrTask

    m = _model(0, use_transducer=False, use_ctc=True)
    assert AsrTask().default_method(m) == "ctc_greedy"
    assert AsrTask().default_method(_model(0)) == "greedy"
