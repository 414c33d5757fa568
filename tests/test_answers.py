"""Answer extraction and comparison: the evaluation protocol every accuracy number rests on."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kava.data.answers import answers_match, canonical_gold, extract_answer, format_number, parse_gold


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The answer is 18", 18.0),
        ("She makes $18 every day.", 18.0),
        ("18.", 18.0),
        ("18 dollars.", 18.0),
        ("1,234", 1234.0),
        ("It costs $1,234,567.50 in total.", 1234567.5),
        ("€1,000", 1000.0),
        ("£7.25", 7.25),
        ("18.00", 18.0),
        ("50%", 50.0),
        ("The change is -5.", -5.0),
        ("-$5", -5.0),
        ("$-5", -5.0),
        ("(-4)", -4.0),
        ("x = .5", 0.5),
        ("<<16-3-4=9>> <<9*2=18>> #### 18", 18.0),
        ("10-4", 4.0),  # a minus between numbers is a subtraction, not a sign
        ("The answer is \u22127", -7.0),  # the Unicode minus sign
        ("(\u22124)", -4.0),
        ("10\u22124", 4.0),
        ("first 3, then 4, finally 5", 5.0),
        ("9 * 2 = 18 so 18 eggs. The answer is 20", 20.0),
        ("0", 0.0),
    ],
)
def test_extract_examples(text: str, expected: float) -> None:
    assert extract_answer(text) == expected


@pytest.mark.parametrize("text", ["", "no number here", "eighteen dollars", "-", "$.", ","])
def test_extract_none_without_a_number(text: str) -> None:
    assert extract_answer(text) is None


def test_extract_rejects_non_text() -> None:
    with pytest.raises(TypeError, match="expects str"):
        extract_answer(18)  # type: ignore[arg-type]


def test_answers_match_tolerance() -> None:
    assert answers_match(18.0, 18.0)
    assert answers_match(3244047.1, 3244047.0999999996)  # GSM-Hard float gold
    assert answers_match(14053029.67, 14053029.666666666)  # model rounds to cents
    assert answers_match(0.0, 0.0) and answers_match(1e-7, 0.0)  # abs_tol near zero
    assert not answers_match(17.0, 18.0)
    assert not answers_match(None, 18.0)
    assert not answers_match(float("nan"), 18.0)
    # Off-by-one is wrong at any magnitude; rounding to cents is right.
    assert not answers_match(20001.0, 20000.0)
    assert not answers_match(322886701.0, 322886700.0)
    assert answers_match(14053029.67, 14053029.666666666)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("18", 18.0), (" 2,125 ", 2125.0), ("-3.5", -3.5), ("\u22127", -7.0), ("$40", 40.0), ("50%", 50.0), (43.0, 43.0), (7, 7.0)],
)
def test_parse_gold(text, expected: float) -> None:
    assert parse_gold(text) == expected


@pytest.mark.parametrize("bad", ["", "abc", "18 dollars", "1,23", "5.", "- 5", "1/2", True, float("nan"), None])
def test_parse_gold_rejects_non_numbers(bad) -> None:
    with pytest.raises(ValueError, match="gold answer"):
        parse_gold(bad)


@pytest.mark.parametrize(
    ("value", "text"),
    [(43.0, "43"), (-0.0, "0"), (0.5, "0.5"), (1e-5, "0.00001"), (3244047.0999999996, "3244047.0999999996"), (1e20, "100000000000000000000")],
)
def test_format_number(value: float, text: str) -> None:
    assert format_number(value) == text
    assert canonical_gold(value) == text


def test_canonical_gold_strips_separators() -> None:
    assert canonical_gold("2,125") == "2125"
    assert canonical_gold("18.00") == "18"


# --------------------------------------------------------------------------- properties

_FILLER = st.text(alphabet="abcdefghij XYZ,;:!?()'\"", max_size=20)  # no digits, dots or dashes


@st.composite
def written_numbers(draw) -> tuple[str, float]:
    """A number as prose writes it: sign, currency, thousands separators, decimals, unit, period."""
    if draw(st.booleans()):
        magnitude = Decimal(draw(st.integers(min_value=0, max_value=10**12)))
    else:
        magnitude = draw(st.decimals(min_value=0, max_value=10**9, places=draw(st.integers(1, 4))))
    negative = draw(st.booleans())
    body = format(magnitude, ",f" if draw(st.booleans()) else "f")
    currency = draw(st.sampled_from(["", "$", "€", "£"]))
    if negative:
        text = draw(st.sampled_from([f"-{currency}{body}", f"{currency}-{body}"]))
    else:
        text = f"{currency}{body}"
    text += draw(st.sampled_from(["", "%", " dollars", " cm", " eggs"]))
    text += draw(st.sampled_from(["", ".", "!", ","]))
    value = float(magnitude)
    return text, -value if negative else value


@given(written_numbers(), _FILLER, _FILLER)
def test_extract_gives_back_the_written_number(number: tuple[str, float], before: str, after: str) -> None:
    text, value = number
    assert extract_answer(f"{before} {text} {after}") == value


@given(written_numbers(), written_numbers(), _FILLER)
def test_last_number_wins(first: tuple[str, float], last: tuple[str, float], middle: str) -> None:
    assert extract_answer(f"{first[0]} {middle} {last[0]}") == last[1]


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_canonical_form_round_trips(value: float) -> None:
    text = format_number(value)
    assert parse_gold(text) == value
    assert extract_answer(f"The answer is {text}.") == value
    assert answers_match(extract_answer(text), value)
