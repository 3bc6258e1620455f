"""A Hugging Face causal language model as the decoder over encoder frames, TagSpeech-style.

The encoder memory (N, T, C) is stacked ``stack`` frames at a time, projected (Linear-ReLU-
Linear) to the language model's hidden size and fed as a *prefix* of input embeddings, with a
time-anchor token (the embedding of the time token of that instant) every ``anchor_every``
seconds, as TagSpeech inserts numeric anchors into its streams. The output tokens follow the
prefix; the model's last hidden state is projected back to the task's width, and the task's own
output function (e.g. tagspeech's pointers) turns it into logits. Rows are left-padded so that
every row's tokens continue right after its own prefix (positions from the attention mask).

The language model itself rides along like a frozen teacher (:class:`~auden_kit.nn.frozen.Frozen`
with gradients passing through): it is never in ``state_dict()``, the optimizer or the running
average, and a saved model folder names its local directory instead of copying billions of
weights. ``train="lora"`` adds low-rank adapters (``B A x * alpha / r``, B starting at zero, so
training starts from the plain model) on the linear layers whose names end with one of
``lora_targets``, through forward hooks: the adapters are ordinary parameters of this module
(trained, averaged and saved); the language model's own weights never change.

The same interface as :class:`~auden_kit.heads.attention_decoder.AttentionDecoder` (``memory``,
``decode``, ``decode_with_attention``, ``start_cache``/``step``, ``loss``, ``embed``, ``out``,
``output_fn``), so a task switches decoders by configuration. Nothing is downloaded: the
directory must hold ``config.json`` and the weights (tests use a tiny random config)."""

from __future__ import annotations

import inspect
import logging
import math
from pathlib import Path

import torch
from torch import Tensor, nn

from auden_kit.errors import UserError
from auden_kit.heads.attention_decoder import AttentionDecoder
from auden_kit.nn.frozen import Frozen

log = logging.getLogger(__name__)

LLM_TRAIN = ("frozen", "lora")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_local_lm(path: str, attentions: bool, dtype: str = "float32", key: str = "model.llm_path") -> nn.Module:
    """The base (headless) model of a local Hugging Face causal LM folder; a :class:`UserError`
    naming ``key`` when the folder or the ``transformers`` package is missing."""
    d = Path(path)
    if not (d / "config.json").is_file():
        raise UserError(f"config key '{key}': '{path}' is not a local Hugging Face model folder (no config.json); "
                        "give the directory of a downloaded causal LM (nothing is downloaded at run time). A saved "
                        "model folder names its LM in its config.yaml: if the LM moved, edit that key there")
    try:
        import transformers
        from transformers import AutoModel
    except ImportError:
        raise UserError(f"config key '{key}' needs the 'transformers' package (pip install transformers)") from None
    if dtype not in DTYPES:
        raise UserError(f"config key 'model.llm_dtype' must be one of {', '.join(DTYPES)}, got '{dtype}'")
    level = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # "lm_head unused": the base model is what is wanted
    try:
        # eager attention returns attention weights (what attention-guiding losses read)
        kw = {"attn_implementation": "eager"} if attentions else {}
        return AutoModel.from_pretrained(str(d), local_files_only=True, dtype=DTYPES[dtype], **kw)
    except (OSError, ValueError) as e:
        raise UserError(f"config key '{key}': cannot load a causal LM from '{path}': {e}") from None
    finally:
        transformers.logging.set_verbosity(level)


class LoRA(nn.Module):
    """Low-rank update of one linear layer: ``x -> B(A(dropout(x))) * alpha / r``."""

    def __init__(self, d_in: int, d_out: int, rank: int, alpha: float, dropout: float):
        super().__init__()
        self.A = nn.Linear(d_in, rank, bias=False)
        self.B = nn.Linear(rank, d_out, bias=False)
        nn.init.kaiming_uniform_(self.A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.B.weight)
        self.scale = alpha / rank
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.B(self.A(self.drop(x.to(self.A.weight.dtype)))) * self.scale


class LLMDecoder(AttentionDecoder):
    def __init__(self, vocab_size: int, d_model: int, lm: nn.Module, sos_id: int, eos_id: int,
                 frame_shift: float, time_token, stack: int = 4, anchor_every: float = 1.28, train: str = "lora",
                 lora_rank: int = 8, lora_alpha: float = 16.0, lora_targets=("q_proj", "v_proj"),
                 dropout: float = 0.1, lexical: Tensor | None = None):
        """``time_token(t)``: the vocabulary id of the time token of ``t`` seconds (the anchors);
        ``lexical`` (V, H) or None: fixed input embeddings added to the learned ones (e.g. each text
        piece's mean embedding under the language model's own tokenizer)."""
        nn.Module.__init__(self)
        if train not in LLM_TRAIN:
            raise UserError(f"config key 'model.llm_train' must be one of {', '.join(LLM_TRAIN)}, got '{train}'")
        self.sos_id, self.eos_id, self.vocab_size = sos_id, eos_id, vocab_size
        self.lm = Frozen(lm, no_grad=False)
        H = int(lm.config.hidden_size)
        self.hidden, self.stack, self.frame_shift = H, max(1, int(stack)), float(frame_shift)
        self.anchor_stride = max(1, int(round(anchor_every / (self.frame_shift * self.stack))))  # stacked positions
        self.time_token = time_token
        self.lm_dtype = next(lm.parameters()).dtype
        self.embed = nn.Embedding(vocab_size, d_model)  # the task may replace it (same call signature)
        nn.init.normal_(self.embed.weight, std=d_model ** -0.5)
        self.tok_proj = nn.Linear(d_model, H)
        self.register_buffer("lexical", lexical.float() if lexical is not None else None, persistent=False)
        self.projector = nn.Sequential(nn.Linear(d_model * self.stack, H), nn.ReLU(), nn.Linear(H, H))
        self.out_proj = nn.Linear(H, d_model)
        self.norm = nn.LayerNorm(d_model)
        self.out = nn.Linear(d_model, vocab_size)
        self.output_fn = None
        self.drop = nn.Dropout(dropout)
        self.lora = nn.ModuleDict()
        if train == "lora":
            self._add_lora(lm, lora_rank, lora_alpha, tuple(lora_targets), dropout)
        params = inspect.signature(lm.forward).parameters
        self._cache_kw = "past_key_values" if "past_key_values" in params else "cache"

    def _add_lora(self, lm: nn.Module, rank: int, alpha: float, targets: tuple, dropout: float):
        if rank < 1:
            raise UserError(f"config key 'model.llm_lora_rank' must be >= 1, got {rank}")
        for name, mod in lm.named_modules():
            if isinstance(mod, nn.Linear) and name.split(".")[-1] in targets:
                key = name.replace(".", "__")
                self.lora[key] = LoRA(mod.in_features, mod.out_features, rank, alpha, dropout)
                mod.register_forward_hook(lambda m, inp, out, a=self.lora[key]: out + a(inp[0]).to(out.dtype))
        if not len(self.lora):
            names = sorted({n.split(".")[-1] for n, m in lm.named_modules() if isinstance(m, nn.Linear)})
            raise UserError(f"config key 'model.llm_lora_targets' ({list(targets)}) matched no linear layer of the "
                            f"language model; its linear layers are named {', '.join(names)}")
        log.info("LoRA (rank %d) on %d linear layers of the language model", rank, len(self.lora))

    # ------------------------------------------------------------------ inputs
    def token_embeddings(self, ids: Tensor) -> Tensor:
        e = self.tok_proj(self.embed(ids))
        if self.lexical is not None:
            e = e + self.lexical[ids]
        return e

    def memory(self, enc: Tensor, enc_lens: Tensor) -> tuple[Tensor, Tensor]:
        mem_pad = torch.arange(enc.shape[1], device=enc.device).unsqueeze(0) >= enc_lens.unsqueeze(1)
        return enc, mem_pad

    def prefix(self, mem: Tensor, mem_pad: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Left-padded prefix embeddings (N, P, H), their mask (N, P; True = real) and, per memory
        frame, its prefix position (N, T) (stacked frames and anchors interleaved)."""
        N, T, C = mem.shape
        s, A = self.stack, self.anchor_stride
        Tp = -(-T // s) * s
        x = nn.functional.pad(mem.masked_fill(mem_pad[..., None], 0.0), (0, 0, 0, Tp - T))
        frames = self.projector(x.view(N, Tp // s, s * C))  # (N, K, H)
        K = (~mem_pad).sum(-1).add(s - 1).div(s, rounding_mode="floor").clamp(min=1)  # stacked frames per row
        groups = K.add(A - 1).div(A, rounding_mode="floor")
        P = int((K + groups).max())
        G = int(groups.max())
        anchor_ids = torch.tensor([self.time_token(g * A * s * self.frame_shift) for g in range(G)],
                                  device=mem.device)
        anchors = self.token_embeddings(anchor_ids)  # (G, H)
        out = mem.new_zeros(N, P, self.hidden)
        mask = torch.zeros(N, P, dtype=torch.bool, device=mem.device)
        where = torch.zeros(N, Tp // s, dtype=torch.long, device=mem.device)
        k = torch.arange(Tp // s, device=mem.device)
        for i in range(N):
            n, g = int(K[i]), int(groups[i])
            off = P - (n + g)  # left padding
            pos_f = off + k[:n] + k[:n] // A + 1  # a stacked frame after the anchors of its group and before
            pos_a = off + torch.arange(g, device=mem.device) * (A + 1)
            out[i, pos_f] = frames[i, :n]
            out[i, pos_a] = anchors[:g]
            mask[i, off:] = True
            where[i, :n] = pos_f
        frame_pos = where.repeat_interleave(s, dim=1)[:, :T]
        return out, mask, frame_pos

    def _run(self, embeds: Tensor, mask: Tensor, positions: Tensor, attentions: bool = False, cache=None):
        kw = {self._cache_kw: cache} if cache is not None else {}
        return self.lm(inputs_embeds=embeds.to(self.lm_dtype), attention_mask=mask.long(), position_ids=positions,
                       output_attentions=attentions, use_cache=cache is not None or not self.training, **kw)

    def _forward(self, mem: Tensor, mem_pad: Tensor, ys_in: Tensor, pad: Tensor, attentions: bool):
        pre, pre_mask, frame_pos = self.prefix(mem, mem_pad)
        x = torch.cat([pre, self.drop(self.token_embeddings(ys_in))], 1)
        mask = torch.cat([pre_mask, ~pad], 1)
        positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
        o = self._run(x, mask, positions, attentions)
        P = pre.shape[1]
        h = self.out_proj(o.last_hidden_state[:, P:].float())
        attn = None
        if attentions:
            a = o.attentions[-1].float().mean(1)[:, P:, :P]  # (N, U, P): tokens -> prefix
            # each stacked frame's share, spread evenly over the frames it stacks (anchors hold none)
            idx = frame_pos[:, None, :].expand(-1, a.shape[1], -1)
            attn = a.gather(2, idx) / self.stack * (~mem_pad)[:, None, :]
        return self._output(h, mem, mem_pad), attn

    def decode(self, mem: Tensor, mem_pad: Tensor, ys_in: Tensor, pad: Tensor) -> Tensor:
        return self._forward(mem, mem_pad, ys_in, pad, attentions=False)[0]

    def decode_with_attention(self, mem: Tensor, mem_pad: Tensor, ys_in: Tensor, pad: Tensor) -> tuple[Tensor, Tensor]:
        """Logits and the last layer's attention from each token to the memory frames (N, U, T),
        mean over heads (needs the language model loaded with eager attention)."""
        return self._forward(mem, mem_pad, ys_in, pad, attentions=True)

    # ------------------------------------------------------------------ incremental decoding
    def start_cache(self, mem: Tensor, mem_pad: Tensor) -> dict:
        """Runs the prefix once; :meth:`step` then feeds one token per row at a time."""
        pre, mask, _ = self.prefix(mem, mem_pad)
        positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
        from transformers import DynamicCache

        o = self._run(pre, mask, positions, cache=DynamicCache())
        return {"mem": mem, "pad": mem_pad, "kv": getattr(o, "past_key_values", None) or getattr(o, "cache"),
                "mask": mask, "next": positions[:, -1] + 1}

    def step(self, cache: dict, tokens: Tensor) -> Tensor:
        mask = torch.cat([cache["mask"], torch.ones_like(cache["mask"][:, :1])], 1)
        o = self._run(self.token_embeddings(tokens[:, None]), mask, cache["next"][:, None], cache=cache["kv"])
        cache["kv"] = getattr(o, "past_key_values", None) or getattr(o, "cache")
        cache["mask"], cache["next"] = mask, cache["next"] + 1
        h = self.out_proj(o.last_hidden_state.float())
        return self._output(h, cache["mem"], cache["pad"])[:, 0]


def lexical_embeddings(lm: nn.Module, path: str, pieces: list[str], size: int) -> Tensor | None:
    """(size, H): row j = the mean input embedding of ``pieces[j]`` under the language model's own
    tokenizer (SentencePiece's word mark read as a space); zero rows for ids past ``pieces`` and
    pieces it cannot spell. None when the folder has no tokenizer."""
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except Exception as e:  # a folder without tokenizer files: learned embeddings only
        log.info("no tokenizer in '%s' (%s): text pieces start from learned embeddings only", path, type(e).__name__)
        return None
    table = lm.get_input_embeddings().weight.detach().float()
    out = torch.zeros(size, table.shape[1])
    for j, p in enumerate(pieces[:size]):
        ids = [i for i in tok.encode(p.replace("\u2581", " "), add_special_tokens=False) if 0 <= i < table.shape[0]]
        if ids and not (p.startswith("<") and p.endswith(">")):
            out[j] = table[ids].mean(0)
    return out
