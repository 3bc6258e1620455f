import pytest
import torch

from auden_kit.encoders.zipformer import PRESETS, ZipformerConfig, ZipformerEncoder
from auden_kit.nn.scaling import SwooshL, SwooshR, set_batch_count

ICEFALL_ENCODER_PARAMS = {"zipformer-s": 21_989_779, "zipformer-m": 63_994_103, "zipformer-l": 146_625_594}


def tiny(causal=False):
    return ZipformerConfig(num_encoder_layers=(1,), encoder_dim=(32, 48), encoder_unmasked_dim=(32,),
                           feedforward_dim=(64,), num_heads=(2,), cnn_module_kernel=(7,),
                           downsampling_factor=(1, 2), query_head_dim=(8,), value_head_dim=(4,), pos_dim=16,
                           causal=causal, chunk_size=(8,), left_context_frames=(16,))


@pytest.mark.parametrize("preset", list(PRESETS))
def test_preset_parameter_counts_match_icefall(preset):
    n = sum(p.numel() for p in ZipformerEncoder(ZipformerConfig(preset=preset)).parameters())
    print(f"{preset}: encoder parameters {n:,} (icefall {ICEFALL_ENCODER_PARAMS[preset]:,})")
    assert n == ICEFALL_ENCODER_PARAMS[preset]


def test_shapes_lengths_and_padding_invariance():
    torch.manual_seed(0)
    enc = ZipformerEncoder(tiny()).eval()
    x = torch.randn(2, 123, 80)
    y, lens = enc(x, torch.tensor([123, 90]))
    assert y.shape == (2, 29, 48) and lens.tolist() == [29, 21]
    # away from its end (where convolutions see the padding), the shorter utterance alone
    # gives the same output as when padded in a batch
    y1, _ = enc(x[1:, :90], torch.tensor([90]))
    assert torch.allclose(y1[0, :12], y[1, :12], atol=1e-4)


def test_training_step_with_regularizers():
    """Every parameter gets a finite gradient, except the layer-level ``bypass_scale`` that exists
    only so that icefall checkpoints load (icefall's layers have it and do not use it either)."""
    import random

    torch.manual_seed(0)
    random.seed(0)
    enc = ZipformerEncoder(tiny()).train()
    set_batch_count(enc, 5000)  # past the positional-embedding skip warm-up, which drops its gradient
    y, _ = enc(torch.randn(3, 80, 80), torch.tensor([80, 70, 60]))
    y.pow(2).mean().backward()
    unused = {n for n, _ in enc.named_parameters() if n.endswith("layers.0.bypass_scale")}
    missing = [n for n, p in enc.named_parameters() if p.grad is None and n not in unused]
    assert not missing, missing
    grads = {n: p.grad for n, p in enc.named_parameters() if n not in unused}
    assert all(torch.isfinite(g).all() for g in grads.values())
    assert sum(bool(g.abs().sum() > 0) for g in grads.values()) >= 0.95 * len(grads)


@pytest.mark.parametrize("cls,offset,const", [(SwooshL, 4.0, 0.035), (SwooshR, 1.0, 0.313261687)])
def test_swoosh_value_and_compact_derivative(cls, offset, const):
    x = torch.linspace(-8, 8, 2001, requires_grad=True)
    y = cls()(x)
    ref = torch.log1p(torch.exp(x.detach() - offset)) - 0.08 * x.detach() - const
    assert torch.allclose(y.detach(), ref, atol=1e-5)
    y.sum().backward()
    exact = torch.sigmoid(x.detach() - offset) - 0.08
    assert (x.grad - exact).abs().max() <= 0.5 / 255 + 1e-6  # bin centre of a 1-byte code


@pytest.mark.parametrize("shape,kernel,padding", [((3, 5, 40), (7,), (3,)), ((2, 6, 25), (8,), (0,)),
                                                  ((2, 4, 30, 11), (7, 7), (3, 3)), ((2, 3, 9, 12), (3, 5), (1, 2))])
def test_depthwise_conv_gradients(shape, kernel, padding):
    from auden_kit.nn.conv import depthwise_conv

    torch.manual_seed(0)
    C = shape[1]
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    w = torch.randn(C, 1, *kernel, dtype=torch.float64, requires_grad=True)
    b = torch.randn(C, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w, b: depthwise_conv(x, w, b, padding), (x, w, b))
    # and the same numbers as torch's own convolution, gradients included
    conv = torch.nn.functional.conv1d if len(shape) == 3 else torch.nn.functional.conv2d
    g = torch.randn_like(conv(x, w, b, padding=padding, groups=C))
    ours = torch.autograd.grad(depthwise_conv(x, w, b, padding), (x, w, b), g)
    ref = torch.autograd.grad(conv(x, w, b, padding=padding, groups=C), (x, w, b), g)
    for a, r in zip(ours, ref):
        assert torch.allclose(a, r, atol=1e-10)


def test_causal_chunks_do_not_see_the_future():
    torch.manual_seed(0)
    enc = ZipformerEncoder(tiny(causal=True)).eval()
    x = torch.randn(1, 200, 80)
    y, _ = enc(x, torch.tensor([200]), chunk_size=8, left_context_frames=16)
    x2 = x.clone()
    x2[:, 120:] = torch.randn(1, 80, 80)
    y2, _ = enc(x2, torch.tensor([200]), chunk_size=8, left_context_frames=16)
    # input frame 120 -> 50 Hz frame ~56 -> chunk of 8 starts at 56 -> output frame 28 at 25 Hz
    assert torch.allclose(y[:, :26], y2[:, :26], atol=1e-5)
    assert not torch.allclose(y[:, 30:], y2[:, 30:], atol=1e-3)


def test_trace_matches_eager():
    torch.manual_seed(0)
    enc = ZipformerEncoder(tiny()).eval()
    x, lens = torch.randn(1, 150, 80), torch.tensor([150])
    traced = torch.jit.trace(enc, (x, lens), check_trace=False)
    for T in (150, 211):
        x = torch.randn(1, T, 80)
        lens = torch.tensor([T])
        assert torch.allclose(traced(x, lens)[0], enc(x, lens)[0], atol=1e-4)


def test_streaming_equals_chunk_masked_full_forward():
    torch.manual_seed(0)
    cfg = ZipformerConfig(num_encoder_layers=(1,), encoder_dim=(32, 48, 32), encoder_unmasked_dim=(32,),
                          feedforward_dim=(64,), num_heads=(2,), cnn_module_kernel=(7,), downsampling_factor=(1, 2, 4),
                          query_head_dim=(8,), value_head_dim=(4,), pos_dim=16, embed_channels=(4, 8, 16),
                          causal=True, chunk_size=(8,), left_context_frames=(16,))
    enc = ZipformerEncoder(cfg).eval()
    x = torch.randn(2, 300, 80)
    full, _ = enc(x, torch.tensor([300, 300]), chunk_size=8, left_context_frames=16)
    states = enc.init_states(batch_size=2)
    outs = []
    for start in range(0, 300, 37):  # pieces unrelated to the chunk size
        y, states = enc.streaming_forward(x[:, start:start + 37], states)
        outs.append(y)
    stream = torch.cat(outs, dim=1)
    assert stream.shape[1] >= full.shape[1] - 6
    assert torch.allclose(stream, full[:, : stream.shape[1]], atol=1e-4), (stream - full[:, :stream.shape[1]]).abs().max()


def test_icefall_checkpoint_import_roundtrip(tmp_path):
    """An icefall-named state dict (front end beside the encoder) loads into our model unchanged."""
    from auden_kit.encoders.zipformer.icefall import apply_icefall_state, load_icefall_checkpoint
    from auden_kit.errors import UserError
    from auden_kit.tasks.asr import AsrModel, AsrModelConfig

    torch.manual_seed(0)
    src = AsrModel(AsrModelConfig(encoder=tiny(), vocab_size=30, decoder_dim=16, joiner_dim=16))
    icefall_state = {}
    for k, v in src.state_dict().items():
        icefall_state[k[len("encoder."):] if k.startswith("encoder.encoder_embed.") else k] = v
    assert any(k.startswith("encoder_embed.") for k in icefall_state)
    torch.save({"model": icefall_state}, tmp_path / "pretrained.pt")
    dst = AsrModel(AsrModelConfig(encoder=tiny(), vocab_size=30, decoder_dim=16, joiner_dim=16))
    apply_icefall_state(dst, load_icefall_checkpoint(tmp_path / "pretrained.pt"))
    x = torch.randn(1, 100, 80)
    src.eval(), dst.eval()
    assert torch.equal(src.encode(x, torch.tensor([100]))[0], dst.encode(x, torch.tensor([100]))[0])
    wrong = AsrModel(AsrModelConfig(encoder=tiny(), vocab_size=31, decoder_dim=16, joiner_dim=16))
    with pytest.raises(UserError, match="has shape"):
        apply_icefall_state(wrong, load_icefall_checkpoint(tmp_path / "pretrained.pt"))
