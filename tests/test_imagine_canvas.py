"""The background colour a prompt names (worker/imagine/canvas.py), which /imagine starts from."""
from __future__ import annotations

import pytest

from worker.imagine.canvas import background_rgb, named_rgb


@pytest.mark.parametrize(("text", "rgb"), [
    ("a red star on a green background", (0, 128, 0)),
    ("a red star on an orange background", (255, 165, 0)),
    ("A Red Star On A Teal Background", (0, 128, 128)),
    ("a lighthouse against a dark blue backdrop", (0, 0, 139)),
    ("a circle on the white background", (255, 255, 255)),
    ("a cat on top of a light grey background", (211, 211, 211)),
    ("a moon over a black background, oil painting", (0, 0, 0)),
])
def test_named_backgrounds(text, rgb):
    assert background_rgb([(text, 1.0)]) == tuple(v / 255 for v in rgb)


@pytest.mark.parametrize("text", [
    "a red star",
    "a red star on a gren background",  # not a colour name
    "a green background",  # no "on": the subject, not its backdrop
    "a dragon on a mountain",
    "on a " + "x" * 5000 + " background",
])
def test_no_named_background(text):
    assert background_rgb([(text, 1.0)]) is None


def test_only_the_first_positive_prompt_counts():
    prompts = [("smoke on a red background", -0.5), ("a star on a blue background", 1.0), ("on a green background", 1.0)]
    assert background_rgb(prompts) == (0.0, 0.0, 1.0)
    assert background_rgb([("a star", 1.0), ("on a green background", 1.0)]) is None


def test_named_rgb():
    assert named_rgb("Dark Blue") == (0.0, 0.0, 139 / 255)
    assert named_rgb("#ff0000") == (1.0, 0.0, 0.0)
    assert named_rgb("not a colour") is None
