"""A byte-level BPE tokenizer in CLIP's format, learned from our own captions (no download).

Why not ship OpenAI's 49k-token vocab: it cannot be fetched here, and our small CLIP only ever
reads short English captions, so a few hundred merges learned from them suffice. Because the
vocab is byte-level (all 256 bytes, plain and with CLIP's "</w>" end-of-word suffix), any text
still tokenizes: unseen words fall back to smaller pieces, never to <unk>.

The result is saved with `save_pretrained`, so `CLIPTokenizer.from_pretrained(dir)` loads it
exactly like a hub CLIP's tokenizer.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers, trainers
from tokenizers.models import BPE
from transformers import CLIPTokenizer

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
SPECIALS = [BOS, EOS]  # pad = eos, as in OpenAI's CLIP
END_OF_WORD = "</w>"
# CLIP's own pre-tokenisation (transformers.models.clip.tokenization_clip), so training and use agree.
_SPLIT = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


def train_tokenizer(corpus: Iterable[str], vocab_size: int = 1024) -> CLIPTokenizer:
    """Learn BPE merges from `corpus` and return a CLIPTokenizer that uses them."""
    tok = Tokenizer(BPE(continuing_subword_prefix="", end_of_word_suffix=END_OF_WORD, unk_token=EOS))
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_SPLIT), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        initial_alphabet=alphabet,
        end_of_word_suffix=END_OF_WORD,
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer)
    model = json.loads(tok.to_str())["model"]
    vocab: dict[str, int] = dict(model["vocab"])
    # Every byte must also exist as a whole word-final token, or a one-letter word would be <unk>.
    for ch in sorted(alphabet):
        for piece in (ch, ch + END_OF_WORD):
            vocab.setdefault(piece, len(vocab))
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return CLIPTokenizer(vocab=vocab, merges=merges, bos_token=BOS, eos_token=EOS, pad_token=EOS, unk_token=EOS)


def save_tokenizer(tokenizer: CLIPTokenizer, out_dir: str | Path, max_length: int = 32) -> None:
    tokenizer.model_max_length = max_length
    tokenizer.save_pretrained(str(out_dir))
