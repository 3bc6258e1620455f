"""``auden-kit import-icefall``: an icefall Zipformer transducer/CTC checkpoint -> our model folder.

The model's sizes (preset or custom, causal or not, CTC head, decoder/joiner sizes) are read off
the checkpoint's tensor shapes; the tokenizer is icefall's ``bpe.model`` itself (same reserved ids).
"""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from auden_kit.cli.common import setup_logging
from auden_kit.errors import UserError

log = logging.getLogger(__name__)
EPILOG = ("Example: auden-kit import-icefall --checkpoint exp/pretrained.pt --tokenizer data/lang_bpe_500/bpe.model "
          "--out exp/icefall-zipformer")


def _tokenizer(path: Path):
    from auden_kit.tokenizers import SentencePieceTokenizer, load_tokenizer

    if path.is_file():
        return SentencePieceTokenizer(path)
    if (path / "tokenizer.yaml").is_file():
        return load_tokenizer(path)
    if (path / "bpe.model").is_file():
        return SentencePieceTokenizer(path / "bpe.model")
    raise UserError(f"--tokenizer '{path}': give icefall's bpe.model (e.g. data/lang_bpe_500/bpe.model), "
                    "its folder, or a folder with tokenizer.yaml")


def import_icefall(
    checkpoint: Path = typer.Option(..., help="icefall pretrained.pt or epoch-N.pt."),
    tokenizer: Path = typer.Option(..., help="icefall's bpe.model (or its lang folder, or a tokenizer folder)."),
    out: Path = typer.Option(..., help="Model folder to write."),
    causal: bool = typer.Option(None, "--causal/--no-causal", help="Override: the checkpoint is (not) a "
                                "streaming model (default: read from its weights)."),
    chunk_size: int = typer.Option(16, help="Causal models: decoding chunk (50 Hz frames), as icefall's "
                                            "--chunk-size."),
    left_context_frames: int = typer.Option(64, help="Causal models: left context (50 Hz frames)."),
    attention_heads: int = typer.Option(8, help="Heads of the checkpoint's attention decoder, if it has one "
                                                "(not visible in the weights; icefall's default is 8)."),
):
    """Convert an icefall Zipformer2 checkpoint into a model folder (sizes read from the weights)."""
    from auden_kit.data.features import FbankSettings
    from auden_kit.encoders.zipformer import ZipformerConfig
    from auden_kit.encoders.zipformer.icefall import apply_icefall_state, infer_config, load_icefall_checkpoint
    from auden_kit.hub import get_task, save_pretrained
    from auden_kit.tasks.asr import AsrModelConfig
    from auden_kit.tasks.base import ModelAssets

    setup_logging()
    tok = _tokenizer(tokenizer)
    state = load_icefall_checkpoint(checkpoint)
    enc, asr = infer_config(state)
    preset = enc.pop("preset_name", None)
    if causal is not None:
        enc["causal"] = causal
    if enc["causal"]:
        enc.update(chunk_size=(chunk_size,), left_context_frames=(left_context_frames,))
    if asr.get("vocab_size") and asr["vocab_size"] != tok.vocab_size:
        raise UserError(f"the checkpoint's vocabulary has {asr['vocab_size']} symbols but '{tokenizer}' has "
                        f"{tok.vocab_size}: give the bpe.model it was trained with")
    if asr.get("use_attention_decoder"):
        asr["attention_decoder_heads"] = attention_heads
        if asr["attention_decoder_attention_dim"] % attention_heads:
            raise UserError(f"--attention-heads {attention_heads} does not divide the attention decoder's width "
                            f"{asr['attention_decoder_attention_dim']}")
    cfg = AsrModelConfig(encoder=ZipformerConfig(**enc), **asr)
    log.info("read from the weights: %s%s, %s, transducer %s, CTC %s, attention decoder %s, vocabulary %d",
             preset or "custom sizes", f" {enc['encoder_dim']}" if not preset else "",
             "causal" if enc["causal"] else "non-causal", asr["use_transducer"], asr["use_ctc"],
             asr.get("use_attention_decoder", False), asr.get("vocab_size", 0))
    task = get_task("asr").setup(cfg, ModelAssets(tokenizers={"text": tok}))
    model = task.build_model()
    apply_icefall_state(model, state)
    save_pretrained(out, "asr", cfg, model, task.assets, FbankSettings(num_mel_bins=enc["feature_dim"]))
    typer.echo(f"model folder: {out}")
