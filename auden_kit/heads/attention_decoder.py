"""Attention (transformer) decoder heads over encoder output: trained with label-smoothed
cross-entropy, used to rescore n-best lists. Two layouts: :class:`AttentionDecoder` (PyTorch's
TransformerDecoder, learned positions) and :class:`IcefallAttentionDecoder` (icefall's, so its
checkpoints import). Shape legend: N batch, T frames, U tokens, C channels."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class AttentionDecoder(nn.Module):
    def __init__(self, vocab_size: int, encoder_dim: int, d_model: int = 256, num_layers: int = 2,
                 num_heads: int = 4, ff_dim: int = 1024, dropout: float = 0.1, sos_id: int = 1, eos_id: int = 1,
                 max_len: int = 1024):
        super().__init__()
        self.sos_id, self.eos_id, self.vocab_size = sos_id, eos_id, vocab_size
        # token embeddings of unit scale after the sqrt(d_model) factor, positions of the same scale:
        # measured, with N(0, 1) embeddings (x16 for d=256) beside 0.02-scale positions the decoder
        # could not tell positions apart (a 7-token reversal task stayed at chance after 300 Adam
        # steps; with these scales it is solved in 100)
        self.embed = nn.Embedding(vocab_size, d_model)
        nn.init.normal_(self.embed.weight, std=d_model ** -0.5)
        self.pos = nn.Parameter(torch.randn(max_len, d_model))
        self.enc_proj = nn.Linear(encoder_dim, d_model)
        layer = nn.TransformerDecoderLayer(d_model, num_heads, ff_dim, dropout, batch_first=True, norm_first=True)
        self.layers = nn.TransformerDecoder(layer, num_layers)
        self.norm = nn.LayerNorm(d_model)
        self.out = nn.Linear(d_model, vocab_size)
        self.scale = math.sqrt(d_model)
        # optional replacement of ``out``: fn(h (N, U, d) normalised, mem (N, T, d), mem_pad) ->
        # logits (N, U, V); e.g. a pointer over memory frames for time tokens (task tagspeech)
        self.output_fn = None
        # dropout on the cross-attention weights in :meth:`decode_with_attention` (None: ``dropout``,
        # as in :meth:`decode`); over minute-long memories it is the costliest op of a training step
        self.cross_attention_dropout: float | None = None

    def _output(self, h: Tensor, mem: Tensor, mem_pad: Tensor) -> Tensor:
        h = self.norm(h)
        return self.output_fn(h, mem, mem_pad) if self.output_fn is not None else self.out(h)

    def _inputs(self, tokens: list[list[int]], device, prompts: list[list[int]] | None = None,
                ignore_prompt: tuple[int, ...] = ()) -> tuple[Tensor, Tensor, Tensor]:
        """Inputs ``sos + prompt + y``, targets ``prompt + y + eos`` (padding and the prompt
        positions in ``ignore_prompt`` are -100: not trained; negative positions count from the
        prompt's end), and the padding mask (True = pad).

        A prompt is forced context such as ST's language tags: with prompt ``<src> <tgt>`` and
        ``ignore_prompt=(1,)`` the decoder learns to predict the source language first (language
        identification for free) while the target tag is given, never predicted."""
        prompts = prompts or [[] for _ in tokens]
        seqs = [list(p) + list(t) for p, t in zip(prompts, tokens)]
        U = max(len(s) for s in seqs) + 1
        N = len(tokens)
        ys_in = torch.full((N, U), self.eos_id, dtype=torch.long)
        ys_out = torch.full((N, U), -100, dtype=torch.long)
        pad = torch.ones(N, U, dtype=torch.bool)
        for i, (p, s) in enumerate(zip(prompts, seqs)):
            ys_in[i, : len(s) + 1] = torch.tensor([self.sos_id] + s)
            ys_out[i, : len(s) + 1] = torch.tensor(s + [self.eos_id])
            pad[i, : len(s) + 1] = False
            for j in ignore_prompt:
                if -len(p) <= j < len(p):
                    ys_out[i, j % len(p)] = -100
        return ys_in.to(device), ys_out.to(device), pad.to(device)

    def memory(self, enc: Tensor, enc_lens: Tensor) -> tuple[Tensor, Tensor]:
        """Projected encoder output and its padding mask (computed once per utterance in search)."""
        mem_pad = torch.arange(enc.shape[1], device=enc.device).unsqueeze(0) >= enc_lens.unsqueeze(1)
        return self.enc_proj(enc), mem_pad

    def decode(self, mem: Tensor, mem_pad: Tensor, ys_in: Tensor, pad: Tensor) -> Tensor:
        """Logits (N, U, V) for inputs ``ys_in`` over the projected memory."""
        U = ys_in.shape[1]
        x = self.embed(ys_in) * self.scale + self.pos[:U]
        causal = torch.triu(torch.ones(U, U, dtype=torch.bool, device=ys_in.device), diagonal=1)
        h = self.layers(x, mem, tgt_mask=causal, tgt_key_padding_mask=pad, memory_key_padding_mask=mem_pad)
        return self._output(h, mem, mem_pad)

    def logits(self, enc: Tensor, enc_lens: Tensor, ys_in: Tensor, pad: Tensor) -> Tensor:
        return self.decode(*self.memory(enc, enc_lens), ys_in, pad)

    def decode_with_attention(self, mem: Tensor, mem_pad: Tensor, ys_in: Tensor, pad: Tensor) -> tuple[Tensor, Tensor]:
        """:meth:`decode` computed layer by layer, also returning the last layer's cross-attention
        weights averaged over heads (N, U, T): what attention-guiding losses read. Same result as
        :meth:`decode` (dropout included in training mode)."""
        U = ys_in.shape[1]
        x = self.embed(ys_in) * self.scale + self.pos[:U]
        causal = torch.triu(torch.ones(U, U, dtype=torch.bool, device=ys_in.device), diagonal=1)
        self_mask = ~(causal[None, None] | pad[:, None, None, :])
        cross_mask = ~mem_pad[:, None, None, :]
        attn = None
        for layer in self.layers.layers:
            sa, mha = layer.self_attn, layer.multihead_attn
            d, H = sa.embed_dim, sa.num_heads
            p = sa.dropout if self.training else 0.0
            q, k, v = nn.functional.linear(layer.norm1(x), sa.in_proj_weight, sa.in_proj_bias).chunk(3, dim=-1)
            a = nn.functional.scaled_dot_product_attention(self._heads(q, H), self._heads(k, H), self._heads(v, H),
                                                           attn_mask=self_mask, dropout_p=p)
            x = x + layer.dropout1(sa.out_proj(a.transpose(1, 2).reshape(x.shape[0], U, d)))
            w = mha.in_proj_weight
            b = mha.in_proj_bias
            q = self._heads(nn.functional.linear(layer.norm2(x), w[:d], b[:d]), H)
            k = self._heads(nn.functional.linear(mem, w[d: 2 * d], b[d: 2 * d]), H)
            v = self._heads(nn.functional.linear(mem, w[2 * d:], b[2 * d:]), H)
            p = (mha.dropout if self.cross_attention_dropout is None else self.cross_attention_dropout) \
                if self.training else 0.0
            if layer is not self.layers.layers[-1]:  # only the last layer's weights are returned: fused kernel
                a = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=cross_mask, dropout_p=p)
            else:
                scores = (q @ k.transpose(-1, -2)) / math.sqrt(d // H)
                probs = scores.masked_fill(~cross_mask, float("-inf")).softmax(-1)
                attn = probs.mean(1)
                a = nn.functional.dropout(probs, p, self.training) @ v
            x = x + layer.dropout2(mha.out_proj(a.transpose(1, 2).reshape(x.shape[0], U, d)))
            h = layer.linear2(layer.dropout(layer.activation(layer.linear1(layer.norm3(x)))))
            x = x + layer.dropout3(h)
        return self._output(x, mem, mem_pad), attn

    # ------------------------------------------------------------------ incremental decoding
    def start_cache(self, mem: Tensor, mem_pad: Tensor) -> dict:
        """State for :meth:`step`: each layer's cross-attention keys/values of the projected memory
        (computed once) and empty self-attention caches. Eval mode only (no dropout)."""
        cache = {"pad": mem_pad, "mem": mem, "u": 0, "layers": []}
        for layer in self.layers.layers:
            mha = layer.multihead_attn
            d = mha.embed_dim
            w, b = mha.in_proj_weight, mha.in_proj_bias
            k = nn.functional.linear(mem, w[d: 2 * d], b[d: 2 * d])
            v = nn.functional.linear(mem, w[2 * d:], b[2 * d:])
            cache["layers"].append({"mk": self._heads(k, mha.num_heads), "mv": self._heads(v, mha.num_heads),
                                    "sk": None, "sv": None})
        return cache

    @staticmethod
    def _heads(x: Tensor, h: int) -> Tensor:
        N, T, D = x.shape
        return x.view(N, T, h, D // h).transpose(1, 2)  # (N, H, T, D/H)

    def step(self, cache: dict, tokens: Tensor) -> Tensor:
        """Logits (N, V) of the next token after feeding ``tokens`` (N,) at the next position;
        equal to :meth:`decode` over the whole prefix, at the cost of one position (keys and
        values of earlier positions are cached; PyTorch's ``norm_first`` layer, eval mode)."""
        u = cache["u"]
        x = self.embed(tokens.unsqueeze(1)) * self.scale + self.pos[u: u + 1]
        if "mask" not in cache:  # where the memory may be attended, made once (None: no padding)
            cache["mask"] = ~cache["pad"][:, None, None, :] if bool(cache["pad"].any()) else None
        for layer, c in zip(self.layers.layers, cache["layers"]):
            sa = layer.self_attn
            d, H = sa.embed_dim, sa.num_heads
            h = layer.norm1(x)
            q, k, v = nn.functional.linear(h, sa.in_proj_weight, sa.in_proj_bias).chunk(3, dim=-1)
            k, v = self._heads(k, H), self._heads(v, H)
            if c["sk"] is None or c["sk"].shape[2] == u:  # keys/values in a buffer that doubles when full
                grow = [t.new_empty(t.shape[0], t.shape[1], 2 * u + 64, t.shape[3]) for t in (k, v)]
                if u:
                    grow[0][:, :, :u], grow[1][:, :, :u] = c["sk"], c["sv"]
                c["sk"], c["sv"] = grow
            c["sk"][:, :, u: u + 1], c["sv"][:, :, u: u + 1] = k, v
            a = nn.functional.scaled_dot_product_attention(self._heads(q, H), c["sk"][:, :, : u + 1],
                                                           c["sv"][:, :, : u + 1])
            x = x + sa.out_proj(a.transpose(1, 2).reshape(x.shape[0], 1, d))
            mha = layer.multihead_attn
            h = layer.norm2(x)
            q = nn.functional.linear(h, mha.in_proj_weight[:d], mha.in_proj_bias[:d])
            a = nn.functional.scaled_dot_product_attention(self._heads(q, H), c["mk"], c["mv"], attn_mask=cache["mask"])
            x = x + mha.out_proj(a.transpose(1, 2).reshape(x.shape[0], 1, d))
            x = x + layer.linear2(layer.activation(layer.linear1(layer.norm3(x))))
        cache["u"] = u + 1
        return self._output(x, cache["mem"], cache["pad"])[:, 0]

    def loss(self, enc: Tensor, enc_lens: Tensor, tokens: list[list[int]], label_smoothing: float = 0.1,
             prompts: list[list[int]] | None = None, ignore_prompt: tuple[int, ...] = ()) -> Tensor:
        """Label-smoothed cross-entropy, summed over the trained target positions (eos included)."""
        ys_in, ys_out, pad = self._inputs(tokens, enc.device, prompts, ignore_prompt)
        logits = self.logits(enc, enc_lens, ys_in, pad)
        return nn.functional.cross_entropy(logits.reshape(-1, self.vocab_size).float(), ys_out.reshape(-1),
                                           ignore_index=-100, label_smoothing=label_smoothing, reduction="sum")

    @torch.no_grad()
    def score(self, enc: Tensor, enc_lens: Tensor, tokens: list[list[int]], eos: bool = True) -> Tensor:
        """log P(tokens + eos | enc) for each hypothesis (``eos=False``: log P(tokens | enc), for a
        sequence that the decoder continues, e.g. ST's ``<src> transcript <tgt>``); enc rows are
        repeated per hypothesis by the caller."""
        ys_in, ys_out, pad = self._inputs(tokens, enc.device)
        if not eos:  # the end-of-sentence target sits right after each sequence
            rows = torch.arange(len(tokens), device=ys_out.device)
            ys_out[rows, torch.tensor([len(t) for t in tokens], device=ys_out.device)] = -100
        lp = self.logits(enc, enc_lens, ys_in, pad).log_softmax(-1)
        tok_lp = torch.gather(lp, 2, ys_out.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        return tok_lp.masked_fill(ys_out < 0, 0.0).sum(-1)


class _MultiHeadAttention(nn.Module):
    """Scaled dot-product attention with separate q/k/v projections (icefall's parameter names).
    query (N, U, D), key/value (N, S, M) -> (N, U, D); mask (N, U or 1, S) True = not allowed."""

    def __init__(self, embed_dim: int, attention_dim: int, num_heads: int, memory_dim: int | None = None):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, attention_dim // num_heads
        kv_dim = memory_dim or embed_dim
        self.linear_q = nn.Linear(embed_dim, attention_dim)
        self.linear_k = nn.Linear(kv_dim, attention_dim)
        self.linear_v = nn.Linear(kv_dim, attention_dim)
        self.out_proj = nn.Linear(attention_dim, embed_dim)

    def forward(self, query: Tensor, kv: Tensor, mask: Tensor) -> Tensor:
        N, U, _ = query.shape
        S = kv.shape[1]
        H, d = self.num_heads, self.head_dim
        q = self.linear_q(query).view(N, U, H, d).transpose(1, 2)
        k = self.linear_k(kv).view(N, S, H, d).transpose(1, 2)
        v = self.linear_v(kv).view(N, S, H, d).transpose(1, 2)
        w = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(d)  # (N, H, U, S)
        w = w.masked_fill(mask.unsqueeze(1), float("-inf")).softmax(-1)
        return self.out_proj(torch.matmul(w, v).transpose(1, 2).reshape(N, U, H * d))


class _DecoderLayer(nn.Module):
    """Pre-norm self-attention, cross-attention over the encoder output, Swish feed-forward."""

    def __init__(self, d_model: int, attention_dim: int, num_heads: int, ff_dim: int, memory_dim: int,
                 dropout: float):
        super().__init__()
        self.norm_self_attn = nn.LayerNorm(d_model)
        self.self_attn = _MultiHeadAttention(d_model, attention_dim, num_heads)
        self.norm_src_attn = nn.LayerNorm(d_model)
        self.src_attn = _MultiHeadAttention(d_model, attention_dim, num_heads, memory_dim=memory_dim)
        self.norm_ff = nn.LayerNorm(d_model)
        self.feed_forward = nn.Sequential(nn.Linear(d_model, ff_dim), nn.SiLU(), nn.Dropout(dropout),
                                          nn.Linear(ff_dim, d_model))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, self_mask: Tensor, memory: Tensor, memory_mask: Tensor) -> Tensor:
        h = self.norm_self_attn(x)
        x = x + self.dropout(self.self_attn(h, h, self_mask))
        x = x + self.dropout(self.src_attn(self.norm_src_attn(x), memory, memory_mask))
        return x + self.dropout(self.feed_forward(self.norm_ff(x)))


class _TransformerDecoder(nn.Module):
    def __init__(self, vocab_size: int, d_model: int, num_layers: int, attention_dim: int, num_heads: int,
                 ff_dim: int, memory_dim: int, dropout: float):
        super().__init__()
        self.d_model = d_model
        self.embed = nn.Embedding(vocab_size, d_model)
        self.layers = nn.ModuleList([_DecoderLayer(d_model, attention_dim, num_heads, ff_dim, memory_dim, dropout)
                                     for _ in range(num_layers)])
        self.output_layer = nn.Linear(d_model, vocab_size)
        self.pos_dropout = nn.Dropout(dropout)

    def positions(self, U: int, device) -> Tensor:
        """Sinusoidal absolute positions (U, D): sines at even, cosines at odd channels."""
        pos = torch.arange(U, dtype=torch.float32, device=device).unsqueeze(1)
        div = torch.exp(torch.arange(0, self.d_model, 2, dtype=torch.float32, device=device)
                        * -(math.log(10000.0) / self.d_model))
        pe = torch.zeros(U, self.d_model, device=device)
        pe[:, 0::2] = torch.sin(pos * div)
        pe[:, 1::2] = torch.cos(pos * div)
        return pe


class IcefallAttentionDecoder(AttentionDecoder):
    """The attention decoder of icefall's Zipformer recipes, same parameter names (under
    ``decoder.``), so ``auden-kit import-icefall`` loads it unchanged: embeddings scaled by
    sqrt(D) plus sinusoidal positions, pre-norm layers with self- and cross-attention and a
    Swish feed-forward, no final norm. Loss and rescoring are :class:`AttentionDecoder`'s."""

    def __init__(self, vocab_size: int, encoder_dim: int, d_model: int = 512, num_layers: int = 6,
                 num_heads: int = 8, ff_dim: int = 2048, attention_dim: int = 0, dropout: float = 0.1,
                 sos_id: int = 1, eos_id: int = 1):
        nn.Module.__init__(self)
        self.sos_id, self.eos_id, self.vocab_size = sos_id, eos_id, vocab_size
        self.decoder = _TransformerDecoder(vocab_size, d_model, num_layers, attention_dim or d_model, num_heads,
                                           ff_dim, encoder_dim, dropout)

    def logits(self, enc: Tensor, enc_lens: Tensor, ys_in: Tensor, pad: Tensor) -> Tensor:
        dec = self.decoder
        U = ys_in.shape[1]
        x = dec.pos_dropout(dec.embed(ys_in) * math.sqrt(dec.d_model) + dec.positions(U, ys_in.device))
        future = torch.triu(torch.ones(U, U, dtype=torch.bool, device=enc.device), diagonal=1)
        self_mask = pad.unsqueeze(1) | future.unsqueeze(0)  # (N, U, U)
        mem_mask = (torch.arange(enc.shape[1], device=enc.device).unsqueeze(0) >= enc_lens.unsqueeze(1)).unsqueeze(1)
        for layer in dec.layers:
            x = layer(x, self_mask, enc, mem_mask)
        return dec.output_layer(x)
