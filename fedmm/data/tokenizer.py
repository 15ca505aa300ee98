"""BERT WordPiece tokenizer: trained offline and deterministically, or loaded locally.

Training normalises and pre-tokenises text exactly like BERT (Hugging Face
``tokenizers``' ``BertNormalizer`` + ``BertPreTokenizer``) and learns the
WordPiece vocabulary with the same merge procedure as the ``tokenizers``
WordPiece trainer (BPE-style merges, ``##`` continuation prefix). Ties between
equally frequent merges are broken by the token strings, so the vocabulary is
byte-identical across runs and processes (the Rust trainer's tie order is not).
The result is a plain ``vocab.txt`` that BERT tokenizers read directly.
"""
from __future__ import annotations

import heapq
import os
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from tokenizers import normalizers, pre_tokenizers

if TYPE_CHECKING:   # transformers is imported lazily: training needs only `tokenizers`
    from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
PREFIX = "##"


def _word_counts(texts: Iterable[str | None]) -> Counter:
    norm = normalizers.BertNormalizer(lowercase=True, clean_text=True, strip_accents=None,
                                      handle_chinese_chars=True)
    pre = pre_tokenizers.BertPreTokenizer()
    counts: Counter = Counter()
    for text in texts:
        if text:
            counts.update(word for word, _ in pre.pre_tokenize_str(norm.normalize_str(text)))
    return counts


def _merge(a: str, b: str) -> str:
    return a + (b[len(PREFIX):] if b.startswith(PREFIX) else b)


def learn_wordpiece_vocab(counts: Counter, vocab_size: int, min_frequency: int = 2,
                          limit_alphabet: int = 1000) -> list[str]:
    """WordPiece vocabulary (special tokens, alphabet, merges in order) from word counts."""
    char_counts: Counter = Counter()
    for word, c in counts.items():
        for ch in word:
            char_counts[ch] += c
    alphabet = sorted(sorted(char_counts, key=lambda ch: (-char_counts[ch], ch))[:limit_alphabet])
    allowed = set(alphabet)
    words: list[list[str]] = []
    freqs: list[int] = []
    for word in sorted(counts):
        syms = [ch if i == 0 else PREFIX + ch for i, ch in enumerate(word)]
        if all(ch in allowed for ch in word):
            words.append(syms)
            freqs.append(counts[word])
    vocab = list(SPECIAL_TOKENS)
    seen = set(vocab)
    for tok in alphabet + [PREFIX + ch for ch in alphabet]:
        if tok not in seen:
            vocab.append(tok)
            seen.add(tok)

    pair_count: Counter = Counter()
    where: dict[tuple[str, str], set[int]] = {}
    for i, syms in enumerate(words):
        for pair in zip(syms, syms[1:]):
            pair_count[pair] += freqs[i]
            where.setdefault(pair, set()).add(i)
    heap = [(-c, _merge(*p), p) for p, c in pair_count.items()]
    heapq.heapify(heap)
    while len(vocab) < vocab_size and heap:
        neg, _, pair = heapq.heappop(heap)
        if pair_count.get(pair, 0) != -neg:      # stale heap entry
            continue
        if -neg < min_frequency:
            break
        new = _merge(*pair)
        if new not in seen:
            vocab.append(new)
            seen.add(new)
        touched: set[tuple[str, str]] = set()
        for i in sorted(where.pop(pair, ())):
            syms, f = words[i], freqs[i]
            for p in zip(syms, syms[1:]):
                pair_count[p] -= f
                touched.add(p)
            out, j = [], 0
            while j < len(syms):
                if j + 1 < len(syms) and (syms[j], syms[j + 1]) == pair:
                    out.append(new)
                    j += 2
                else:
                    out.append(syms[j])
                    j += 1
            words[i] = out
            for p in zip(out, out[1:]):
                pair_count[p] += f
                where.setdefault(p, set()).add(i)
                touched.add(p)
        pair_count.pop(pair, None)
        for p in touched:
            c = pair_count.get(p, 0)
            if c > 0 and p != pair:
                heapq.heappush(heap, (-c, _merge(*p), p))
            elif c <= 0:
                pair_count.pop(p, None)
    return vocab


def train_wordpiece(texts: Iterable[str | None], out_dir: str | os.PathLike, vocab_size: int = 2000) -> Path:
    """Train a BERT WordPiece vocabulary on ``texts``; write and return ``out_dir/vocab.txt``.

    Empty or ``None`` texts are ignored. Deterministic: the same texts give the
    same file. The vocabulary may be smaller than ``vocab_size`` on a small corpus.
    """
    if vocab_size < len(SPECIAL_TOKENS) + 1:
        raise ValueError(f"vocab_size must exceed {len(SPECIAL_TOKENS)}")
    vocab = learn_wordpiece_vocab(_word_counts(texts), vocab_size)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "vocab.txt"
    path.write_text("".join(tok + "\n" for tok in vocab), encoding="utf-8")
    return path


def load_tokenizer(path: str | os.PathLike) -> PreTrainedTokenizerFast:
    """Load a fast BERT tokenizer from a local folder (or a ``vocab.txt`` file); never downloads.

    A folder holding ``tokenizer.json`` or ``tokenizer_config.json`` is read as a
    Hugging Face model folder (``local_files_only``); a folder with only
    ``vocab.txt`` (as written by :func:`train_wordpiece`) becomes an uncased BERT
    WordPiece tokenizer.
    """
    from transformers import AutoTokenizer, BertTokenizerFast, PreTrainedTokenizerFast

    p = Path(path)
    if p.is_file() and p.name == "vocab.txt":
        p = p.parent
    if not p.is_dir():
        raise FileNotFoundError(f"tokenizer folder not found: {p}")
    if (p / "tokenizer.json").is_file() or (p / "tokenizer_config.json").is_file():
        tok = AutoTokenizer.from_pretrained(str(p), local_files_only=True)
        if not isinstance(tok, PreTrainedTokenizerFast):
            raise TypeError(f"{p} does not hold a fast (tokenizers-backed) tokenizer")
        return tok
    vocab = p / "vocab.txt"
    if not vocab.is_file():
        raise FileNotFoundError(f"no vocab.txt or tokenizer.json in {p}")
    return BertTokenizerFast(vocab=str(vocab), do_lower_case=True)
