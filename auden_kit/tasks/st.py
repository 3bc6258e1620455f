"""Speech translation, TTA-style: one encoder; a transducer (and/or CTC) writes the transcript,
an attention decoder writes the translation.

Two decoder formats (``model.decoder_format``):

* ``tta`` (Auden's TTA): the decoder is fed ``<sos> <src_lang> <tgt_lang> y...`` and trained to
  predict ``<src_lang>`` (language identification comes free with the first token), *not*
  ``<tgt_lang>`` (it is forced: the user chooses the target), then the translation and ``<eos>``.
* ``chained``: ``<sos> <src_lang> transcript <tgt_lang> y...``: the decoder writes the transcript,
  then (forced tag) the translation. At inference the transcript part is the transducer's (or
  CTC's) first-pass hypothesis, forced as the prefix: the translation is conditioned on the audio
  *and* on the transcript the same model wrote, so reordering becomes attention over the
  decoder's own text. Measured on mini_synth_st (RESULTS.md): within a 20-minute CPU budget the
  ``tta`` decoder had not yet learned to attend (BLEU ~1), the ``chained`` one had.

An utterance without a translation trains the decoder on its own transcript (target language =
spoken language), so forcing the spoken language as target gives a transcript from the decoder.

Targets (``batch["targets"]``): ``texts`` / ``tokens`` (transcripts, ``text`` tokenizer),
``src_langs``, ``tgt_langs``, ``tgt_texts`` / ``tgt_tokens`` (``tgt`` tokenizer when the model has
one, else the shared ``text`` one), ``has_translation``. Data schema:
:mod:`auden_kit.data.translation`.

Tokenizers: one shared SentencePiece model over transcripts and translations with the language
tags as whole pieces (``auden-kit data tokenizer --translations --lang-tags``), or a separate
``tokenizers.tgt`` for the translations (the tags must be in it).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import random
from collections import Counter

import torch
from torch import Tensor, nn

from auden_kit.data.translation import language_tag, translations
from auden_kit.decoding.attention import beam_search, next_token_logprobs
from auden_kit.errors import UserError
from auden_kit.metrics.wer import normalize_for_scoring
from auden_kit.results import TranslationResult
from auden_kit.tasks.asr import AsrModel, AsrModelConfig, AsrTask, utterance_text

log = logging.getLogger(__name__)

TRANSCRIPT_METHODS = ("greedy", "modified_beam_search", "ctc_greedy", "ctc_prefix_beam", "attention_rescoring")


@dataclasses.dataclass
class StModelConfig(AsrModelConfig):
    """An ASR model config (encoder, transducer/CTC for the transcript) whose attention decoder
    translates. Loss = asr_loss_scale * transcript losses + st_loss_scale * decoder loss; each
    branch switches on at its ``*_start_step``."""

    use_attention_decoder: bool = True
    attention_decoder_layers: int = 3
    asr_loss_scale: float = 1.0
    st_loss_scale: float = 1.0
    asr_start_step: int = 0
    st_start_step: int = 0
    decoder_format: str = "tta"  # tta: <sos> <src> <tgt> y; chained: <sos> <src> transcript <tgt> y
    # the transcript the transducer/CTC learn: none (as written) or lc_rm (lowercased, punctuation
    # removed, as ESPnet-ST trains its ASR branch); the translation keeps case and punctuation
    asr_text_norm: str = "none"
    # optional SigLIP speech-text alignment (TTA): pooled encoder output vs a text tower
    align_loss_scale: float = 0.0  # 0: off
    align_dim: int = 256
    align_text: str = "transcript"  # transcript or translation: what the text tower reads
    align_text_model: str = ""  # "": a small in-repo tower trained jointly; a local Hugging Face folder: frozen
    align_text_layers: int = 2
    max_len_ratio: float = 1.0  # translation length cap: tokens per encoder output frame
    length_penalty: float = 1.0  # beam search: score / (tokens + 1) ** length_penalty

    def validate(self):
        super().validate()
        if not self.use_attention_decoder:
            raise UserError("config key 'model.use_attention_decoder' must be true for task st (the decoder "
                            "writes the translation)")
        if self.attention_decoder_layout != "torch":
            raise UserError("config key 'model.attention_decoder_layout': task st uses the 'torch' layout")
        for k in ("asr_loss_scale", "st_loss_scale", "asr_start_step", "st_start_step", "length_penalty"):
            if getattr(self, k) < 0:
                raise UserError(f"config key 'model.{k}' must be >= 0, got {getattr(self, k)}")
        if min(self.asr_start_step, self.st_start_step) != 0:
            raise UserError("config keys 'model.asr_start_step' / 'model.st_start_step': one branch must train "
                            "from step 0")
        if self.decoder_format not in ("tta", "chained"):
            raise UserError(f"config key 'model.decoder_format' must be tta or chained, got '{self.decoder_format}'")
        if self.asr_text_norm not in ("none", "lc_rm"):
            raise UserError(f"config key 'model.asr_text_norm' must be none or lc_rm, got '{self.asr_text_norm}'")
        if self.align_text not in ("transcript", "translation"):
            raise UserError(f"config key 'model.align_text' must be transcript or translation, got '{self.align_text}'")
        if self.align_loss_scale < 0 or self.align_dim < 1:
            raise UserError("config keys 'model.align_loss_scale' (>= 0) / 'model.align_dim' (>= 1) out of range")
        if self.max_len_ratio <= 0:
            raise UserError(f"config key 'model.max_len_ratio' must be positive, got {self.max_len_ratio}")


class StModel(AsrModel):
    """An ASR model whose attention decoder translates, plus (``align_loss_scale`` > 0) a speech
    projection, a text tower and a SigLIP loss for speech-text alignment."""

    def __init__(self, cfg: StModelConfig):
        super().__init__(cfg)
        if cfg.align_loss_scale > 0:
            from auden_kit.heads.text_tower import HfTextTower, TextTower
            from auden_kit.losses.siglip import SigLipLoss

            self.speech_proj = nn.Linear(self.encoder.output_dim, cfg.align_dim)
            if cfg.align_text_model:
                self.text_tower = HfTextTower(cfg.align_text_model, cfg.align_dim)
            else:
                vocab = cfg.vocab_size if cfg.align_text == "transcript" else (
                    cfg.attention_decoder_vocab_size or cfg.vocab_size)
                self.text_tower = TextTower(vocab, cfg.align_dim, d_model=cfg.attention_decoder_dim,
                                            num_layers=cfg.align_text_layers, num_heads=cfg.attention_decoder_heads)
            self.siglip = SigLipLoss()

    def align_loss(self, enc: Tensor, enc_lens: Tensor, tokens: list[list[int]], texts: list[str]) -> Tensor:
        """SigLIP loss between masked-mean-pooled speech and the text tower, summed over rows;
        rows with the same text are not each other's negatives."""
        from auden_kit.heads.text_tower import masked_mean

        speech = self.speech_proj(masked_mean(enc, enc_lens))
        text = self.text_tower(tokens, texts)
        same = torch.tensor([[a == b for b in texts] for a in texts], device=enc.device)
        return self.siglip(speech, text, same)


def _cut_languages(cut) -> tuple[str | None, list[dict]]:
    """Spoken language and translations of a cut (its supervisions' translations joined per
    target language, in time order; only languages every supervision has)."""
    sups = sorted(cut.supervisions, key=lambda s: s.start)
    src = next((s.language for s in sups if s.language), None)
    per_sup = [{t["language"]: t["text"] for t in translations(s)} for s in sups if s.text and s.text.strip()]
    if not per_sup:
        return src, []
    common = [lang for lang in per_sup[0] if all(lang in d for d in per_sup)]
    return src, [{"language": lang, "text": " ".join(d[lang].strip() for d in per_sup)} for lang in common]


class StTask(AsrTask):
    name = "st"
    model_config_cls = StModelConfig
    model_class = StModel
    decode_methods = ("beam_search", "greedy")
    metric = "bleu"
    metric_lower_is_better = False
    #: validation decodes greedily (beam search every epoch would cost more than it tells)
    validate_options = {"method": "greedy"}
    #: options of :meth:`infer` the CLI may pass through
    infer_options = ("tgt_lang", "src_lang", "asr_method", "length_penalty")
    #: the alignment loss's speech projection and text tower serve training only
    training_only = ("speech_proj.", "text_tower.", "siglip.")

    def inference_config(self, model_cfg: StModelConfig) -> StModelConfig:
        cfg = copy.copy(model_cfg)
        cfg.align_loss_scale = 0.0  # no text tower: a Hugging Face one need not be on this machine
        return cfg

    # ---------------------------------------------------------------- assets
    @property
    def tgt_tokenizer(self):
        return self.assets.tokenizers.get("tgt") or self.tokenizer

    @property
    def languages(self) -> list[str]:
        return self.assets.labels("languages")

    def build_assets(self, train_cfg, model_cfg, train_cuts):
        assets = super().build_assets(train_cfg, model_cfg, train_cuts)
        langs: set[str] = set()
        pairs: Counter = Counter()
        for c in train_cuts:
            src, trans = _cut_languages(c)
            if src:
                langs.add(src)
            for t in trans:
                langs.add(t["language"])
                pairs[(src, t["language"])] += 1
        if not langs:
            raise UserError("task st: no training supervision names its language (field 'language'); the "
                            "decoder's language tags come from it (see `auden-kit data validate`)")
        assets.label_maps["languages"] = sorted(langs)
        default: dict[str, str] = {}
        for (src, tgt), _ in pairs.most_common():
            if src:
                default.setdefault(src, tgt)
        assets.data_stats["default_targets"] = default
        log.info("languages %s; translation pairs %s", sorted(langs),
                 ", ".join(f"{s}-{t}: {n}" for (s, t), n in pairs.most_common()) or "none")
        return assets

    def setup(self, model_cfg, assets):
        super().setup(model_cfg, assets)
        tok = self.tgt_tokenizer
        which = "tgt" if "tgt" in assets.tokenizers else "text"
        ids = {}
        for lang in assets.label_maps.get("languages", []):
            i = tok.piece_to_id(language_tag(lang))
            if i == tok.unk_id:
                raise UserError(f"the '{which}' tokenizer has no symbol {language_tag(lang)} for language '{lang}'; "
                                "train it with the tags (`auden-kit data tokenizer --translations --lang-tags`)")
            ids[lang] = i
        self.tag_ids = ids
        return self

    def build_model(self) -> StModel:
        if "tgt" in self.assets.tokenizers:
            self.model_cfg.attention_decoder_vocab_size = self.assets.tokenizers["tgt"].vocab_size
        return super().build_model()

    # ---------------------------------------------------------------- data
    def _source_language(self, cut, src: str | None) -> str:
        if src:
            if src not in self.tag_ids:
                raise UserError(f"cut '{cut.id}': language '{src}' is not one of this model's "
                                f"({', '.join(self.languages)})")
            return src
        if len(self.languages) == 1:
            return self.languages[0]
        raise UserError(f"cut '{cut.id}' does not name its language (supervision field 'language'); a model "
                        f"of several languages ({', '.join(self.languages)}) needs it")

    def batch_targets(self, cuts, train: bool) -> dict:
        out = {k: [] for k in ("texts", "tokens", "src_langs", "tgt_langs", "tgt_texts", "tgt_tokens",
                               "has_translation", "transcript_prompts")}
        separate = "tgt" in self.assets.tokenizers
        for c in cuts:
            text = utterance_text(c)
            asr_text = normalize_for_scoring(text) if self.model_cfg.asr_text_norm == "lc_rm" else text
            ids = self.tokenizer.encode(asr_text) if asr_text else []
            if train and not ids:
                raise UserError(f"cut '{c.id}': its transcript is empty or encodes to no tokens; remove it "
                                "(`auden-kit data validate` lists such cuts)")
            src, trans = _cut_languages(c)
            src = self._source_language(c, src)
            trans = [t for t in trans if t["language"] in self.tag_ids]
            if trans:
                t = random.choice(trans) if train else trans[0]
                tgt, tgt_text = t["language"], t["text"]
            else:
                tgt, tgt_text = src, text
            tgt_ids = self.tgt_tokenizer.encode(tgt_text) if tgt_text else []
            if train and not tgt_ids:
                raise UserError(f"cut '{c.id}': its {tgt} target text encodes to no tokens")
            prompt = (self.tgt_tokenizer.encode(asr_text) if separate else ids) if self.chained else []
            for k, v in zip(out, (text, ids, src, tgt, tgt_text, tgt_ids, bool(trans), prompt)):
                out[k].append(v)
        return out

    @property
    def chained(self) -> bool:
        return getattr(self.model_cfg, "decoder_format", "tta") == "chained"

    def prompt(self, src: str, tgt: str, transcript: list[int]) -> list[int]:
        """The decoder's forced context after ``<sos>``; its last token (the target tag) is never
        trained, the ones before are (the source tag: language identification; in the chained
        format the transcript too)."""
        if self.chained:
            return [self.tag_ids[src], *transcript, self.tag_ids[tgt]]
        return [self.tag_ids[src], self.tag_ids[tgt]]

    def _decoder_transcript(self, tokens: list[int]) -> list[int]:
        """A transcript hypothesis (transducer/CTC tokens) in the decoder's vocabulary."""
        if "tgt" in self.assets.tokenizers:
            return self.tgt_tokenizer.encode(self.tokenizer.decode(tokens))
        return tokens

    # ---------------------------------------------------------------- training
    def compute_loss(self, model: AsrModel, batch: dict, step: int):
        cfg = model.cfg
        t = batch["targets"]
        empty = [cid for cid, ids in zip(batch["cut_ids"], t["tokens"]) if not ids]
        if empty:
            raise UserError(f"cut '{empty[0]}' has no transcript; a manifest with empty texts cannot be used "
                            "to train or validate ST (`auden-kit data validate` lists them)")
        enc, enc_lens = model.encode(batch["inputs"], batch["input_lens"])
        loss = enc.new_zeros(())
        stats = {}
        if step >= cfg.asr_start_step and cfg.asr_loss_scale > 0:
            asr, stats = self.transcript_losses(model, enc, enc_lens, t["tokens"], step - cfg.asr_start_step)
            loss = loss + cfg.asr_loss_scale * asr
        if step >= cfg.st_start_step and cfg.st_loss_scale > 0:
            prompts = [self.prompt(s, g, p) for s, g, p in zip(t["src_langs"], t["tgt_langs"], t["transcript_prompts"])]
            att = model.attention_decoder.loss(enc, enc_lens, t["tgt_tokens"], cfg.label_smoothing, prompts,
                                               ignore_prompt=(-1,))
            loss = loss + cfg.st_loss_scale * att
            stats["st_loss"] = float(att.detach())
        if cfg.align_loss_scale > 0:
            toks, texts = (t["tokens"], t["texts"]) if cfg.align_text == "transcript" else (t["tgt_tokens"], t["tgt_texts"])
            al = model.align_loss(enc, enc_lens, toks, texts)
            loss = loss + cfg.align_loss_scale * al
            stats["align_loss"] = float(al.detach())
        stats["loss"] = float(loss.detach())
        return loss, stats, float(enc_lens.sum())

    # ---------------------------------------------------------------- inference
    def check_method(self, model: AsrModel, method: str) -> str:
        method = method or self.decode_methods[0]
        if method not in self.decode_methods:
            raise UserError(f"unknown decoding method '{method}' for a speech-translation model (choose from "
                            f"{', '.join(self.decode_methods)}; the transcript's search is --asr-method)")
        return method

    def _transcript_method(self, model: AsrModel, asr_method: str) -> str:
        m = asr_method or ("greedy" if model.cfg.use_transducer else "ctc_greedy")
        if m not in TRANSCRIPT_METHODS:
            raise UserError(f"unknown transcript method '{m}' (choose from {', '.join(TRANSCRIPT_METHODS)})")
        if m.startswith("ctc") and not model.cfg.use_ctc:
            raise UserError(f"transcript method {m} needs a CTC head (model.use_ctc=true)")
        if m == "attention_rescoring":
            if not self.chained:
                raise UserError("transcript method attention_rescoring needs a decoder that reads the transcript "
                                "(model.decoder_format=chained)")
        elif not m.startswith("ctc") and not model.cfg.use_transducer:
            raise UserError(f"transcript method {m} needs a transducer (model.use_transducer=true)")
        return m

    def _check_language(self, lang: str, what: str) -> str:
        if lang and lang not in self.tag_ids:
            raise UserError(f"{what} '{lang}' is not a language of this model (it has: {', '.join(self.languages)})")
        return lang

    def silent_result(self, cut_id: str) -> TranslationResult:
        return TranslationResult(cut_id=cut_id)

    @torch.no_grad()
    def infer(self, model: AsrModel, batch: dict, method: str = "", beam: int = 4, tgt_lang: str = "",
              src_lang: str = "", asr_method: str = "", length_penalty: float | None = None,
              **encode_kw) -> list[TranslationResult]:
        """Translation (attention decoder: ``beam_search`` or ``greedy``) and transcript
        (``asr_method``) of every row. ``tgt_lang``: the output language (default: the reference's
        target when the batch has one, else the language this model most often translated the
        identified source into); ``src_lang`` forces the source tag instead of identifying it."""
        method = self.check_method(model, method)
        asr_method = self._transcript_method(model, asr_method)
        self._check_language(tgt_lang, "--tgt-lang")
        self._check_language(src_lang, "--src-lang")
        cfg = model.cfg
        lp_pen = cfg.length_penalty if length_penalty is None else length_penalty
        enc, enc_lens = model.encode(batch["inputs"], batch["input_lens"], **encode_kw)
        N = enc.shape[0]
        dec = model.attention_decoder
        langs = self.languages
        tag_ix = torch.tensor([self.tag_ids[x] for x in langs], device=enc.device)
        mem, mem_pad = dec.memory(enc, enc_lens)
        first = next_token_logprobs(dec, mem, mem_pad, [[dec.sos_id]] * N)[:, tag_ix].softmax(-1).cpu()
        t = batch.get("targets") or {}
        defaults = self.assets.data_stats.get("default_targets", {})
        srcs, tgts, probs = [], [], []
        for i in range(N):
            k = int(first[i].argmax())
            src = src_lang or langs[k]
            srcs.append(src)
            probs.append(float(first[i, langs.index(src)]))
            tgts.append(tgt_lang or (t["tgt_langs"][i] if t else defaults.get(src, src)))
        if asr_method == "attention_rescoring":  # joint: the transducer's (or CTC's) n-best, rescored by the
            # decoder reading <src> transcript <tgt>, as it does before translating
            hyps = self.attention_rescoring(model, enc, enc_lens, beam, wrap=lambda i, toks: self.prompt(
                srcs[i], tgts[i], self._decoder_transcript(toks)))
        else:
            hyps = self.transcribe(model, enc, enc_lens, asr_method, beam)
        if self.chained:  # the first-pass transcript, in the decoder's vocabulary, is the prefix
            firsts = [self._decoder_transcript(list(h.tokens)) for h in hyps]
        else:
            firsts = [[] for _ in hyps]
        prefixes = [[dec.sos_id, *self.prompt(s, g, p)] for s, g, p in zip(srcs, tgts, firsts)]
        room = dec.pos.shape[0] - 2 - max(len(p) for p in prefixes)
        max_lens = [max(4, min(room, int(cfg.max_len_ratio * int(n)))) for n in enc_lens.tolist()]
        outs = beam_search(dec, enc, enc_lens, prefixes, max_lens, beam=beam if method == "beam_search" else 1,
                           length_penalty=lp_pen)
        ids = batch.get("cut_ids") or [str(i) for i in range(N)]
        results = []
        for i in range(N):
            ref = None
            if t and t["has_translation"][i] and t["tgt_langs"][i] == tgts[i]:
                ref = t["tgt_texts"][i]
            results.append(TranslationResult(
                cut_id=ids[i], text=self.tgt_tokenizer.decode(outs[i].tokens), transcript=self.tokenizer.decode(hyps[i].tokens),
                src_lang=srcs[i], tgt_lang=tgts[i], src_lang_prob=probs[i] if not src_lang else 1.0,
                tokens=[self.tgt_tokenizer.id_to_piece(x) for x in outs[i].tokens], ref=ref,
                ref_transcript=t["texts"][i] if t else None, ref_src_lang=t["src_langs"][i] if t else None))
        return results

    # ---------------------------------------------------------------- scoring
    def evaluate(self, results: list[TranslationResult]) -> dict:
        from auden_kit.metrics.bleu import bleu, chrf, tokenizer_for
        from auden_kit.metrics.wer import compute_wer

        out: dict = {}
        scored = [r for r in results if r.ref is not None]
        if scored:
            hyps, refs = [r.text for r in scored], [r.ref for r in scored]
            # one target language: its tokenizer (zh, char or 13a); several: 13a over all, each
            # direction's own below
            tgts = {tokenizer_for(r.tgt_lang) for r in scored}
            tok = tgts.pop() if len(tgts) == 1 else "13a"
            out["bleu"] = bleu(hyps, refs, tokenize=tok).score
            out["bleu_lc"] = bleu(hyps, refs, lc=True, tokenize=tok).score
            out["chrf"] = chrf(hyps, refs).score
            for d, rs in sorted(_by_direction(scored).items()):
                if len(rs) < len(scored):
                    out[f"bleu_{d}"] = bleu([r.text for r in rs], [r.ref for r in rs],
                                            tokenize=tokenizer_for(rs[0].tgt_lang)).score
        with_tr = [r for r in results if r.ref_transcript]
        if with_tr:
            out["wer"] = compute_wer([(r.cut_id, normalize_for_scoring(r.ref_transcript), normalize_for_scoring(r.transcript))
                                      for r in with_tr]).wer
        with_lang = [r for r in results if r.ref_src_lang]
        if with_lang:
            out["lid_acc"] = 100.0 * sum(r.src_lang == r.ref_src_lang for r in with_lang) / len(with_lang)
        return out

    def write_results(self, results: list[TranslationResult], out_dir, name: str) -> str:
        """``results-<name>.jsonl``, ``metrics-<name>.json``; per direction ``hyp-``/``ref-<name>.<src>-<tgt>.txt``
        (one sentence per line: `sacrebleu ref -tok T < hyp`, T the signature's tokenizer, gives the same
        BLEU); ``bleu-summary-<name>.txt``
        with every score's sacrebleu signature; the transcript's ``errs-``/``wer-summary-`` files
        (lowercased, punctuation removed)."""
        from auden_kit.io import atomic_write_text
        from auden_kit.metrics.bleu import translation_scores
        from auden_kit.metrics.wer import write_results as write_wer

        summary = super(AsrTask, self).write_results(results, out_dir, name)
        lines = []
        for d, rs in sorted(_by_direction([r for r in results if r.ref is not None]).items()):
            atomic_write_text(f"{out_dir}/hyp-{name}.{d}.txt", "".join(r.text + "\n" for r in rs))
            atomic_write_text(f"{out_dir}/ref-{name}.{d}.txt", "".join(r.ref + "\n" for r in rs))
            lines += [f"{d} ({len(rs)} sentences): {s}" for s in translation_scores([r.text for r in rs],
                                                                                  [r.ref for r in rs], rs[0].tgt_lang)]
        with_tr = [r for r in results if r.ref_transcript]
        if with_tr:
            stats = write_wer(out_dir, f"{name}-transcript", [(r.cut_id, normalize_for_scoring(r.ref_transcript),
                                                               normalize_for_scoring(r.transcript)) for r in with_tr])
            lines.append(f"transcript (lowercased, no punctuation): {stats.summary()}")
        if lines:
            atomic_write_text(f"{out_dir}/bleu-summary-{name}.txt", "\n".join(lines) + "\n")
        return summary


def _by_direction(results) -> dict[str, list]:
    out: dict[str, list] = {}
    for r in results:
        out.setdefault(f"{r.ref_src_lang or r.src_lang}-{r.tgt_lang}", []).append(r)
    return out
