"""Export an ASR model folder for deployment: TorchScript (always) or ONNX (``pip install onnx``).

Files, in icefall's split so that existing runtimes' conventions carry over:

* ``encoder.{pt,onnx}``: (x (N, T, 80) fbank, x_lens (N,)) -> (encoder_out (N, T', C), encoder_out_lens)
* ``decoder.{pt,onnx}``: (y (N, context_size) last tokens, -1 = none yet) -> decoder_out (N, D)
* ``joiner.{pt,onnx}``: (encoder_out (N, C), decoder_out (N, D)) -> logits (N, V)
* ``ctc.{pt,onnx}`` when the model has a CTC head: encoder_out (N, T', C) -> log-probs (N, T', V)
* ``config.yaml``, ``tokenizers/`` (``tokenizer/`` for version-1 folders), ``labels/``: copied from the
  model folder.

The encoder is exported in eval mode, where Zipformer's regularizers are identities.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from torch import Tensor, nn

from auden_kit.errors import UserError


class _Decoder(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.decoder = model.decoder

    def forward(self, y: Tensor) -> Tensor:
        return self.decoder(y, need_pad=False).squeeze(1)


class _Joiner(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.joiner = model.joiner

    def forward(self, encoder_out: Tensor, decoder_out: Tensor) -> Tensor:
        return self.joiner(encoder_out, decoder_out)


class _Ctc(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.linear = model.ctc_output[-1]

    def forward(self, encoder_out: Tensor) -> Tensor:
        return self.linear(encoder_out).log_softmax(-1)


class _Encoder(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.encoder = model.encoder

    def forward(self, x: Tensor, x_lens: Tensor) -> tuple[Tensor, Tensor]:
        return self.encoder(x, x_lens)


def _parts(lm) -> dict:
    model = lm.model.eval()
    cfg = lm.model_cfg
    if lm.task.name != "asr":
        raise UserError(f"export supports ASR models; '{lm.directory}' is a '{lm.task.name}' model")
    if not getattr(cfg, "use_transducer", False) and not getattr(cfg, "use_ctc", False):
        raise UserError(f"export supports ASR models with a transducer or CTC head; '{lm.directory}' has neither")
    C = model.encoder.output_dim
    T = 200
    x = torch.randn(1, T, lm.model_cfg.encoder.feature_dim)
    parts = {"encoder": (_Encoder(model), (x, torch.tensor([T])))}
    if cfg.use_transducer:
        ctx = torch.zeros(1, model.decoder.context_size, dtype=torch.long)
        parts["decoder"] = (_Decoder(model), (ctx,))
        parts["joiner"] = (_Joiner(model), (torch.randn(1, C), torch.randn(1, cfg.decoder_dim)))
    if cfg.use_ctc:
        parts["ctc"] = (_Ctc(model), (torch.randn(1, 10, C),))
    return parts


def _copy_meta(lm, out: Path):
    shutil.copy2(lm.directory / "config.yaml", out / "config.yaml")
    for sub in ("tokenizer", "tokenizers", "labels"):
        if (lm.directory / sub).is_dir():
            shutil.copytree(lm.directory / sub, out / sub, dirs_exist_ok=True)


def export_torchscript(lm, out_dir: str | Path) -> list[Path]:
    from auden_kit.io import atomic_path

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with torch.no_grad():
        for name, (module, example) in _parts(lm).items():
            traced = torch.jit.trace(module, example, check_trace=False)
            with atomic_path(out / f"{name}.pt") as tmp:
                torch.jit.save(traced, str(tmp))
            written.append(out / f"{name}.pt")
    _copy_meta(lm, out)
    return written


_ONNX_AXES = {
    "encoder": ({"x": {0: "N", 1: "T"}, "x_lens": {0: "N"}, "encoder_out": {0: "N", 1: "T_out"},
                 "encoder_out_lens": {0: "N"}}, ["x", "x_lens"], ["encoder_out", "encoder_out_lens"]),
    "decoder": ({"y": {0: "N"}, "decoder_out": {0: "N"}}, ["y"], ["decoder_out"]),
    "joiner": ({"encoder_out": {0: "N"}, "decoder_out": {0: "N"}, "logits": {0: "N"}},
               ["encoder_out", "decoder_out"], ["logits"]),
    "ctc": ({"encoder_out": {0: "N", 1: "T"}, "log_probs": {0: "N", 1: "T"}}, ["encoder_out"], ["log_probs"]),
}


def export_onnx(lm, out_dir: str | Path, opset: int = 17) -> list[Path]:
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise UserError("ONNX export needs the onnx package: pip install 'auden-kit[onnx]' "
                        "(or use --format torchscript)") from None
    from auden_kit.io import atomic_path

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (module, example) in _parts(lm).items():
        axes, inputs, outputs = _ONNX_AXES[name]
        with atomic_path(out / f"{name}.onnx") as tmp, torch.no_grad():
            torch.onnx.export(module, example, str(tmp), input_names=inputs, output_names=outputs,
                              dynamic_axes=axes, opset_version=opset, dynamo=False)
        written.append(out / f"{name}.onnx")
    _copy_meta(lm, out)
    return written
