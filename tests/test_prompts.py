"""The /imagine prompt parser: examples and properties (hypothesis)."""
import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from jobs.schemas import MAX_PROMPT_CHARS, ImagePrompt, parse_job
from jobs.validation.prompts import MAX_PROMPTS, MAX_WEIGHT, Prompt, parse_prompts
from worker.api import JobError


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("a red circle", [("a red circle", 1.0)]),
        ("a red circle | a blue star:0.5 | something:-1",
         [("a red circle", 1.0), ("a blue star", 0.5), ("something", -1.0)]),
        ("portrait: oil", [("portrait: oil", 1.0)]),  # the colon is text, not a weight
        ("portrait: oil:2", [("portrait: oil", 2.0)]),
        ("a star : .5 ", [("a star", 0.5)]),
        ("a star:+2.", [("a star", 2.0)]),
        ("a star:1e-1", [("a star", 0.1)]),
        ("ratio 1:2 star:x", [("ratio 1:2 star:x", 1.0)]),
        ("a: b: c", [("a: b: c", 1.0)]),
    ],
)
def test_examples(raw, expected):
    assert [(p.text, p.weight) for p in parse_prompts(raw)] == expected


@pytest.mark.parametrize(
    "raw, message",
    [
        ("", "empty"),
        ("   ", "empty"),
        (":0.5", "empty"),
        ("a red circle |", "Prompt 2 of 2 is empty"),
        ("a || b", "Prompt 2 of 3 is empty"),
        ("a:1 | b:-1", "sum to zero"),
        ("a:0", "sum to zero"),
        ("a:inf", "finite"),
        ("a:-Infinity | b", "finite"),
        ("a:nan", "finite"),
        ("a:1e400", "finite"),  # overflows to inf
        ("a:101", "between -100 and 100"),
        ("|".join("x" * 9), f"limit is {MAX_PROMPTS}"),
        ("x" * (MAX_PROMPT_CHARS + 1), f"limit is {MAX_PROMPT_CHARS}"),
    ],
)
def test_errors_say_what_is_wrong(raw, message):
    with pytest.raises(JobError, match=message):
        parse_prompts(raw)


def test_limits_are_inclusive():
    assert len(parse_prompts("|".join("x" * MAX_PROMPTS))) == MAX_PROMPTS
    assert parse_prompts("x" * MAX_PROMPT_CHARS)[0].text == "x" * MAX_PROMPT_CHARS


# ----------------------------------------------------------------------------- properties

# Prompt texts: no '|', non-empty after stripping, and not ending in something that reads as a weight.
_texts = (
    st.text(st.characters(blacklist_characters="|", blacklist_categories=("Cs",)), min_size=1, max_size=30)
    .map(str.strip)
    .filter(lambda t: t and parse_prompts_or_none(t) == [Prompt(t, 1.0)])
)
_weights = st.floats(min_value=-MAX_WEIGHT, max_value=MAX_WEIGHT, allow_nan=False).map(lambda w: round(w, 3))


def parse_prompts_or_none(raw):
    try:
        return parse_prompts(raw)
    except JobError:
        return None


@given(st.lists(st.tuples(_texts, _weights), min_size=1, max_size=MAX_PROMPTS))
@settings(max_examples=300, deadline=None)
def test_round_trip(pairs):
    """Formatting prompts as 'text:weight | ...' and parsing gives them back."""
    raw = " | ".join(f"{t}:{w!r}" for t, w in pairs)
    total = math.fsum(w for _, w in pairs)
    if len(raw) > MAX_PROMPT_CHARS or abs(total) < 1e-6:
        with pytest.raises(JobError):
            parse_prompts(raw)
    else:
        assert [(p.text, p.weight) for p in parse_prompts(raw)] == pairs


@given(st.lists(_texts, min_size=1, max_size=MAX_PROMPTS))
@settings(max_examples=200, deadline=None)
def test_unweighted_prompts_have_weight_one(texts):
    raw = "|".join(texts)
    if len(raw) <= MAX_PROMPT_CHARS:
        assert parse_prompts(raw) == [Prompt(t, 1.0) for t in texts]


@given(st.text(max_size=400))
@settings(max_examples=500, deadline=None)
def test_any_input_parses_or_raises_job_error(raw):
    """No input crashes the parser; what it accepts always satisfies the invariants."""
    prompts = parse_prompts_or_none(raw)
    if prompts is None:
        return
    assert 1 <= len(prompts) <= MAX_PROMPTS and len(raw) <= MAX_PROMPT_CHARS
    for p in prompts:
        assert p.text == p.text.strip() and p.text and "|" not in p.text
        assert math.isfinite(p.weight) and abs(p.weight) <= MAX_WEIGHT
    assert abs(math.fsum(p.weight for p in prompts)) >= 1e-6


@given(_texts, st.sampled_from([":", ": ", " : "]), st.from_regex(r"[a-z][a-z ]{0,10}", fullmatch=True).filter(
    lambda t: t.strip() not in {"inf", "infinity", "nan"}))
@settings(max_examples=200, deadline=None)
def test_colon_followed_by_words_stays_in_the_text(head, sep, tail):
    raw = f"{head}{sep}{tail}"
    assert parse_prompts(raw) == [Prompt(raw.strip(), 1.0)]


@pytest.mark.parametrize("weight", [-MAX_WEIGHT, -0.5, 0.0, 2.0, MAX_WEIGHT])
def test_image_prompt_weight_within_bounds_is_kept(weight):
    assert ImagePrompt(image="k", weight=weight).weight == weight


@pytest.mark.parametrize("weight, shown", [(MAX_WEIGHT + 1, "101"), (-1e9, "-1e+09"), (float("inf"), "inf"),
                                           (float("nan"), "nan")])
def test_image_prompt_weight_out_of_bounds_is_refused_with_its_range(weight, shown):
    with pytest.raises(ValidationError) as err:
        ImagePrompt(image="k", weight=weight)
    (e,) = err.value.errors()
    assert e["loc"] == ("weight",)
    assert e["msg"] == f"an image prompt's weight must be a number between -100 and 100, not {shown}"
    with pytest.raises(ValidationError, match="between -100 and 100"):  # the same on the wire
        parse_job(json.dumps({"kind": "imagine", "prompt": "a", "image_prompts": [{"image": "k", "weight": weight}]}))
