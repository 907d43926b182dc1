"""Does the CLIP know any word of a prompt? A note for prompts the small demo models cannot draw.

The shipped CLIP's tokenizer learnt its merges from the shapes world's captions only, so every word
it was trained on is one whole-word token (`circle</w>`), while any other word falls apart into
pieces. A prompt none of whose content words is a whole-word token ("a watercolor portrait of a
teacher") asks for something the models never saw: the picture will be colours and blobs, and the
member should hear why. BPE also keeps word endings as whole-word tokens ("low</w>" from
"yel" + "low</w>"), so a token that ends a longer whole-word token is a piece, not a word it learnt.
A hub CLIP's tokenizer (49k tokens) knows nearly every English word: the note is for the small
demo vocabularies only and stays silent with real models.
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

END_OF_WORD = "</w>"
# Words that say nothing about what to draw: knowing them is not knowing the prompt.
FUNCTION_WORDS = frozenset(
    "a an the of on in at to and or with without by for from into onto over under some any one two this that "
    "is are be it its as very".split()
)
NOTE = (
    "The demo models only know colours and shapes (e.g. \"a red star on a blue background\"); none of the words "
    "of this prompt, so the picture will not show it. For other subjects, fetch real models (`make models-real`) "
    "and set CLIP_MODEL and VQGAN_MODEL to their names (README, \"Models\")."
)
DEMO_VOCAB_MAX = 5000  # tokens; the shipped CLIP has 610, OpenAI's 49,408
_WORD = re.compile(r"[^\W\d_]+")


def content_words(prompt: str) -> list[str]:
    """Lower-case words of the text prompts (weights and separators dropped), function words left out."""
    text = re.sub(r":\s*-?[\d.]+\s*(?=\||$)", " ", prompt)  # "a cat:0.5 | dog" -> "a cat | dog"
    return [w for w in _WORD.findall(text.lower()) if w not in FUNCTION_WORDS]


def unknown_subject_note(prompt: str, vocabulary: Iterable[str]) -> str | None:
    """NOTE when no content word of `prompt` is in `vocabulary` (and there is one); else None."""
    words = content_words(prompt)
    known = set(vocabulary)
    if not words or any(w in known for w in words):
        return None
    return NOTE


def whole_words(tokenizer_json: dict) -> frozenset[str] | None:
    """The words a small BPE tokenizer (tokenizer.json's dict) learnt as words: whole-word tokens
    that do not merely end a longer one. None for a large (hub) vocabulary."""
    vocab = tokenizer_json.get("model", {}).get("vocab", {})
    if not vocab or len(vocab) > DEMO_VOCAB_MAX:
        return None
    words = {tok[: -len(END_OF_WORD)].lower() for tok in vocab if tok.endswith(END_OF_WORD)}
    words = {w for w in words if len(w) > 1 and w.isalpha()}
    return frozenset(w for w in words if not any(len(o) > len(w) and o.endswith(w) for o in words))


@lru_cache(maxsize=8)
def model_vocabulary(clip_dir: str) -> frozenset[str] | None:
    """The words a local demo CLIP's tokenizer.json learnt; None for a hub id, a large vocabulary or another format."""
    path = Path(clip_dir) / "tokenizer.json"
    try:
        return whole_words(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return None


def note_for(prompt: str, clip_dir: str) -> str | None:
    """The note for `prompt` with the CLIP at `clip_dir` (None when its vocabulary cannot be read)."""
    vocabulary = model_vocabulary(str(clip_dir))
    return None if vocabulary is None else unknown_subject_note(prompt, vocabulary)
