"""Text towers for speech-text alignment losses: the utterance embedding of a text.

* :class:`TextTower` a small transformer encoder trained jointly (the default: nothing to
  download), over the model's own token ids, masked-mean pooled.
* :class:`HfTextTower` a Hugging Face encoder (BERT-like) loaded from a *local directory*
  (``local_files_only``: never the hub), frozen: it is wrapped in :class:`~auden_kit.nn.frozen.Frozen`
  so it is never optimised, averaged or saved; only its projection is trained.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from auden_kit.errors import UserError


def masked_mean(x: Tensor, lens: Tensor) -> Tensor:
    """Mean over the first ``lens[i]`` steps of each row of ``x`` (N, T, C) -> (N, C)."""
    mask = (torch.arange(x.shape[1], device=x.device).unsqueeze(0) < lens.unsqueeze(1)).unsqueeze(-1)
    return (x * mask).sum(1) / lens.clamp(min=1).unsqueeze(1).to(x.dtype)


class TextTower(nn.Module):
    def __init__(self, vocab_size: int, out_dim: int, d_model: int = 256, num_layers: int = 2, num_heads: int = 4,
                 max_len: int = 512):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Parameter(torch.randn(max_len, d_model))  # the embeddings' scale (see AttentionDecoder)
        layer = nn.TransformerEncoderLayer(d_model, num_heads, 4 * d_model, 0.1, batch_first=True, norm_first=True)
        self.layers = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.proj = nn.Linear(d_model, out_dim)
        self.max_len = max_len

    def forward(self, tokens: list[list[int]], texts: list[str] | None = None) -> Tensor:
        device = self.pos.device
        tokens = [t[: self.max_len] or [0] for t in tokens]
        lens = torch.tensor([len(t) for t in tokens], device=device)
        ids = torch.zeros(len(tokens), int(lens.max()), dtype=torch.long, device=device)
        for i, t in enumerate(tokens):
            ids[i, : len(t)] = torch.tensor(t, device=device)
        pad = torch.arange(ids.shape[1], device=device).unsqueeze(0) >= lens.unsqueeze(1)
        h = self.layers(self.embed(ids) + self.pos[: ids.shape[1]], src_key_padding_mask=pad)
        return self.proj(masked_mean(h, lens))


class HfTextTower(nn.Module):
    """A frozen Hugging Face text encoder from a local directory + a trained projection."""

    def __init__(self, directory: str | Path, out_dim: int):
        super().__init__()
        from auden_kit.nn.frozen import Frozen

        directory = Path(directory)
        if not (directory / "config.json").is_file():
            raise UserError(f"text model folder '{directory}' has no config.json (give a local Hugging Face model "
                            "folder; nothing is downloaded)")
        try:
            from transformers import AutoModel, AutoTokenizer
        except ImportError:
            raise UserError("a Hugging Face text tower needs the 'transformers' package (pip install transformers)") \
                from None
        self.tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
        model = AutoModel.from_pretrained(str(directory), local_files_only=True)
        self.encoder = Frozen(model)
        self.proj = nn.Linear(model.config.hidden_size, out_dim)

    def forward(self, tokens: list[list[int]], texts: list[str]) -> Tensor:
        device = self.proj.weight.device
        enc = self.tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt").to(device)
        h = self.encoder(**enc).last_hidden_state
        return self.proj(masked_mean(h, enc["attention_mask"].sum(1)))
