"""icefall's Zipformer2 as a reference implementation, built from a checkout of k2-fsa/icefall.

Used by ``zipformer_speed.py`` (side-by-side timing) and ``icefall_parity.py`` (our encoder loaded
with icefall's weights gives icefall's outputs). Nothing here is imported by auden_kit: icefall
is not a dependency, only something to measure against.

Without k2 installed, icefall's fused Swoosh kernels are replaced by icefall's own pure-PyTorch
``SwooshLFunction``/``SwooshRFunction`` (training) and the formula (inference); without the
icefall package on the path, the one helper its Zipformer imports (``torch_autocast``) is stubbed.
"""

from __future__ import annotations

import sys
import types

import torch


def _stub_k2():
    k2 = types.ModuleType("k2")

    def fwd(offset, const):
        return lambda x: torch.nn.functional.softplus(x - offset) - 0.08 * x - const

    k2.swoosh_l_forward, k2.swoosh_r_forward = fwd(4.0, 0.035), fwd(1.0, 0.313261687)
    k2.swoosh_l_forward_and_deriv = lambda x: (k2.swoosh_l_forward(x), torch.sigmoid(x - 4.0) - 0.08)
    k2.swoosh_r_forward_and_deriv = lambda x: (k2.swoosh_r_forward(x), torch.sigmoid(x - 1.0) - 0.08)

    def swoosh_l(x):
        from scaling import SwooshLFunction

        return SwooshLFunction.apply(x)

    def swoosh_r(x):
        from scaling import SwooshRFunction

        return SwooshRFunction.apply(x)

    k2.swoosh_l, k2.swoosh_r = swoosh_l, swoosh_r
    k2.RaggedTensor = object  # named in attention_decoder.py's signatures only
    sys.modules["k2"] = k2


def import_icefall(folder: str):
    """(Conv2dSubsampling, Zipformer2) classes from icefall's ``egs/librispeech/ASR/zipformer``."""
    if folder not in sys.path:
        sys.path.insert(0, folder)
    try:
        import k2  # noqa: F401
    except ImportError:
        _stub_k2()
    try:
        import icefall.utils  # noqa: F401
    except ImportError:
        pkg = types.ModuleType("icefall")
        utils = types.ModuleType("icefall.utils")
        utils.torch_autocast = lambda device_type="cuda", **kw: torch.autocast(
            device_type="cuda" if torch.cuda.is_available() else "cpu", **kw)
        # what attention_decoder.py imports from icefall.utils (only make_pad_mask is used by its
        # TransformerDecoder)
        utils.make_pad_mask = lambda lens, max_len=0: (
            torch.arange(max(max_len, int(lens.max())), device=lens.device).unsqueeze(0) >= lens.unsqueeze(1))
        utils.add_sos = utils.add_eos = None
        pkg.utils = utils
        sys.modules.update({"icefall": pkg, "icefall.utils": utils})
    try:
        from subsampling import Conv2dSubsampling
        from zipformer import Zipformer2
    except ImportError as e:
        sys.exit(f"cannot import icefall's Zipformer from '{folder}' ({e}): pass the "
                 "egs/librispeech/ASR/zipformer folder of an icefall checkout")
    return Conv2dSubsampling, Zipformer2


def build_icefall_encoder(c, folder: str, decoding: bool = False):
    """icefall's front end + Zipformer2 with the sizes of our ZipformerConfig ``c``.

    Causal models: icefall draws a chunk size and left context from its lists on every call, in
    eval mode too; its decoding scripts build the model with one of each. ``decoding=True`` does
    that with the first entries, which is what our encoder uses in eval mode.

    Returns (ModuleList[encoder_embed, encoder], run) where ``run(x (N,T,F), lens) -> (N,T'',C)``
    does what icefall's ``AsrModel.forward_encoder`` does. Regularizer schedules are set to their
    final values (batch_count 1e6), as after a long training run.
    """
    Conv2dSubsampling, Zipformer2 = import_icefall(folder)
    embed = Conv2dSubsampling(c.feature_dim, c.encoder_dim[0], dropout=0.1)
    enc = Zipformer2(output_downsampling_factor=c.output_downsampling_factor,
                     downsampling_factor=tuple(c.downsampling_factor), num_encoder_layers=tuple(c.num_encoder_layers),
                     encoder_dim=tuple(c.encoder_dim), encoder_unmasked_dim=tuple(c.encoder_unmasked_dim),
                     query_head_dim=tuple(c.query_head_dim), pos_head_dim=tuple(c.pos_head_dim),
                     value_head_dim=tuple(c.value_head_dim), pos_dim=c.pos_dim, num_heads=tuple(c.num_heads),
                     feedforward_dim=tuple(c.feedforward_dim), cnn_module_kernel=tuple(c.cnn_module_kernel),
                     causal=c.causal, chunk_size=_chunks(c.chunk_size, c.causal, decoding),
                     left_context_frames=_chunks(c.left_context_frames, c.causal, decoding))
    for m in list(embed.modules()) + list(enc.modules()):
        if hasattr(m, "batch_count"):
            m.batch_count = 1e6

    def run(x, lens):
        e, el = embed(x, lens)
        e = e.permute(1, 0, 2)
        mask = torch.arange(e.shape[0], device=el.device).unsqueeze(0) >= el.unsqueeze(1)
        return enc(e, el, mask)[0].permute(1, 0, 2)

    return torch.nn.ModuleList([embed, enc]), run


def _chunks(values, causal: bool, decoding: bool) -> tuple:
    if not causal:
        return (-1,)
    return (values[0],) if decoding else tuple(values)


def icefall_state_dict(model: torch.nn.ModuleList, prefix: str = "") -> dict:
    """The encoder's weights named as in an icefall ``AsrModel`` checkpoint (``encoder_embed.*``,
    ``encoder.*``)."""
    embed, enc = model
    state = {f"{prefix}encoder_embed.{k}": v for k, v in embed.state_dict().items()}
    state.update({f"{prefix}encoder.{k}": v for k, v in enc.state_dict().items()})
    return state


def build_icefall_attention_decoder(folder: str, vocab_size: int, d_model: int, num_layers: int, num_heads: int,
                                    ff_dim: int, attention_dim: int, memory_dim: int):
    """icefall's ``AttentionDecoderModel`` (its TransformerDecoder is ``.decoder``)."""
    import_icefall(folder)
    from attention_decoder import AttentionDecoderModel

    return AttentionDecoderModel(vocab_size=vocab_size, decoder_dim=d_model, num_decoder_layers=num_layers,
                                 attention_dim=attention_dim, num_heads=num_heads, feedforward_dim=ff_dim,
                                 memory_dim=memory_dim)
