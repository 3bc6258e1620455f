from pathlib import Path

from auden_kit.tokenizers import CharTokenizer, load_tokenizer, train_sentencepiece


def _texts(corpus: Path):
    return [line.split(" ", 1)[1] for f in corpus.rglob("*.trans.txt") for line in f.read_text().splitlines()]


def test_bpe_roundtrip_and_reserved_ids(synth_corpus, tmp_path):
    texts = _texts(synth_corpus)
    tok = train_sentencepiece(texts, tmp_path / "bpe", vocab_size=60)
    assert [tok.id_to_piece(i) for i in range(3)] == ["<blk>", "<sos/eos>", "<unk>"]
    assert tok.vocab_size == 60
    loaded = load_tokenizer(tmp_path / "bpe")
    for t in texts[:20]:
        ids = loaded.encode(t)
        assert ids and min(ids) > 2
        assert loaded.decode(ids) == t


def test_unigram_and_char(synth_corpus, tmp_path):
    texts = _texts(synth_corpus)
    uni = train_sentencepiece(texts, tmp_path / "uni", vocab_size=50, model_type="unigram")
    assert uni.decode(uni.encode(texts[0])) == texts[0]
    ch = CharTokenizer.train(texts)
    ch.save(tmp_path / "char")
    back = load_tokenizer(tmp_path / "char")
    assert back.symbols[:3] == ["<blk>", "<sos/eos>", "<unk>"]
    assert back.decode(back.encode(texts[1])) == texts[1]
    assert back.encode("@")[0] == back.unk_id
