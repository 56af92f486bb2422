"""The CLIP byte-pair-encoding tokenizer (49,408 tokens), with its vocabulary shipped in this package.

Adapted from OpenAI CLIP's `simple_tokenizer.py` via open_clip's `tokenizer.py` (MIT; notice in
evaclip/vocab/LICENSE-bpe_simple_vocab_16e6.txt). The merges file is vendored unchanged
(evaclip/vocab/bpe_simple_vocab_16e6.txt.gz), so nothing is downloaded at run time and open_clip
(whose import pulls torchvision) is not needed. Cleaning is open_clip's default 'lower': ftfy,
HTML unescape, whitespace collapse, lower case.
"""

from __future__ import annotations

import gzip
import html
import itertools
from functools import cache
from pathlib import Path

import ftfy
import regex as re
import torch

VOCAB_PATH = Path(__file__).resolve().parent / "vocab" / "bpe_simple_vocab_16e6.txt.gz"
# CLIP keeps the first 49152 − 256 − 2 merges: 256 byte tokens + 256 end-of-word byte tokens +
# 48,894 merges + 2 special tokens = 49,408 (the text towers' vocab_size).
NUM_MERGES = 49152 - 256 - 2


@cache
def bytes_to_unicode() -> dict[int, str]:
    """A reversible map from utf-8 bytes to printable unicode characters (CLIP's BPE alphabet)."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


def _pairs(word: tuple[str, ...]) -> set[tuple[str, str]]:
    return set(itertools.pairwise(word))


def _clean(text: str) -> str:
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return " ".join(text.split()).lower()


class ClipTokenizer:
    """`tokenizer(["a photo of a cat"], context_length=77)` → LongTensor (n, 77): start-of-text,
    BPE ids, end-of-text, zero padding; too-long texts are cut and end with end-of-text."""

    def __init__(self, vocab_path: Path = VOCAB_PATH) -> None:
        merges_text = gzip.open(vocab_path).read().decode("utf-8").split("\n")
        merges = [tuple(m.split()) for m in merges_text[1 : NUM_MERGES + 1]]
        alphabet = list(bytes_to_unicode().values())
        vocab = alphabet + [v + "</w>" for v in alphabet] + ["".join(m) for m in merges]
        specials = ["<start_of_text>", "<end_of_text>"]
        vocab.extend(specials)
        self.encoder = {tok: i for i, tok in enumerate(vocab)}
        self.decoder = {i: tok for tok, i in self.encoder.items()}
        self.bpe_ranks = {m: i for i, m in enumerate(merges)}
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {v: k for k, v in self.byte_encoder.items()}
        self.cache: dict[str, str] = {t: t for t in specials}
        self.pat = re.compile(
            "|".join(specials) + r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
            re.IGNORECASE,
        )
        self.vocab_size = len(self.encoder)
        self.sot_token_id = self.encoder["<start_of_text>"]
        self.eot_token_id = self.encoder["<end_of_text>"]

    def bpe(self, token: str) -> str:
        if token in self.cache:
            return self.cache[token]
        word: tuple[str, ...] = (*token[:-1], token[-1] + "</w>")
        pairs = _pairs(word)
        if not pairs:
            return token + "</w>"
        while True:
            bigram = min(pairs, key=lambda p: self.bpe_ranks.get(p, float("inf")))
            if bigram not in self.bpe_ranks:
                break
            first, second = bigram
            new: list[str] = []
            i = 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                except ValueError:
                    new.extend(word[i:])
                    break
                new.extend(word[i:j])
                i = j
                if word[i] == first and i < len(word) - 1 and word[i + 1] == second:
                    new.append(first + second)
                    i += 2
                else:
                    new.append(word[i])
                    i += 1
            word = tuple(new)
            if len(word) == 1:
                break
            pairs = _pairs(word)
        out = " ".join(word)
        self.cache[token] = out
        return out

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for token in re.findall(self.pat, _clean(text)):
            token = "".join(self.byte_encoder[b] for b in token.encode("utf-8"))
            ids.extend(self.encoder[t] for t in self.bpe(token).split(" "))
        return ids

    def decode(self, ids: list[int]) -> str:
        text = "".join(self.decoder[i] for i in ids if i not in (self.sot_token_id, self.eot_token_id, 0))
        raw = bytearray(self.byte_decoder[c] for c in text).decode("utf-8", errors="replace")
        return raw.replace("</w>", " ").strip()

    def __call__(self, texts: str | list[str], context_length: int = 77) -> torch.Tensor:
        if isinstance(texts, str):
            texts = [texts]
        out = torch.zeros(len(texts), context_length, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [self.sot_token_id, *self.encode(text), self.eot_token_id]
            if len(ids) > context_length:
                ids = ids[:context_length]
                ids[-1] = self.eot_token_id
            out[row, : len(ids)] = torch.tensor(ids)
        return out


@cache
def get_tokenizer() -> ClipTokenizer:
    """One tokenizer per process (building it reads 49k merges: ~0.3 s)."""
    return ClipTokenizer()
