"""ASR: an encoder (Zipformer by default) + stateless transducer (pruned RNN-T) and/or CTC,
optionally an attention decoder for rescoring.

Targets (``batch["targets"]``, built in data workers by :meth:`AsrTask.batch_targets`):
``tokens`` ([[int]] * B, the ``text`` tokenizer's ids) and ``texts`` ([str] * B). A cut with
several supervisions is one utterance: its texts are joined in time order; supervisions that
overlap in time (several speakers at once) are an error naming the cut (use a diarized-ASR task).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

from auden_kit.decoding.ctc import ctc_greedy, ctc_prefix_beam
from auden_kit.decoding.transducer import greedy_search, modified_beam_search
from auden_kit.errors import UserError
from auden_kit.heads.attention_decoder import AttentionDecoder, IcefallAttentionDecoder
from auden_kit.heads.transducer import Joiner, StatelessDecoder, joiner_on_band
from auden_kit.hub import build_encoder, encoder_config
from auden_kit.losses.rnnt import band_indices, pruned_loss, simple_loss_and_ranges
from auden_kit.metrics.timing import aligned_items
from auden_kit.metrics.wer import compute_wer
from auden_kit.results import TextResult
from auden_kit.tasks.base import Task


@dataclasses.dataclass
class AsrModelConfig:
    """Model section of an ASR config. ``vocab_size`` 0 means: take it from the tokenizer.
    ``encoder`` holds the settings of the encoder named by ``encoder_type``."""

    encoder_type: str = "zipformer"
    encoder: Any = dataclasses.field(default_factory=dict)
    vocab_size: int = 0
    decoder_dim: int = 512
    joiner_dim: int = 512
    context_size: int = 2
    use_transducer: bool = True
    use_ctc: bool = False
    prune_range: int = 5
    lm_scale: float = 0.25
    am_scale: float = 0.0
    simple_loss_scale: float = 0.5
    ctc_loss_scale: float = 0.2
    use_attention_decoder: bool = False
    attention_decoder_dim: int = 256
    attention_decoder_layers: int = 2
    attention_decoder_heads: int = 4
    attention_decoder_ff_dim: int = 1024
    attention_decoder_loss_scale: float = 0.8
    attention_decoder_layout: str = "torch"  # torch (PyTorch's TransformerDecoder) or icefall (imports icefall's)
    attention_decoder_attention_dim: int = 0  # icefall layout: attention width (0: attention_decoder_dim)
    attention_decoder_vocab_size: int = 0  # 0: vocab_size (the decoder writes what the transducer does)
    label_smoothing: float = 0.1
    warm_step: int = 2000

    def __post_init__(self):
        self.encoder = encoder_config(self.encoder_type, self.encoder)

    def validate(self):
        if not (self.use_transducer or self.use_ctc):
            raise UserError("config keys 'model.use_transducer' / 'model.use_ctc': at least one must be true "
                            "(the attention decoder only rescores their n-best lists)")
        if self.use_transducer:
            if self.context_size < 1:
                raise UserError(f"config key 'model.context_size' must be >= 1, got {self.context_size}")
            if self.decoder_dim < 4 or (self.context_size > 1 and self.decoder_dim % 4):
                raise UserError(f"config key 'model.decoder_dim' must be a multiple of 4 (its context convolution "
                                f"has decoder_dim/4 groups), got {self.decoder_dim}")
            if self.joiner_dim < 1:
                raise UserError(f"config key 'model.joiner_dim' must be positive, got {self.joiner_dim}")
            if self.prune_range < 2:
                raise UserError(f"config key 'model.prune_range' must be >= 2, got {self.prune_range}")
        if self.attention_decoder_layout not in ("torch", "icefall"):
            raise UserError(f"config key 'model.attention_decoder_layout' must be torch or icefall, got "
                            f"'{self.attention_decoder_layout}'")
        if self.use_attention_decoder and self.attention_decoder_dim % max(1, self.attention_decoder_heads):
            raise UserError(f"config key 'model.attention_decoder_dim' ({self.attention_decoder_dim}) must be "
                            f"divisible by model.attention_decoder_heads ({self.attention_decoder_heads})")
        if self.warm_step < 0:
            raise UserError(f"config key 'model.warm_step' must be >= 0, got {self.warm_step}")


class AsrModel(nn.Module):
    """forward(x (N, T, F), x_lens, targets (N, U) padded with -1 ...) -> losses."""

    def __init__(self, cfg: AsrModelConfig):
        super().__init__()
        self.cfg = cfg
        V = cfg.vocab_size
        self.encoder = build_encoder(cfg.encoder_type, cfg.encoder)
        enc_dim = self.encoder.output_dim
        if cfg.use_transducer:
            self.decoder = StatelessDecoder(V, cfg.decoder_dim, blank_id=0, context_size=cfg.context_size)
            self.joiner = Joiner(enc_dim, cfg.decoder_dim, cfg.joiner_dim, V)
            self.simple_am_proj = nn.Linear(enc_dim, V)
            self.simple_lm_proj = nn.Linear(cfg.decoder_dim, V)
        if cfg.use_ctc:
            self.ctc_output = nn.Sequential(nn.Dropout(p=0.1), nn.Linear(enc_dim, V))
        Va = cfg.attention_decoder_vocab_size or V
        if cfg.use_attention_decoder and cfg.attention_decoder_layout == "icefall":
            self.attention_decoder = IcefallAttentionDecoder(
                Va, enc_dim, cfg.attention_decoder_dim, cfg.attention_decoder_layers, cfg.attention_decoder_heads,
                cfg.attention_decoder_ff_dim, cfg.attention_decoder_attention_dim)
        elif cfg.use_attention_decoder:
            self.attention_decoder = AttentionDecoder(Va, enc_dim, cfg.attention_decoder_dim,
                                                      cfg.attention_decoder_layers, cfg.attention_decoder_heads,
                                                      cfg.attention_decoder_ff_dim)

    def encode(self, x: Tensor, x_lens: Tensor, **kw) -> tuple[Tensor, Tensor]:
        return self.encoder(x, x_lens, **kw)

    def transducer_losses(self, enc: Tensor, enc_lens: Tensor, targets: list[list[int]]) -> tuple[Tensor, Tensor]:
        cfg = self.cfg
        N = enc.shape[0]
        U = max(len(t) for t in targets)
        y = torch.zeros(N, U, dtype=torch.long, device=enc.device)
        for i, t in enumerate(targets):
            y[i, : len(t)] = torch.tensor(t, dtype=torch.long)
        labels = torch.tensor([len(t) for t in targets], device=enc.device)
        dec_in = torch.cat([torch.zeros(N, 1, dtype=torch.long, device=enc.device), y], dim=1)  # blank-start
        dec_out = self.decoder(dec_in)  # (N, U+1, D)
        am = self.simple_am_proj(enc)
        lm = self.simple_lm_proj(dec_out)
        simple, starts = simple_loss_and_ranges(am, lm, y, enc_lens, labels, prune_range=cfg.prune_range,
                                                lm_only_scale=cfg.lm_scale, am_only_scale=cfg.am_scale)
        S = min(cfg.prune_range, U + 1)
        logits = joiner_on_band(self.joiner, enc, dec_out, band_indices(starts, S, U))  # (N, T, S, V)
        pruned = pruned_loss(logits, y, starts, enc_lens, labels)
        return simple, pruned

    def ctc_loss(self, enc: Tensor, enc_lens: Tensor, targets: list[list[int]]) -> Tensor:
        lp = self.ctc_output(enc).log_softmax(-1)  # (N, T, V)
        flat = torch.tensor([t for ts in targets for t in ts], dtype=torch.long)
        lens = torch.tensor([len(t) for t in targets], dtype=torch.long)
        return nn.functional.ctc_loss(lp.transpose(0, 1).float(), flat, enc_lens.cpu(), lens, blank=0,
                                      reduction="sum", zero_infinity=True)


def _timing(results: list[TextResult]) -> dict:
    """Word start times against the cuts' word alignments (:mod:`auden_kit.metrics.timing`); {}
    when no cut has one or the tokens do not mark word starts."""
    from auden_kit.metrics.timing import hyp_word_starts, word_timing
    from auden_kit.metrics.wer import scoring_units

    items = []
    for r in results:
        if r.ref_words:
            starts = hyp_word_starts(r.tokens, r.times)
            words = scoring_units(r.text)
            if len(starts) == len(words):
                items.append((r.ref_words, words, starts))
    return word_timing(items)


def _result(h, tokenizer, cut_id: str, frame_shift: float, ref: str | None = None) -> TextResult:
    """A hypothesis as text, token pieces and token times in seconds: the centre of the encoder
    frame that emitted each token (measured against the synthesizer's word alignments, the
    centre rather than the start of the frame cut the mean word-start error of the quick start's
    model from 46 to 37 ms with greedy search and from 40 to 31 ms with CTC)."""
    return TextResult(cut_id=cut_id, text=tokenizer.decode(h.tokens),
                      tokens=[tokenizer.id_to_piece(t) for t in h.tokens],
                      times=[round((f + 0.5) * frame_shift, 3) for f in h.frames], ref=ref)


def utterance_text(cut) -> str:
    """The transcript of a single-speaker cut: its supervisions' texts in time order."""
    sups = sorted(cut.supervisions, key=lambda s: s.start)
    for a, b in zip(sups, sups[1:]):
        if b.start < a.end - 0.01:
            raise UserError(f"cut '{cut.id}': supervisions '{a.id}' and '{b.id}' overlap in time; an ASR "
                            "task reads one speaker at a time and its transcript has no order for overlapped "
                            "speech (split the cut with trim_to_supervisions, use a diarized-ASR task, or "
                            "for meetings `auden-kit diarize --cuts`)")
    return " ".join(s.text.strip() for s in sups if s.text and s.text.strip())


class AsrTask(Task):
    name = "asr"
    model_config_cls = AsrModelConfig
    model_class = AsrModel
    decode_methods = ("greedy", "modified_beam_search", "ctc_greedy", "ctc_prefix_beam", "attention_rescoring")
    metric = "wer"

    @property
    def tokenizer(self):
        return self.assets.tokenizer("text")

    def default_method(self, model: AsrModel) -> str:
        return "greedy" if model.cfg.use_transducer else "ctc_greedy"

    def build_model(self) -> AsrModel:
        cfg = self.model_cfg
        tok = self.assets.tokenizers.get("text")
        if cfg.vocab_size <= 0:
            if tok is None:
                raise UserError("config key 'model.vocab_size' is 0 and no tokenizer was given "
                                "(config key 'tokenizer')")
            cfg.vocab_size = tok.vocab_size
        elif tok is not None and cfg.vocab_size != tok.vocab_size:
            raise UserError(f"config key 'model.vocab_size' is {cfg.vocab_size} but the tokenizer has "
                            f"{tok.vocab_size} symbols (set model.vocab_size=0 to follow the tokenizer)")
        return self.model_class(cfg)

    def batch_targets(self, cuts, train: bool) -> dict:
        texts, tokens = [], []
        for c in cuts:
            text = utterance_text(c)
            ids = self.tokenizer.encode(text) if text else []
            if train and not ids:
                raise UserError(f"cut '{c.id}': its transcript is empty or encodes to no tokens; remove it "
                                "(`auden-kit data validate` lists such cuts)")
            texts.append(text)
            tokens.append(ids)
        return {"texts": texts, "tokens": tokens}

    def compute_loss(self, model: AsrModel, batch: dict, step: int):
        cfg = model.cfg
        x, x_lens = batch["inputs"], batch["input_lens"]
        targets = batch["targets"]["tokens"]
        empty = [cid for cid, t in zip(batch["cut_ids"], targets) if not t]
        if empty:
            raise UserError(f"cut '{empty[0]}' has no transcript; a manifest with empty texts cannot be used "
                            "to train or validate ASR (`auden-kit data validate` lists them)")
        enc, enc_lens = model.encode(x, x_lens)
        loss, stats = self.transcript_losses(model, enc, enc_lens, targets, step)
        if cfg.use_attention_decoder:
            att = model.attention_decoder.loss(enc, enc_lens, targets, cfg.label_smoothing)
            loss = loss + cfg.attention_decoder_loss_scale * att
            stats["attention_decoder_loss"] = float(att.detach())
        stats["loss"] = float(loss.detach())
        return loss, stats, float(enc_lens.sum())

    @staticmethod
    def transcript_losses(model: AsrModel, enc: Tensor, enc_lens: Tensor, targets: list[list[int]],
                          step: int) -> tuple[Tensor, dict]:
        """Transducer (simple + pruned, with the warm-up ramp) and CTC losses on ``targets``,
        summed over the batch; and their values for logging."""
        cfg = model.cfg
        stats = {}
        loss = enc.new_zeros(())
        if cfg.use_transducer:
            simple, pruned = model.transducer_losses(enc, enc_lens, targets)
            s = cfg.simple_loss_scale
            if step < cfg.warm_step:  # start on the simple loss, bring in the pruned one
                frac = step / max(1, cfg.warm_step)
                simple_scale, pruned_scale = 1.0 - frac * (1.0 - s), 0.1 + 0.9 * frac
            else:
                simple_scale, pruned_scale = s, 1.0
            loss = loss + simple_scale * simple + pruned_scale * pruned
            stats["simple_loss"] = float(simple.detach())
            stats["pruned_loss"] = float(pruned.detach())
        if cfg.use_ctc:
            ctc = model.ctc_loss(enc, enc_lens, targets)
            loss = loss + (cfg.ctc_loss_scale if cfg.use_transducer else 1.0) * ctc
            stats["ctc_loss"] = float(ctc.detach())
        return loss, stats

    def check_method(self, model: AsrModel, method: str) -> str:
        method = super().check_method(model, method)
        if method.startswith("ctc") and not model.cfg.use_ctc:
            raise UserError(f"--method {method} needs a model trained with a CTC head (model.use_ctc=true)")
        if method == "attention_rescoring" and not model.cfg.use_attention_decoder:
            raise UserError("--method attention_rescoring needs a model with an attention decoder "
                            "(model.use_attention_decoder=true)")
        if method in ("greedy", "modified_beam_search") and not model.cfg.use_transducer:
            raise UserError(f"--method {method} needs a transducer model; use ctc_greedy or ctc_prefix_beam")
        return method

    def silent_result(self, cut_id: str) -> TextResult:
        return TextResult(cut_id=cut_id)  # digital silence: no words (a model would invent some)

    @torch.no_grad()
    def infer(self, model: AsrModel, batch: dict, method: str = "", beam: int = 4, **encode_kw) -> list[TextResult]:
        method = self.check_method(model, method)
        enc, enc_lens = model.encode(batch["inputs"], batch["input_lens"], **encode_kw)
        hyps = self.transcribe(model, enc, enc_lens, method, beam)
        ids = batch.get("cut_ids") or [str(i) for i in range(len(hyps))]
        refs = batch.get("targets", {}).get("texts") or [None] * len(hyps)
        shift = model.encoder.frame_shift
        out = [_result(h, self.tokenizer, cid, shift, ref) for cid, h, ref in zip(ids, hyps, refs)]
        for r, cut in zip(out, batch.get("cuts") or []):  # word times to score the hypothesis' times against
            if r.ref is not None:
                r.ref_words = aligned_items(cut, "word") or None
        return out

    def transcribe(self, model: AsrModel, enc: Tensor, enc_lens: Tensor, method: str, beam: int):
        """Transcript hypotheses (tokens, frames) of encoder output with a checked ``method``."""
        if method == "greedy":
            return greedy_search(model, enc, enc_lens)
        if method == "modified_beam_search":
            return modified_beam_search(model, enc, enc_lens, beam=beam)
        if method == "attention_rescoring":
            return self.attention_rescoring(model, enc, enc_lens, beam)
        lp = model.ctc_output(enc).log_softmax(-1)
        return ctc_greedy(lp, enc_lens) if method == "ctc_greedy" else ctc_prefix_beam(lp, enc_lens, beam=beam)

    def streaming_decoder(self, model: AsrModel):
        """A :class:`StreamingGreedyDecoder` for one stream (causal transducer models only)."""
        from auden_kit.decoding.transducer import StreamingGreedyDecoder

        if not getattr(model.cfg.encoder, "causal", False) or not model.cfg.use_transducer:
            raise UserError("streaming decoding needs a causal transducer model (model.encoder.causal=true, "
                            "model.use_transducer=true)")
        return StreamingGreedyDecoder(model)

    def streaming_result(self, model: AsrModel, hyp, cut_id: str = "") -> TextResult:
        return _result(hyp, self.tokenizer, cut_id, model.encoder.frame_shift)

    @staticmethod
    def attention_rescoring(model: AsrModel, enc: Tensor, enc_lens: Tensor, beam: int, scale: float = 1.0,
                            wrap: Callable[[int, list[int]], list[int]] | None = None):
        """N-best from the transducer (modified beam search) or else CTC prefix beam search,
        rescored with the attention decoder: score = first-pass score + scale * attention log-prob.
        ``wrap(row, tokens)``: the sequence the decoder scores for a hypothesis of that row, which
        it continues (no end of sentence): ST's chained decoder reads ``<src> transcript <tgt>``."""
        if model.cfg.use_transducer:
            nbest = modified_beam_search(model, enc, enc_lens, beam=beam, return_nbest=True)
        else:
            lp = model.ctc_output(enc).log_softmax(-1)
            nbest = ctc_prefix_beam(lp, enc_lens, beam=beam, return_nbest=True)
        rows = [i for i, hs in enumerate(nbest) for _ in hs]
        flat = [h for hs in nbest for h in hs]
        seqs = [list(h.tokens) if wrap is None else wrap(i, list(h.tokens)) for i, h in zip(rows, flat)]
        att = model.attention_decoder.score(enc[rows], enc_lens[rows], seqs, eos=wrap is None)
        best, k = [], 0
        for hs in nbest:
            scores = [h.score + scale * float(att[k + j]) for j, h in enumerate(hs)]
            best.append(hs[max(range(len(hs)), key=scores.__getitem__)])
            k += len(hs)
        return best

    def evaluate(self, results: list[TextResult]) -> dict:
        pairs = [(r.cut_id, r.ref, r.text) for r in results if r.ref]
        return {"wer": compute_wer(pairs).wer, **_timing(results)} if pairs else {}

    def write_results(self, results: list[TextResult], out_dir, name: str, normalize: bool = False) -> str:
        """``hyp-NAME.txt`` (Kaldi text: ``<cut-id> <words>``) of every cut, and for the cuts with a
        reference ``ref-NAME.txt`` and icefall-style ``recogs-``, ``errs-`` and ``wer-summary-`` files
        (`auden-kit wer ref-NAME.txt hyp-NAME.txt` gives the same WER); ``normalize``: references and
        output scored case-folded without punctuation (a model trained on other casing or punctuation than
        the test set's). Without it, when that would change the WER by a point or more, the summary says so.
        Cuts without a reference (an unlabeled set) are decoded and listed, not scored."""
        from auden_kit.io import atomic_write_text
        from auden_kit.metrics.wer import compute_wer, normalize_for_scoring, write_results

        atomic_write_text(Path(out_dir) / f"hyp-{name}.txt", "".join(f"{r.cut_id} {r.text}\n" for r in results))
        no_ref = [r.cut_id for r in results if not r.ref]
        if len(no_ref) == len(results):
            return (f"{len(results)} cuts decoded; they have no reference text, so nothing is scored (hypotheses: "
                    f"{Path(out_dir) / f'hyp-{name}.txt'})")
        scored = [r for r in results if r.ref]
        atomic_write_text(Path(out_dir) / f"ref-{name}.txt", "".join(f"{r.cut_id} {r.ref}\n" for r in scored))
        pairs = [(r.cut_id, r.ref, r.text) for r in scored]
        folded = [(u, normalize_for_scoring(ref), normalize_for_scoring(hyp)) for u, ref, hyp in pairs]
        stats = write_results(out_dir, name, folded if normalize else pairs)
        summary = stats.summary() + ("  (case-folded, without punctuation)" if normalize else "")
        if no_ref:
            summary += (f"\nnote: {len(no_ref)} of {len(results)} cuts have no reference text (e.g. '{no_ref[0]}') "
                        f"and are left out of the WER; their hypotheses are in hyp-{name}.txt")
        if not normalize:
            other = compute_wer(folded)
            if stats.wer - other.wer >= 1.0:
                summary += (f"\nnote: the references and the output differ in case or punctuation; case-folded "
                            f"without punctuation (--normalize) the WER is {other.wer:.2f}")
        timing = _timing(results)
        if not timing:
            return summary
        import json

        from auden_kit.io import atomic_write_text
        from auden_kit.metrics.timing import timing_summary

        atomic_write_text(Path(out_dir) / f"word-times-{name}.json", json.dumps(timing, indent=1) + "\n")
        return summary + "\n" + timing_summary(timing)
