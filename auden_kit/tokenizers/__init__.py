"""Tokenizers that travel with a model folder: SentencePiece (BPE/unigram) and characters.

Reserved ids, the same for every tokenizer: ``<blk>`` = 0 (transducer/CTC blank),
``<sos/eos>`` = 1 (attention decoder), ``<unk>`` = 2.

Files under ``DIR`` (usually ``<model>/tokenizer``)::

    tokenizer.yaml   {type: bpe|unigram|char, file: ...}
    bpe.model        (SentencePiece) or chars.txt (one symbol per line)
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path
from typing import Iterable, Protocol

import yaml

from auden_kit.errors import UserError
from auden_kit.io import atomic_write_text

log = logging.getLogger(__name__)

BLANK, SOS_EOS, UNK = "<blk>", "<sos/eos>", "<unk>"
BLANK_ID, SOS_EOS_ID, UNK_ID = 0, 1, 2
SPACE = "\u2581"  # SentencePiece's word-boundary mark


class Tokenizer(Protocol):
    vocab_size: int
    blank_id: int
    sos_id: int
    eos_id: int
    unk_id: int

    def encode(self, text: str) -> list[int]: ...
    def decode(self, ids: Iterable[int]) -> str: ...
    def id_to_piece(self, i: int) -> str: ...
    def piece_to_id(self, piece: str) -> int: ...
    def save(self, directory: str | Path) -> None: ...


class _Reserved:
    blank_id = BLANK_ID
    sos_id = SOS_EOS_ID
    eos_id = SOS_EOS_ID
    unk_id = UNK_ID

    def encode_batch(self, texts: Iterable[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]


class SentencePieceTokenizer(_Reserved):
    def __init__(self, model_file: str | Path, kind: str = "bpe"):
        import sentencepiece as spm

        self.model_file = Path(model_file)
        if not self.model_file.is_file():
            raise UserError(f"SentencePiece model '{self.model_file}' does not exist")
        self.kind = kind
        self.sp = spm.SentencePieceProcessor(model_file=str(self.model_file))
        self.vocab_size = self.sp.get_piece_size()

    def __getstate__(self):  # picklable for data-loader workers: reload from the model file
        return {"model_file": str(self.model_file), "kind": self.kind}

    def __setstate__(self, state):
        self.__init__(state["model_file"], state["kind"])

    def encode(self, text: str) -> list[int]:
        return self.sp.encode(text)

    def decode(self, ids: Iterable[int]) -> str:
        ids = [int(i) for i in ids if int(i) > UNK_ID]
        return self.sp.decode(ids)

    def id_to_piece(self, i: int) -> str:
        return self.sp.id_to_piece(int(i))

    def piece_to_id(self, piece: str) -> int:
        """The id of a whole piece (e.g. a language tag); ``unk_id`` when there is none."""
        return int(self.sp.piece_to_id(piece))

    def save(self, directory: str | Path) -> None:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        name = f"{self.kind}.model"
        if self.model_file.resolve() != (d / name).resolve():
            shutil.copyfile(self.model_file, d / name)
        atomic_write_text(d / "tokenizer.yaml", yaml.safe_dump({"type": self.kind, "file": name}))


class CharTokenizer(_Reserved):
    """Characters, with spaces as ``▁``; symbols beyond the reserved ones from ``symbols``."""

    def __init__(self, symbols: list[str]):
        reserved = [BLANK, SOS_EOS, UNK]
        self.symbols = reserved + [s for s in symbols if s not in reserved]
        self.index = {s: i for i, s in enumerate(self.symbols)}
        self.vocab_size = len(self.symbols)

    @classmethod
    def train(cls, texts: Iterable[str]) -> "CharTokenizer":
        chars = sorted({c if c != " " else SPACE for t in texts for c in t.strip()})
        return cls(chars)

    def encode(self, text: str) -> list[int]:
        return [self.index.get(c if c != " " else SPACE, UNK_ID) for c in text.strip()]

    def decode(self, ids: Iterable[int]) -> str:
        out = "".join(self.symbols[int(i)] for i in ids if int(i) > UNK_ID)
        return out.replace(SPACE, " ").strip()

    def id_to_piece(self, i: int) -> str:
        return self.symbols[int(i)]

    def piece_to_id(self, piece: str) -> int:
        return self.index.get(piece, UNK_ID)

    def save(self, directory: str | Path) -> None:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        atomic_write_text(d / "chars.txt", "\n".join(self.symbols) + "\n")
        atomic_write_text(d / "tokenizer.yaml", yaml.safe_dump({"type": "char", "file": "chars.txt"}))


def train_sentencepiece(texts: Iterable[str], out_dir: str | Path, vocab_size: int = 500,
                        model_type: str = "bpe", extra_symbols: Iterable[str] = ()) -> SentencePieceTokenizer:
    """Train a SentencePiece model on ``texts``; writes ``out_dir/{bpe,unigram}.model``.

    ``vocab_size`` 0 derives the size from the data (distinct words, 30..500); a size larger than
    the data allows becomes the largest valid one, with a warning. ``extra_symbols`` are kept as
    single pieces (e.g. language tags)."""
    import io

    import sentencepiece as spm

    if model_type not in ("bpe", "unigram"):
        raise UserError(f"model_type must be 'bpe' or 'unigram', got '{model_type}'")
    texts = [t.strip() for t in texts if t and t.strip()]
    if not texts:
        raise UserError("no transcripts to train the tokenizer on (are the supervisions' texts empty?)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if vocab_size <= 0:  # from the data: about one piece per distinct word, 30..500
        words = len({w for t in texts for w in t.split()})
        vocab_size = max(30, min(500, words))
        log.info("tokenizer: %d distinct words in %d transcripts -> vocabulary size %d", words, len(texts),
                 vocab_size)

    def train(size: int):
        model = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(texts), model_writer=model, vocab_size=size,
            model_type=model_type, character_coverage=1.0, input_sentence_size=100_000_000,
            user_defined_symbols=[BLANK, SOS_EOS, *extra_symbols], unk_id=UNK_ID, bos_id=-1, eos_id=-1,
            minloglevel=2,
        )
        return model

    try:
        model = train(vocab_size)
    except RuntimeError as e:
        m = re.search(r"value <= (\d+)", str(e))
        if not m:
            raise UserError(f"SentencePiece training failed: {e} (for a small corpus, lower --vocab-size)") from None
        largest = int(m.group(1))
        log.warning("vocabulary size %d is more than these transcripts allow; using the largest valid size, %d",
                    vocab_size, largest)
        model = train(largest)
    path = out_dir / f"{model_type}.model"
    from auden_kit.io import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_bytes(model.getvalue())
    tok = SentencePieceTokenizer(path, kind=model_type)
    tok.save(out_dir)
    return tok


def load_tokenizer(directory: str | Path):
    """Load whichever tokenizer ``directory/tokenizer.yaml`` describes."""
    d = Path(directory)
    meta_file = d / "tokenizer.yaml"
    if not meta_file.is_file():
        raise UserError(f"'{d}' holds no tokenizer.yaml (train one with `auden-kit data tokenizer`)")
    meta = yaml.safe_load(meta_file.read_text())
    kind = meta.get("type")
    if kind in ("bpe", "unigram"):
        return SentencePieceTokenizer(d / meta["file"], kind=kind)
    if kind == "char":
        symbols = (d / meta["file"]).read_text().splitlines()
        return CharTokenizer(symbols)
    raise UserError(f"'{meta_file}': unknown tokenizer type '{kind}' (expected bpe, unigram or char)")
