"""Speech translation: the schema and its adapters, BLEU/chrF scoring, the parallel grammar, the
decoder's prompts and beam search, and the `st` task end to end on a tiny corpus."""

import json
import math
import subprocess
from collections import Counter

import pytest
import torch
from lhotse import SupervisionSegment

from auden_kit.data import translation as tr
from auden_kit.data.corpora.parallel import gloss, sample_sentences
from auden_kit.decoding.attention import beam_search
from auden_kit.errors import UserError
from auden_kit.heads.attention_decoder import AttentionDecoder
from auden_kit.metrics.bleu import bleu, chrf
from auden_kit.metrics.wer import normalize_for_scoring


# ------------------------------------------------------------------ scoring
def _bleu_by_hand(hyps, refs):
    """Corpus BLEU-4 (uniform weights, brevity penalty) for whitespace-tokenised text in which
    every n-gram order has at least one match (so no smoothing applies)."""
    match, total = [0] * 4, [0] * 4
    hyp_len = ref_len = 0
    for h, r in zip(hyps, refs):
        h, r = h.split(), r.split()
        hyp_len, ref_len = hyp_len + len(h), ref_len + len(r)
        for n in range(1, 5):
            hc = Counter(tuple(h[i:i + n]) for i in range(len(h) - n + 1))
            rc = Counter(tuple(r[i:i + n]) for i in range(len(r) - n + 1))
            match[n - 1] += sum(min(c, rc[g]) for g, c in hc.items())
            total[n - 1] += max(0, len(h) - n + 1)
    bp = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / hyp_len)
    return 100 * bp * math.exp(sum(math.log(m / t) for m, t in zip(match, total)) / 4)


def test_bleu_matches_the_definition_and_sacrebleu_conventions():
    refs = ["the small dog sees a red house", "my old cat has the new book today"]
    hyps = ["the small dog sees the red house", "my old cat has a new book"]
    s = bleu(hyps, refs)
    assert abs(s.score - _bleu_by_hand(hyps, refs)) < 1e-6
    assert "tok:13a" in s.signature and "case:mixed" in s.signature and "nrefs:1" in s.signature
    assert bleu(refs, refs).score == pytest.approx(100.0)
    # case-sensitive by default; --lc lowercases and removes punctuation on both sides
    cased = ["The Dog sees a house.", "It is here, today!"]
    plain = ["the dog sees a house", "it is here today"]
    assert bleu(plain, cased).score < 50
    lc = bleu(plain, cased, lc=True)
    assert lc.score == pytest.approx(100.0) and "case:lc" in lc.signature and "punct:removed" in lc.signature
    assert normalize_for_scoring("Don't stop, \u00a1Vamos! \"Yes\".") == "don't stop vamos yes"
    c = chrf(hyps, refs)
    assert 0 < c.score < 100 and "nc:6" in c.signature
    with pytest.raises(UserError, match="pair up"):
        bleu(["a"], ["a", "b"])


def test_bleu_with_several_references_per_sentence(tmp_path):
    """Multi-reference BLEU (Fisher-CallHome's four, NIST's): a hypothesis that matches any one
    reference of each sentence scores 100; the command takes several reference files."""
    hyps = ["the small dog sees a red house today", "my old cat has the new book"]
    ref1 = ["a little dog is looking at the red house", "my old cat has the new book"]
    ref2 = ["the small dog sees a red house today", "my aged cat owns a new book"]
    one, two = bleu(hyps, ref1), bleu(hyps, [ref1, ref2])
    assert one.score < 70 and two.score == pytest.approx(100.0) and "nrefs:2" in two.signature
    assert chrf(hyps, [ref1, ref2]).score == pytest.approx(100.0)
    with pytest.raises(UserError, match="reference set 2 has 1 references"):
        bleu(hyps, [ref1, ref2[:1]])
    for name, lines in (("hyp", hyps), ("ref.0", ref1), ("ref.1", ref2), ("short", ref2[:1])):
        (tmp_path / name).write_text("\n".join(lines) + "\n")
    out = json.loads(_cli("bleu", tmp_path / "hyp", tmp_path / "ref.0", tmp_path / "ref.1", "--json").stdout)
    assert out["BLEU"]["score"] == pytest.approx(100.0) and "nrefs:2" in out["BLEU"]["signature"]
    r = _cli("bleu", tmp_path / "hyp", tmp_path / "ref.0", tmp_path / "short")
    assert r.returncode == 1 and "short' has 1" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_bleu_tokenizes_for_the_target_language(tmp_path):
    """Chinese is scored by sacrebleu's zh tokenizer and Japanese by characters: with 13a an
    unsegmented sentence is one token, and one wrong character makes BLEU 0."""
    from auden_kit.metrics.bleu import tokenizer_for, translation_scores

    assert [tokenizer_for(x) for x in ("zh", "zh-TW", "yue", "cmn", "ja", "jpn", "th", "de", "pt-BR", None)] == \
        ["zh", "zh", "zh", "zh", "char", "char", "char", "13a", "13a", "13a"]
    refs = ["\u6211\u4eec\u4eca\u5929\u53bb\u5b66\u6821\u4e0a\u8bfe\u3002"]  # one character differs below
    hyps = ["\u6211\u4eec\u660e\u5929\u53bb\u5b66\u6821\u4e0a\u8bfe\u3002"]
    assert bleu(hyps, refs).score == 0.0
    zh = translation_scores(hyps, refs, "zh")
    assert "tok:zh" in zh[0].signature and 40 < zh[0].score < 100 and "tok:zh" in zh[1].signature
    assert "tok:char" in translation_scores(hyps, refs, "ja")[0].signature
    with pytest.raises(UserError, match="not one of"):
        bleu(hyps, refs, tokenize="ja-mecab")
    # the command: the target language from decode's file name, or --lang / --tokenize
    (tmp_path / "hyp-test.en-zh.txt").write_text(hyps[0] + "\n")
    (tmp_path / "ref-test.en-zh.txt").write_text(refs[0] + "\n")
    out = json.loads(_cli("bleu", tmp_path / "hyp-test.en-zh.txt", tmp_path / "ref-test.en-zh.txt", "--json").stdout)
    assert out["BLEU"]["score"] == pytest.approx(zh[0].score, abs=1e-3) and "tok:zh" in out["BLEU"]["signature"]
    out = json.loads(_cli("bleu", tmp_path / "hyp-test.en-zh.txt", tmp_path / "ref-test.en-zh.txt", "--json",
                          "--tokenize", "13a").stdout)
    assert out["BLEU"]["score"] == 0.0


# ------------------------------------------------------------------ schema and adapters
def _sup(i, text, lang=None, custom=None, rec=None, start=0.0):
    return SupervisionSegment(id=f"s{i}", recording_id=rec or f"r{i}", start=start, duration=1.0, text=text,
                              language=lang, custom=custom)


def test_schema_checks_and_helpers():
    good = tr.with_translations(_sup(0, "hello", "en"), [{"language": "es", "text": "hola"}])
    assert tr.translations(good) == [{"language": "es", "text": "hola"}]
    assert tr.check_fields(good.custom, good.language) is None
    assert tr.check_fields(None, None) is None  # no translations: valid (transcript only)
    assert "no 'language'" in tr.check_fields(good.custom, None)
    assert "must be a list" in tr.check_fields({"translation": {"es": "hola"}}, "en")
    assert "empty text" in tr.check_fields({"translation": [{"language": "es", "text": " "}]}, "en")
    assert "'language'" in tr.check_fields({"translation": [{"text": "hola"}]}, "en")
    assert tr.language_pairs([good, _sup(1, "hi", "en")]) == {"en-es": 1, "en-en": 1}


def test_data_validate_reports_a_malformed_translation(tmp_path):
    from lhotse import SupervisionSet

    from auden_kit.data.validate import validate_manifests

    sups = [tr.with_translations(_sup(0, "hello", "en"), [{"language": "es", "text": "hola"}]),
            _sup(1, "bye", "en", custom={"translation": [{"language": "es"}]})]
    p = tmp_path / "sups.jsonl.gz"
    SupervisionSet.from_segments(sups).to_file(p)
    _, problems = validate_manifests([p], check_audio=False)
    assert len(problems) == 1 and "s1" in str(problems[0]) and "translation" in str(problems[0])


def test_must_c_adapter_joins_the_english_transcript():
    # Lhotse's must_c: text = the translation, language = the target; ids/order need not match the yaml
    sups = [_sup(1, "Hallo Welt.", "de", rec="ted_1", start=3.5), _sup(0, "Guten Tag.", "de", rec="ted_1", start=0.0)]
    yaml_segments = [{"wav": "ted_1.wav", "offset": 0.0, "duration": 1.0},
                     {"wav": "ted_1.wav", "offset": 3.5, "duration": 1.0}]
    out = tr.from_must_c(sups, yaml_segments, ["Good day.", "Hello world."], tgt_lang="de")
    assert [(s.text, s.language, tr.translations(s)) for s in out] == [
        ("Hello world.", "en", [{"language": "de", "text": "Hallo Welt."}]),
        ("Good day.", "en", [{"language": "de", "text": "Guten Tag."}])]
    with pytest.raises(UserError, match="starts at"):
        tr.from_must_c([_sup(2, "x", "de", rec="ted_9")], yaml_segments, ["a", "b"], tgt_lang="de")


def test_iwslt22_ta_and_covost2_adapters(tmp_path):
    s = _sup(0, "transcript", "ta", custom={"translated_text": {"en": "translation"}, "other": 1})
    (out,) = tr.from_iwslt22_ta([s])
    assert tr.translations(out) == [{"language": "en", "text": "translation"}] and out.custom["other"] == 1
    tsv = tmp_path / "covost_v2.fr_en.dev.tsv"
    tsv.write_text("path\tsentence\ttranslation\tclient_id\n"
                   'a.mp3\tIl a dit "oui".\tHe said "yes".\tc1\n'
                   "b.mp3\tBonjour.\t\tc2\n"
                   "missing.mp3\tRien.\tNothing.\tc3\n")
    rows = tr.read_covost2_tsv(tsv, "fr", "en")
    assert rows[0]["sentence"] == 'Il a dit "oui".'  # quotes are literal

    class Rec:
        def __init__(self, rid):
            self.id, self.duration = rid, 2.0

    sups = tr.covost2_supervisions(rows, {"a.mp3": Rec("a"), "b.mp3": Rec("b")}, "fr", "en")
    assert [s.id for s in sups] == ["a", "b"]
    assert tr.translations(sups[0]) == [{"language": "en", "text": 'He said "yes".'}]
    assert tr.translations(sups[1]) == []  # no translation: transcript only
    with pytest.raises(UserError, match="does not exist"):
        tr.read_covost2_tsv(tmp_path / "nope.tsv", "fr", "en")


def test_covost2_command_on_a_clips_folder(tmp_path):
    import numpy as np
    import soundfile as sf
    from lhotse import load_manifest

    clips, tsvs = tmp_path / "clips", tmp_path / "covost"
    clips.mkdir()
    tsvs.mkdir()
    for name in ("a.wav", "b.wav"):
        sf.write(clips / name, np.zeros(8000, dtype=np.float32), 16000)
    for split in ("train", "dev", "test"):
        (tsvs / f"covost_v2.fr_en.{split}.tsv").write_text(
            "path\tsentence\ttranslation\tclient_id\na.wav\tBonjour.\tHello.\tc1\nb.wav\tSalut.\tHi.\tc2\n"
            "gone.wav\tRien.\tNothing.\tc3\n")
    r = _cli("data", "covost2", clips, "--tsv-dir", tsvs, "--src-lang", "fr", "--out-dir", tmp_path / "m")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "1 of 3 clips of train are not in" in r.stderr
    sups = list(load_manifest(tmp_path / "m" / "covost2_supervisions_fr-en_dev.jsonl.gz"))
    assert [(s.text, s.language, tr.translations(s)[0]["text"]) for s in sups] == [
        ("Bonjour.", "fr", "Hello."), ("Salut.", "fr", "Hi.")]
    r = _cli("data", "covost2", tmp_path / "nope", "--tsv-dir", tsvs, "--src-lang", "fr")
    assert r.returncode != 0 and "clips folder" in r.stderr


# ------------------------------------------------------------------ the parallel grammar
def test_grammar_needs_reordering_and_agreement():
    import random

    sents = sample_sentences(300, random.Random(0), set())
    assert len({s.text("en") for s in sents}) == 300
    for s in sents:
        en, es = s.text("en"), s.text("es")
        assert en.endswith(".") and es.endswith(".") and en[0].isupper() and es[0].isupper()
        assert len(en.split()) == len(es.split()) == 7
    hyps = [gloss(s.text("en"), "en") for s in sents]
    refs = [s.text("es") for s in sents]
    assert bleu(hyps, refs).score < 5  # monotone word-by-word gloss fails: reordering is needed
    from auden_kit.data.corpora.parallel import OBJECTS, Phrase

    maps = next(n for n in OBJECTS if n[0] == "map")  # masculine despite -a
    houses = next(n for n in OBJECTS if n[0] == "house")
    assert Phrase("def", "red", maps, True).spanish() == ["los", "mapas", "rojos"]
    assert Phrase("indef", "green", houses, True).spanish() == ["unas", "casas", "verdes"]
    assert Phrase("def", "red", houses, False).english() == ["the", "red", "house"]


# ------------------------------------------------------------------ decoder prompts and search
def test_decoder_prompt_positions_are_forced_not_trained():
    torch.manual_seed(0)
    dec = AttentionDecoder(vocab_size=12, encoder_dim=8, d_model=16, num_layers=1, num_heads=2, ff_dim=32)
    ys_in, ys_out, pad = dec._inputs([[5, 6]], "cpu", prompts=[[9, 10]], ignore_prompt=(1,))
    assert ys_in.tolist() == [[1, 9, 10, 5, 6]]
    assert ys_out.tolist() == [[9, -100, 5, 6, 1]]  # src tag predicted, tgt tag forced, then y + eos
    assert not pad.any()
    enc, lens = torch.randn(2, 7, 8), torch.tensor([7, 5])
    a = dec.loss(enc, lens, [[5, 6], [7]], 0.0, prompts=[[9, 10], [10, 9]], ignore_prompt=(1,))
    b = dec.loss(enc, lens, [[5, 6], [7]], 0.0, prompts=[[9, 11], [10, 11]], ignore_prompt=(1,))
    assert not torch.isclose(a, b)  # the forced tag conditions what follows


def test_chained_format_trains_the_transcript_and_forces_the_target_tag():
    from auden_kit.tasks.st import StModelConfig, StTask

    task = StTask()
    task.model_cfg = StModelConfig(decoder_format="chained")
    task.tag_ids = {"en": 5, "es": 6}
    p = task.prompt("en", "es", [9, 10])
    assert p == [5, 9, 10, 6]
    dec = AttentionDecoder(vocab_size=12, encoder_dim=8, d_model=16, num_layers=1, num_heads=2, ff_dim=32)
    ys_in, ys_out, _ = dec._inputs([[7, 8]], "cpu", prompts=[p], ignore_prompt=(-1,))
    assert ys_in.tolist() == [[1, 5, 9, 10, 6, 7, 8]]
    assert ys_out.tolist() == [[5, 9, 10, -100, 7, 8, 1]]  # LID + transcript trained, the tag forced
    task.model_cfg = StModelConfig()
    assert task.prompt("en", "es", [9, 10]) == [5, 6]  # tta: the transcript is not in the prompt
    with pytest.raises(UserError, match="decoder_format"):
        StModelConfig(decoder_format="cascade").validate()
    with pytest.raises(UserError, match="asr_text_norm"):
        StModelConfig(asr_text_norm="upper").validate()


def test_decoder_learns_to_reorder_its_prompt():
    """The decoder can tell positions apart: reversing a 5-token prompt is learned in 150 Adam
    steps (with the old initialisation, 0.02-scale positions beside x16 token embeddings, the
    loss stayed at 2.1 nats per token: the bug that kept ST from learning)."""
    import random

    torch.manual_seed(0)
    rng = random.Random(0)
    dec = AttentionDecoder(40, 8, d_model=64, num_layers=2, num_heads=4, ff_dim=128, dropout=0.0)
    opt = torch.optim.Adam(dec.parameters(), lr=2e-3)
    enc, lens = torch.zeros(16, 4, 8), torch.full((16,), 4)
    for _ in range(150):
        src = [[rng.randrange(10, 30) for _ in range(5)] for _ in range(16)]
        loss = dec.loss(enc, lens, [x[::-1] for x in src], 0.0, [[3, *x, 4] for x in src],
                        ignore_prompt=tuple(range(-7, 0)))  # only the reversed tokens and eos are trained
        opt.zero_grad()
        (loss / 16).backward()
        opt.step()
    assert float(loss) / 16 / 6 < 0.2


class _TableDecoder:
    """A stand-in decoder with a fixed next-token table, for checking the search itself."""

    sos_id = eos_id = 1

    def __init__(self, table, vocab=6):
        self.table, self.vocab = table, vocab

    def memory(self, enc, enc_lens):
        return enc, torch.zeros(enc.shape[:2], dtype=torch.bool)

    def decode(self, mem, mem_pad, ys, pad):
        out = torch.full((ys.shape[0], ys.shape[1], self.vocab), -1e4)
        for i in range(ys.shape[0]):
            for u in range(ys.shape[1]):
                if pad[i, u]:
                    continue
                prefix = tuple(ys[i, : u + 1].tolist())
                for tok, p in self.table.get(prefix, {1: 1.0}).items():
                    out[i, u, tok] = math.log(p)
        return out


def test_beam_search_beats_greedy_where_greedy_is_myopic():
    # greedy takes 2 (0.6) then must pay 0.3 at best; beam finds 3 (0.4) then 4 (0.9) then eos
    table = {(1,): {2: 0.6, 3: 0.4}, (1, 2): {4: 0.3, 5: 0.3, 1: 0.4}, (1, 2, 4): {1: 1.0},
             (1, 2, 5): {1: 1.0}, (1, 3): {4: 0.9, 1: 0.1}, (1, 3, 4): {1: 1.0}}
    dec = _TableDecoder(table)
    enc, lens = torch.zeros(2, 3, 4), torch.tensor([3, 3])
    greedy = beam_search(dec, enc, lens, [[1], [1]], [10, 10], beam=1, length_penalty=0.0)
    beam = beam_search(dec, enc, lens, [[1], [1]], [10, 10], beam=3, length_penalty=0.0)
    assert greedy[0].tokens == [2] and greedy[0].logprob == pytest.approx(math.log(0.6 * 0.4), abs=1e-4)
    assert beam[0].tokens == [3, 4] and beam[0].logprob == pytest.approx(math.log(0.4 * 0.9), abs=1e-4)
    assert beam[1].tokens == beam[0].tokens  # rows are independent
    # the length cap: a row that never ends stops at its own limit, unfinished
    loop = _TableDecoder({(1,) + (2,) * k: {2: 1.0} for k in range(20)})
    out = beam_search(loop, enc, lens, [[1], [1]], [3, 5], beam=2)
    assert [len(h.tokens) for h in out] == [3, 5] and not out[0].finished


# ------------------------------------------------------------------ speech-text alignment (SigLIP)
def test_siglip_loss_prefers_matching_pairs_and_skips_same_text_pairs():
    from auden_kit.losses.siglip import SigLipLoss

    torch.manual_seed(0)
    loss = SigLipLoss()
    a = torch.randn(4, 8)
    matched = loss(a, a + 0.01 * torch.randn(4, 8))
    shuffled = loss(a, a[[1, 2, 3, 0]])
    assert matched < shuffled
    # rows 0 and 1 say the same sentence: their cross pairs are neither positives nor negatives
    same = torch.zeros(4, 4, dtype=torch.bool)
    same[0, 1] = same[1, 0] = True
    b = a.clone()
    b[1] = a[0]
    assert loss(a, b, same) < loss(a, b)


def _tiny_bert(directory):
    from transformers import BertConfig, BertModel, BertTokenizer

    directory.mkdir(parents=True, exist_ok=True)
    words = "the a dog cat sees has red small house el la perro casa ve rojo".split()
    (directory / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    BertTokenizer(str(directory / "vocab.txt")).save_pretrained(str(directory))
    cfg = BertConfig(vocab_size=5 + len(words), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=64)
    torch.manual_seed(0)
    BertModel(cfg).save_pretrained(str(directory))
    return directory


@pytest.mark.parametrize("tower", ["in-repo", "hf"])
def test_alignment_towers_train_their_projections_and_keep_hf_weights_out(tower, tmp_path):
    from conftest import TINY_ENCODER

    from auden_kit.tasks.st import StModel, StModelConfig

    extra = {"align_text_model": str(_tiny_bert(tmp_path / "bert"))} if tower == "hf" else {}
    cfg = StModelConfig(encoder=dict(TINY_ENCODER), vocab_size=20, decoder_dim=16, joiner_dim=16,
                        attention_decoder_dim=16, attention_decoder_heads=2, attention_decoder_layers=1,
                        attention_decoder_ff_dim=32, align_loss_scale=0.1, align_dim=8, **extra)
    cfg.validate()
    model = StModel(cfg)
    enc, lens = torch.randn(3, 10, model.encoder.output_dim, requires_grad=True), torch.tensor([10, 8, 6])
    loss = model.align_loss(enc, lens, [[3, 4, 5], [6, 7], [3, 4, 5]], ["the red dog", "la casa", "the red dog"])
    loss.backward()
    assert torch.isfinite(loss) and model.speech_proj.weight.grad is not None and enc.grad is not None
    assert model.text_tower.proj.weight.grad is not None
    keys = list(model.state_dict())
    assert any(k.startswith("text_tower.proj") for k in keys) and "siglip.log_scale" in keys
    if tower == "hf":  # the frozen Hugging Face encoder is never trained or saved
        assert not any("encoder.module" in k or "embeddings" in k for k in keys if k.startswith("text_tower"))
    with pytest.raises(UserError, match="config.json"):
        StModel(StModelConfig(encoder=dict(TINY_ENCODER), vocab_size=20, decoder_dim=16, joiner_dim=16,
                              align_loss_scale=0.1, align_text_model=str(tmp_path / "missing")))


def test_a_causal_st_model_streams_its_transcript():
    """Streaming transcription with the same model: a causal ST model's transducer decodes chunk
    by chunk exactly as on the chunk-masked full utterance."""
    from conftest import TINY_ENCODER

    from auden_kit.data.features import PAD_VALUE
    from auden_kit.decoding.transducer import StreamingGreedyDecoder, greedy_search
    from auden_kit.encoders.zipformer import ZipformerConfig
    from auden_kit.tasks.st import StModel, StModelConfig, StTask

    torch.manual_seed(0)
    enc = ZipformerConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in TINY_ENCODER.items()},
                          causal=True, chunk_size=(8,), left_context_frames=(16,))
    model = StModel(StModelConfig(encoder=enc, vocab_size=20, decoder_dim=16, joiner_dim=16, attention_decoder_dim=16,
                                  attention_decoder_heads=2, attention_decoder_layers=1,
                                  attention_decoder_ff_dim=32)).eval()
    with torch.no_grad():
        model.joiner.output_linear.bias[0] -= 1.0
    task = StTask()
    task.model_cfg = model.cfg
    dec = task.streaming_decoder(model)
    x = torch.randn(1, 150, 80)
    for s in range(0, 150, 29):
        dec.accept(x[:, s:s + 29])
    tail = dec.tail_frames()
    stream = dec.finish()
    padded = torch.cat([x, torch.full((1, tail, 80), PAD_VALUE)], dim=1)
    full, _ = model.encoder(padded, torch.tensor([padded.shape[1]]), chunk_size=8, left_context_frames=16)
    n = dec.search.frames_done
    ref = greedy_search(model, full[:, :n], torch.tensor([n]))
    assert [h.tokens for h in stream] == [h.tokens for h in ref] and stream[0].tokens


# ------------------------------------------------------------------ the task end to end
@pytest.fixture(scope="module")
def st_corpus(tmp_path_factory):
    from auden_kit.data.corpora.st_synth import StSynthOptions, synthesize_st_corpus

    root = tmp_path_factory.mktemp("st")
    opts = StSynthOptions(speakers_per_language=2, train_utts=12, dev_utts=2, test_utts=2, jobs=2)
    synthesize_st_corpus(root / "audio", root / "manifests", opts, progress=False)
    return root


CLI_MOD = ["-m", "auden_kit.cli.main"]


def _cli(*args, **kw):
    import sys

    return subprocess.run([sys.executable, *CLI_MOD, *map(str, args)], capture_output=True, text=True, **kw)


@pytest.fixture(scope="module")
def st_model(st_corpus):
    import yaml

    from conftest import TINY_ENCODER

    m, f = st_corpus / "manifests", st_corpus / "fbank"
    for part in ("train", "dev", "test"):
        r = _cli("data", "fbank", m / f"mini_st_recordings_{part}.jsonl.gz", m / f"mini_st_supervisions_{part}.jsonl.gz",
                 "--out", f / f"cuts_{part}.jsonl.gz", "--jobs", 1)
        assert r.returncode == 0, r.stderr[-2000:]
    r = _cli("data", "tokenizer", m / "mini_st_supervisions_train.jsonl.gz", "--out-dir", st_corpus / "bpe",
             "--vocab-size", 120, "--translations", "--lang-tags")
    assert r.returncode == 0 and "tags <en> <es>" in r.stdout, r.stderr[-2000:]
    cfg = {
        "task": "st", "exp_dir": str(st_corpus / "exp"), "tokenizer": str(st_corpus / "bpe"),
        "model": {"encoder": TINY_ENCODER, "decoder_dim": 32, "joiner_dim": 32, "use_ctc": True, "warm_step": 5,
                  "attention_decoder_dim": 32, "attention_decoder_layers": 1, "attention_decoder_heads": 2,
                  "attention_decoder_ff_dim": 64, "max_len_ratio": 0.6, "decoder_format": "chained",
                  "asr_text_norm": "lc_rm", "align_loss_scale": 0.1, "align_dim": 16},
        "data": {"train_cuts": [str(f / "cuts_train.jsonl.gz")], "valid_cuts": [str(f / "cuts_dev.jsonl.gz")],
                 "max_duration": 12, "num_buckets": 2, "num_workers": 0},
        "optim": {"base_lr": 0.05, "warmup_batches": 5, "lr_batches": 100},
        "trainer": {"num_epochs": 5, "log_interval": 5, "average_period": 1, "progress": False,
                    "schedule_speedup": 20},
    }
    (st_corpus / "c.yaml").write_text(yaml.safe_dump(cfg))
    r = _cli("train", "--config", st_corpus / "c.yaml")
    assert r.returncode == 0, r.stderr[-3000:]
    r = _cli("average", "--exp-dir", st_corpus / "exp", "--out", st_corpus / "model")
    assert r.returncode == 0, r.stderr[-3000:]
    return st_corpus


def test_st_trains_validates_and_keeps_its_languages(st_model):
    import yaml
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(st_model / "exp" / "tensorboard"))
    ea.Reload()
    tags = ea.Tags()["scalars"]
    assert {"valid/bleu", "valid/chrf", "valid/wer", "valid/lid_acc", "train/st_loss", "train/align_loss"} <= set(tags)
    st_loss = [e.value for e in ea.Scalars("train/st_loss")]
    assert st_loss[-1] < 0.7 * st_loss[0]  # the decoder learns
    cfg = yaml.safe_load((st_model / "model" / "config.yaml").read_text())
    assert cfg["task"] == "st" and cfg["label_maps"] == ["languages"]
    assert (st_model / "model" / "labels" / "languages.txt").read_text().split() == ["en", "es"]
    assert cfg["data_stats"]["default_targets"] == {"en": "es", "es": "en"}


def test_a_model_folder_decodes_without_its_training_only_text_tower(st_model, tmp_path):
    """The alignment loss's text tower serves training only: a folder whose config names a Hugging
    Face tower that is not on this machine still loads, without the tower, with the weights it had."""
    import shutil

    import yaml
    from safetensors.torch import load_file

    from auden_kit.hub import load_pretrained

    folder = shutil.copytree(st_model / "model", tmp_path / "moved")
    cfg = yaml.safe_load((folder / "config.yaml").read_text())
    cfg["model"]["align_text_model"] = str(tmp_path / "bert-on-the-training-machine")
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg))
    saved = load_file(str(folder / "model.safetensors"))
    assert any(k.startswith("text_tower.") for k in saved)  # trained with the loss: the tower was saved
    moved, original = load_pretrained(folder).model.state_dict(), load_pretrained(st_model / "model").model.state_dict()
    assert not any(k.startswith(("text_tower.", "speech_proj.", "siglip.")) for k in moved)
    assert moved.keys() == original.keys() and all(torch.equal(moved[k], saved[k]) for k in moved)


def test_st_decode_files_forced_target_and_a_corrupt_file(st_model, tmp_path):
    import soundfile as sf
    import torchaudio

    from auden_kit.data.audio import load_audio

    files = sorted((st_model / "audio" / "test").rglob("*.flac"))
    en = [f for f in files if f.parent.name.startswith("en")]
    # telephone rate, and CD rate in stereo: any rate and channel count
    odd = []
    for i, (f, sr) in enumerate(zip(en[:2], (8000, 44100))):
        x = torchaudio.functional.resample(load_audio(f).unsqueeze(0), 16000, sr)[0]
        odd.append(tmp_path / f"{f.stem}-{sr}.wav")
        sf.write(odd[-1], torch.stack([x, x], 1).numpy() if i else x.numpy(), sr)
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage")
    r = _cli("decode", "--model", st_model / "model", "--output", "json", "--tgt-lang", "es", odd[0], bad, odd[1])
    assert r.returncode == 1 and "broken.wav" in r.stderr and "1 of 3 file(s) failed" in r.stderr
    rows = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(rows) == 2 and all(x["tgt_lang"] == "es" and "transcript" in x and x["src_lang"] in ("en", "es")
                                  for x in rows)
    r = _cli("decode", "--model", st_model / "model", en[0])  # text form: [src->tgt] translation (transcript)
    assert r.returncode == 0 and "\t[" in r.stdout and "->" in r.stdout
    outs = {}
    for lang in ("es", "en"):
        r = _cli("decode", "--model", st_model / "model", "--output", "json", "--tgt-lang", lang, *files)
        assert r.returncode == 0, r.stderr[-2000:]
        outs[lang] = [json.loads(x)["text"] for x in r.stdout.splitlines()]
    assert outs["es"] != outs["en"]  # the forced target tag changes the output
    r = _cli("decode", "--model", st_model / "model", "--tgt-lang", "fr", files[0])
    assert r.returncode != 0 and "'fr' is not a language of this model" in r.stderr
    r = _cli("decode", "--model", st_model / "model", "--method", "modified_beam_search", files[0])
    assert r.returncode != 0 and "--asr-method" in r.stderr


def test_st_joint_rescoring_picks_the_transcript_the_decoder_and_transducer_agree_on(st_model):
    """--asr-method attention_rescoring: the transducer's n-best transcripts, each scored by the
    decoder as it reads it before translating (<src> transcript <tgt>); the one with the best sum
    is the transcript and the translation's prefix."""
    from lhotse import CutSet

    from auden_kit.api import load
    from auden_kit.decoding.transducer import modified_beam_search

    m = load(st_model / "model")
    task, model = m.task, m.model
    cuts = CutSet.from_file(st_model / "fbank" / "cuts_test.jsonl.gz").to_eager()
    x = [torch.from_numpy(c.load_features()) for c in cuts]
    lens = torch.tensor([len(f) for f in x])
    batch = {"inputs": torch.nn.utils.rnn.pad_sequence(x, batch_first=True), "input_lens": lens,
             "cut_ids": [c.id for c in cuts]}
    got = task.infer(model, batch, method="greedy", beam=4, asr_method="attention_rescoring")
    with torch.no_grad():
        enc, enc_lens = model.encode(batch["inputs"], lens)
        nbest = modified_beam_search(model, enc, enc_lens, beam=4, return_nbest=True)
        for i, (r, hs) in enumerate(zip(got, nbest)):
            seqs = [task.prompt(r.src_lang, r.tgt_lang, list(h.tokens)) for h in hs]
            att = model.attention_decoder.score(enc[[i] * len(hs)], enc_lens[[i] * len(hs)], seqs, eos=False)
            best = hs[int(torch.tensor([h.score for h in hs]).add(att).argmax())]
            assert r.transcript == task.tokenizer.decode(best.tokens)
    assert len(got) == len(cuts) and all(r.text is not None for r in got)
    r = _cli("decode", "--model", st_model / "model", "--asr-method", "attention_rescoring", "--output", "json",
             sorted((st_model / "audio" / "test").rglob("*.flac"))[0])
    assert r.returncode == 0 and json.loads(r.stdout.splitlines()[0])["transcript"] is not None, r.stderr[-2000:]


def test_st_decode_cuts_bleu_agrees_with_the_sacrebleu_command(st_model, tmp_path):
    import shutil
    import sys

    r = _cli("decode", "--model", st_model / "model", "--cuts", st_model / "fbank" / "cuts_test.jsonl.gz",
             "--out-dir", tmp_path, "--method", "beam_search", "--beam", 3, "--name", "t")
    assert r.returncode == 0, r.stderr[-2000:]
    metrics = json.loads((tmp_path / "metrics-t.json").read_text())
    assert {"bleu", "bleu_lc", "chrf", "wer", "lid_acc", "bleu_en-es", "bleu_es-en"} <= set(metrics)
    summary = (tmp_path / "bleu-summary-t.txt").read_text()
    assert "tok:13a" in summary and "punct:removed" in summary and "transcript" in summary
    sacrebleu = shutil.which("sacrebleu", path=str(__import__("pathlib").Path(sys.executable).parent))
    for d in ("en-es", "es-en"):
        out = subprocess.run([sacrebleu, str(tmp_path / f"ref-t.{d}.txt"), "-i", str(tmp_path / f"hyp-t.{d}.txt"),
                              "-b", "-w", "4"], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        assert float(out.stdout.strip()) == pytest.approx(metrics[f"bleu_{d}"], abs=0.01)
        mine = _cli("bleu", tmp_path / f"hyp-t.{d}.txt", tmp_path / f"ref-t.{d}.txt", "--json")
        assert json.loads(mine.stdout)["BLEU"]["score"] == pytest.approx(metrics[f"bleu_{d}"], abs=1e-4)


# ------------------------------------------------------------------ MuST-C from a local copy
def _fake_must_c(st_corpus, root, tgt="de"):
    """A MuST-C layout built from the synthesized English utterances: per split one 'talk' of
    a few utterances with pauses, its yaml, .en transcripts and .<tgt> translations."""
    import numpy as np
    import soundfile as sf
    import yaml
    from lhotse import load_manifest

    sups = {s.id: s for part in ("train", "test")
            for s in load_manifest(st_corpus / "manifests" / f"mini_st_supervisions_{part}.jsonl.gz")}
    for split, part, n in (("train", "train", 10), ("dev", "test", 2), ("tst-COMMON", "test", 2), ("tst-HE", "test", 2)):
        d = root / f"en-{tgt}" / "data" / split
        (d / "wav").mkdir(parents=True)
        (d / "txt").mkdir()
        files = sorted((st_corpus / "audio" / part).glob("en*/*.flac"))[:n]
        segs, en, de, audio, t = [], [], [], [], 0.3
        audio.append(np.zeros(int(0.3 * 16000), dtype=np.float32))
        for i, f in enumerate(files):
            wav, sr = sf.read(f, dtype="float32")
            talk = f"ted_{split.replace('-', '')}{i // 5}"
            segs.append({"duration": round(len(wav) / sr, 3), "offset": round(t, 3), "speaker_id": "spk.1",
                         "wav": f"{talk}.wav"})
            s = sups[f.stem]
            en.append(s.text)
            de.append(tr.translations(s)[0]["text"] if tr.translations(s) else s.text)
            audio += [wav, np.zeros(int(0.3 * 16000), dtype=np.float32)]
            t += len(wav) / sr + 0.3
            if i % 5 == 4 or i == len(files) - 1:
                sf.write(d / "wav" / f"{talk}.wav", np.concatenate(audio), 16000)
                audio, t = [np.zeros(int(0.3 * 16000), dtype=np.float32)], 0.3
        (d / "txt" / f"{split}.yaml").write_text(yaml.safe_dump(segs))
        (d / "txt" / f"{split}.en").write_text("\n".join(en) + "\n")
        (d / "txt" / f"{split}.{tgt}").write_text("\n".join(de) + "\n")
    return root


def test_must_c_prepare_joins_transcripts(st_corpus, tmp_path):
    from lhotse import load_manifest

    corpus = _fake_must_c(st_corpus, tmp_path / "MUSTC")
    r = _cli("data", "must-c", corpus, "--tgt-lang", "de", "--out-dir", tmp_path / "m", "--jobs", 1)
    assert r.returncode == 0, r.stderr[-2000:]
    sups = list(load_manifest(tmp_path / "m" / "must_c_supervisions_en-de_train.jsonl.gz"))
    assert len(sups) == 10 and all(s.language == "en" for s in sups)
    en = (corpus / "en-de" / "data" / "train" / "txt" / "train.en").read_text().splitlines()
    de = (corpus / "en-de" / "data" / "train" / "txt" / "train.de").read_text().splitlines()
    got = sorted((s.text, tr.translations(s)[0]["text"]) for s in sups)
    assert got == sorted(zip(en, de))
    r = _cli("data", "must-c", corpus, "--tgt-lang", "fr", "--out-dir", tmp_path / "m")
    assert r.returncode != 0 and "en-fr" in r.stderr


@pytest.mark.slow
def test_must_c_recipe_tiny(st_corpus, tmp_path):
    """egs/must_c end to end offline on the synthesized layout with a tiny model."""
    import yaml

    from conftest import TINY_ENCODER
    from test_recipes import _copy_recipe, _env

    corpus = _fake_must_c(st_corpus, tmp_path / "MUSTC")
    recipe = _copy_recipe("must_c", tmp_path / "r")
    cfg = yaml.safe_load((recipe / "conf" / "train.yaml").read_text())
    cfg["model"].update({"encoder": dict(TINY_ENCODER), "decoder_dim": 32, "joiner_dim": 32, "warm_step": 2,
                         "attention_decoder_dim": 32, "attention_decoder_layers": 1, "attention_decoder_heads": 2,
                         "attention_decoder_ff_dim": 64, "max_len_ratio": 0.5})
    cfg["data"].update({"max_duration": 20, "num_buckets": 2, "num_workers": 0})
    cfg["trainer"] = {"progress": False, "average_period": 1}
    (recipe / "conf" / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    cmd = ["./run.sh", "--corpus-dir", str(corpus), "--tgt-lang", "de", "--nj", "1", "--bpe-size", "80",
           "--num-epochs", "1", "--avg", "1", "--beam", "2", "--config", "conf/tiny.yaml"]
    r = subprocess.run(cmd, cwd=recipe, capture_output=True, text=True, env=_env(), timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    for n in range(6):
        assert f"Stage {n}:" in r.stdout
    for p in ("tst-COMMON", "tst-HE"):
        m = json.loads((recipe / "exp" / "decode" / f"metrics-{p}-beam2.json").read_text())
        assert {"bleu", "bleu_lc", "chrf", "wer"} <= set(m)
    assert "BLEU-lc" in r.stdout and "tok:13a" in r.stdout
    r = subprocess.run(["./run.sh", "--stage", "0", "--stop-stage", "0"], cwd=recipe, capture_output=True, text=True,
                       env=_env())
    assert r.returncode == 0 and "up to date" in r.stdout


@pytest.mark.slow
def test_st_template_on_a_folder_with_translations(st_corpus, tmp_path):
    """`recipe new NAME --task st` on folders of wav files + text + text.<lang> + utt2lang (two
    spoken languages, each translated into the other): manifests with the translation schema, a
    tokenizer with both tags, training, BLEU/chrF/WER/language ID on test."""
    import soundfile as sf
    import yaml
    from lhotse import load_manifest

    from conftest import TINY_ENCODER
    from test_recipes import _env, _new_recipe

    corpus = tmp_path / "corpus"
    m = st_corpus / "manifests"
    for part in ("train", "dev", "test"):
        d = corpus / part
        d.mkdir(parents=True)
        recs = load_manifest(m / f"mini_st_recordings_{part}.jsonl.gz")
        maps: dict[str, list[str]] = {"text": [], "utt2lang": []}
        for s in load_manifest(m / f"mini_st_supervisions_{part}.jsonl.gz"):
            sf.write(d / f"{s.id}.wav", recs[s.recording_id].load_audio()[0], recs[s.recording_id].sampling_rate)
            maps["text"].append(f"{s.id} {s.text}")
            maps["utt2lang"].append(f"{s.id} {s.language}")
            for t in s.custom["translation"]:
                maps.setdefault(f"text.{t['language']}", []).append(f"{s.id} {t['text']}")
        for name, lines in maps.items():
            (d / name).write_text("\n".join(lines) + "\n")
    recipe = _new_recipe(tmp_path, "mytrans", "st")
    assert "recipe new mytrans --task st" in (recipe / "README.md").read_text()
    cfg = yaml.safe_load((recipe / "conf" / "train.yaml").read_text())
    cfg["model"].update({"encoder": dict(TINY_ENCODER), "decoder_dim": 32, "joiner_dim": 32, "warm_step": 2,
                         "attention_decoder_dim": 32, "attention_decoder_layers": 1, "attention_decoder_heads": 2,
                         "attention_decoder_ff_dim": 64, "max_len_ratio": 0.5})
    cfg["data"].update({"max_duration": 20, "num_buckets": 2, "num_workers": 0})
    cfg["trainer"].update({"progress": False, "average_period": 1})
    (recipe / "conf" / "train.yaml").write_text(yaml.safe_dump(cfg))
    r = subprocess.run(["./run.sh", "--corpus-dir", str(corpus), "--nj", "1", "--bpe-size", "80", "--num-epochs", "1",
                        "--avg", "1", "--beam", "2"], cwd=recipe, capture_output=True, text=True, env=_env(), timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    sups = load_manifest(recipe / "data" / "manifests" / "mydata_supervisions_test.jsonl.gz")
    ref = {s.id: s for s in load_manifest(m / "mini_st_supervisions_test.jsonl.gz")}
    assert all(s.language == ref[s.id].language and s.custom["translation"] == ref[s.id].custom["translation"]
               for s in sups)
    assert "<en>" in r.stdout and "<es>" in r.stdout  # the tokenizer's tags
    metrics = json.loads((recipe / "exp" / "decode" / "metrics-test-beam2.json").read_text())
    assert {"bleu", "bleu_lc", "chrf", "wer", "lid_acc"} <= set(metrics)
    assert "tok:13a" in r.stdout
