"""The start picture's colour when a prompt names its background.

"a red star on a green background": starting from a green canvas, the picture only has to draw the
star; from the grey default the optimisation must also repaint the whole canvas against the hold
that keeps it plain, and in 100 steps it mostly does not (models/README.md: the background was
right in 44% of such pictures from grey, 100% from the named colour). Colour names are the CSS
names PIL knows (148, e.g. "teal", "navy", "orange"); a word that is not one leaves the canvas as
configured.
"""
from __future__ import annotations

import re
from collections.abc import Sequence

from PIL import ImageColor

# "on a green background", "against a dark blue backdrop", "over an orange background"
_BACKGROUND = re.compile(r"\b(?:on|against|over)\s+(?:an?\s+|the\s+)?([a-z][a-z ]{0,30}?)\s+back(?:ground|drop)\b", re.I)


def named_rgb(name: str) -> tuple[float, float, float] | None:
    """A CSS colour name ("green", "dark blue", "lightgrey") as RGB in [0, 1]; None if it is not one."""
    try:
        r, g, b = ImageColor.getrgb(name.replace(" ", "").lower())[:3]
    except ValueError:
        return None
    return r / 255, g / 255, b / 255


def background_rgb(prompts: Sequence[tuple[str, float]]) -> tuple[float, float, float] | None:
    """The background colour the first positively weighted prompt names, if it names one."""
    for text, weight in prompts:
        if weight <= 0:
            continue
        for match in _BACKGROUND.finditer(text):
            words = match.group(1).split()  # "top of a dark blue" -> "dark blue" is the colour
            for i in range(len(words)):
                if (rgb := named_rgb(" ".join(words[i:]))) is not None:
                    return rgb
        return None
    return None
