"""The note for prompts the shipped demo models cannot draw (worker/imagine/vocabulary.py), and the
CLI printing it."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.imagine_support import _one_thread  # noqa: F401
from tests.test_imagine_cli import args_for, runner  # noqa: F401  (the tiny-model LocalRunner fixture)
from worker.imagine.cli import imagine_main
from worker.imagine.vocabulary import NOTE, content_words, model_vocabulary, note_for, unknown_subject_note, whole_words

SHIPPED_CLIP = str(Path(__file__).resolve().parents[1] / "models" / "clip-shapes")


def test_the_shipped_clip_knows_colours_and_shapes_but_not_bpe_pieces():
    words = model_vocabulary(SHIPPED_CLIP)
    assert {"red", "purple", "circle", "triangle", "star", "background"} <= words
    assert not {"low", "ack", "ange", "rple"} & words  # endings of "yellow", "black", "orange", "purple"


@pytest.mark.parametrize("prompt", ["a watercolor portrait of a teacher", "sunset over the sea", "a cat:0.5 | a dog",
                                    "portrait: oil:2", "a low poly castle"])
def test_prompts_with_no_known_word_get_the_note(prompt):
    assert note_for(prompt, SHIPPED_CLIP) == NOTE
    assert "colours and shapes" in NOTE and "CLIP_MODEL" in NOTE


@pytest.mark.parametrize("prompt", ["a red circle", "a star on a blue background", "a purple teacher",
                                    "a yellow square | blurry:-1", "a | the | of"])
def test_prompts_with_a_known_word_or_no_content_get_none(prompt):
    assert note_for(prompt, SHIPPED_CLIP) is None


def test_weights_and_function_words_are_not_content():
    assert content_words("A Cat:0.5 | the dog:-1 | of mice") == ["cat", "dog", "mice"]
    assert unknown_subject_note("a dog", {"dog"}) is None and unknown_subject_note("a dog", {"cat"}) == NOTE


def test_a_hub_sized_vocabulary_never_gets_the_note(tmp_path):
    vocab = {f"w{i:05d}</w>": i for i in range(6000)}
    assert whole_words({"model": {"vocab": vocab}}) is None
    (tmp_path / "tokenizer.json").write_text(json.dumps({"model": {"vocab": vocab}}))
    assert note_for("a watercolor portrait of a teacher", str(tmp_path)) is None
    assert note_for("a watercolor portrait", str(tmp_path / "no-such-model")) is None


def test_cli_prints_the_note_with_the_result(runner, tmp_path, capsys, monkeypatch):  # noqa: F811
    monkeypatch.setenv("CLIP_MODEL", SHIPPED_CLIP)
    assert imagine_main(args_for("a watercolor portrait of a teacher", "--out", str(tmp_path / "a.png"), "--steps", "2"), runner) == 0
    out = capsys.readouterr().out
    assert "note" in out and "only know colours and shapes" in out
    assert imagine_main(args_for("a red star", "--out", str(tmp_path / "b.png"), "--steps", "2", "--json"), runner) == 0
    assert json.loads(capsys.readouterr().out)["note"] is None
