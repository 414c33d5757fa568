"""MATH-500 answer checking (math-verify) and AQuA-RAT letter extraction, hand-checked case by case."""

from __future__ import annotations

import threading

import pytest

from kava.data.choice_answers import extract_choice, option_value, parse_options
from kava.data.grading import Graded, check_gold, grade
from kava.data.math_answers import extract_math_answer, math_equal, parse_math
from kava.data.records import Record

# (gold, prediction): each must be scored equal. Hand-checked: the two sides are the same value.
EQUAL = [
    ("\\frac{14}{3}", "4\\frac{2}{3}"),  # mixed number
    ("4\\frac{2}{3}", "\\frac{14}{3}"),
    ("\\frac{14}{3}", "14/3"),
    ("\\frac{1}{2}", "0.5"),
    ("\\dfrac{1}{2}", "\\frac12"),  # \dfrac, brace-less \frac
    ("\\tfrac{3}{4}", "0.75"),
    ("1\\frac12", "\\frac32"),
    ("3\\sqrt{13}", "\\sqrt{117}"),  # radicals
    ("\\frac{\\sqrt{3}}{2}", "\\frac{1}{2}\\sqrt3"),
    ("2\\sqrt{2}", "\\sqrt{8}"),
    ("2\\pi", "2\\pi"),  # pi
    ("\\frac{\\pi}{2}", "\\pi/2"),
    ("90^\\circ", "90"),  # degrees
    ("30^{\\circ}", "30"),
    ("(-\\infty, 2]", "(-\\infty,2]"),  # intervals
    ("[1, 5)", "[1,5)"),
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\pi/2)"),  # tuples
    ("(1, -2)", "\\left(1,-2\\right)"),
    ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}"),  # matrices
    ("\\begin{pmatrix} 1 & 0 \\\\ 0 & 1 \\end{pmatrix}", "\\begin{pmatrix}1&0\\\\0&1\\end{pmatrix}"),
    ("\\text{Evelyn}", "\\text{Evelyn}"),  # text answers
    ("\\text{Evelyn}", "Evelyn"),
    ("\\text{(C)}", "C"),
    ("5\\text{ cm}", "5"),  # units
    ("18\\text{ inches}", "18"),
    ("10\\%", "10"),  # percent
    ("1,000", "1000"),  # thousands separators
    ("10,080", "10080"),
    ("\\$18.90", "18.90"),  # dollars
    ("x^2+2x", "2x+x^2"),  # spaces and term order
    ("6 - 5i", "-5i+6"),
    ("y = 2x + 3", "2x+3"),  # an equation against its right side
    ("1,2", "2,1"),  # a list of solutions is a set
    ("\\{1,2\\}", "\\{2, 1\\}"),
    ("-\\frac{1}{3}", "-1/3"),
    ("  7  ", "7"),  # surrounding spaces
]

# (gold, prediction): each must be scored different.
DIFFERENT = [
    ("3", "4"),
    ("\\frac{14}{3}", "\\frac{3}{14}"),
    ("\\pi", "3.14"),  # pi is not its rounding
    ("(-\\infty, 2]", "(-\\infty,2)"),  # closed vs open end
    ("(1,2)", "(2,1)"),  # an ordered pair is ordered
    ("\\text{Evelyn}", "Bob"),
    ("3\\sqrt{13}", "\\sqrt{39}"),
    ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix} 2 \\\\ 1 \\end{pmatrix}"),
    ("90^\\circ", "180"),
    ("-2", "2"),
]


@pytest.mark.parametrize(("gold", "pred"), EQUAL)
def test_equivalent_answers_match(gold: str, pred: str) -> None:
    assert math_equal(parse_math(gold), parse_math(pred))


@pytest.mark.parametrize(("gold", "pred"), DIFFERENT)
def test_different_answers_do_not_match(gold: str, pred: str) -> None:
    assert not math_equal(parse_math(gold), parse_math(pred))


def test_enough_hand_checked_cases() -> None:
    assert len(EQUAL) >= 30 and len(DIFFERENT) >= 10


@pytest.mark.parametrize(
    ("text", "answer", "rule"),
    [
        # the last \boxed wins, braces matched, over an "answer is" and other math
        ("First $x=2$, so \\boxed{2}. Checking: \\boxed{\\frac{1}{2}}. The answer is 7.", "\\frac{1}{2}", "boxed"),
        ("so $\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}$.", "\\left( 3, \\frac{\\pi}{2} \\right)", "boxed"),
        ("\\boxed 5.", "5", "boxed"),
        ("\\fbox{12}", "12", "boxed"),
        # no box: the text after the last "answer is", to the end of its line
        ("We get $x=3$. The answer is $\\frac{7}{2}$.\nSome more text 9", "\\frac{7}{2}", "answer is"),
        ("The final answer is: 42", "42", "answer is"),
        # neither: the last math segment, else the last number
        ("So $x = 1$ and then $y = \\sqrt{2}$ remains", "y = \\sqrt{2}", "last expression"),
        ("I think 3 or maybe 14/3", "14/3", "last expression"),
        # a missing "$" pairs the rest wrongly: spaced prose between segments is not the answer
        ("we get $1$ then $ and $x is 2", "1", "last expression"),
        ("no idea", None, "none"),
        ("\\boxed{", None, "none"),  # an unclosed box is no box
    ],
)
def test_math_extraction_order(text: str, answer: str | None, rule: str) -> None:
    assert extract_math_answer(text) == (answer, rule)


def _math(answer: str) -> Record:
    return Record("Q?", (), answer, answer_kind="math")


def test_math_grade_records_answer_and_rule() -> None:
    assert grade(_math("\\frac{14}{3}"), "Thus \\boxed{4\\frac{2}{3}}.") == Graded("4\\frac{2}{3}", True, "boxed")
    assert grade(_math("5"), "The answer is 6") == Graded("6", False, "answer is")
    assert grade(_math("5"), "nothing") == Graded(None, False, "none")


@pytest.mark.parametrize("junk", ["@@@", "\\frac{", "}}}{{{", "\\begin{pmatrix", "\\left(", "$$"])
def test_an_unparseable_prediction_is_wrong_and_flagged_never_raised(junk: str) -> None:
    graded = grade(_math("5"), f"The answer is {junk}")
    assert graded == Graded(junk, False, "answer is", "unparseable")


def test_unparseable_gold_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot be parsed"):
        check_gold(_math("@@@"))
    check_gold(_math("\\frac{1}{2}"))


def test_checking_works_outside_the_main_thread() -> None:
    # math-verify's signal-based timeout raises off the main thread; kava turns it off there.
    out: list[bool] = []
    thread = threading.Thread(target=lambda: out.append(grade(_math("\\frac{14}{3}"), "\\boxed{4\\frac23}").correct))
    thread.start()
    thread.join()
    assert out == [True]


# --------------------------------------------------------------------------- AQuA

OPTIONS = ("10", "12", "$1,200", "12.0", "None of these")  # B and D share the value 12


@pytest.mark.parametrize(
    ("text", "letter", "rule"),
    [
        ("The answer is (C) 12", "C", "answer letter"),  # the letter wins over the value 12 (B and D)
        ("C) 12", "C", "letter"),
        ("I pick (E).", "E", "letter"),
        ("Answer: A", "A", "answer letter"),
        ("ANSWER:D", "D", "answer letter"),
        ("so the correct option is B", "B", "answer letter"),
        ("(A) is wrong, (B) is wrong, so (D)", "D", "letter"),  # the last label
        ("the cost is 1200 dollars", "C", "option value"),  # a value maps back to its option
        ("the result is 10", "A", "option value"),
        ("it is 12", None, "ambiguous value"),  # equals B and D: no choice
        (" E", "E", "leading letter"),  # what follows the answer prompt
        ("B.\nBecause 10 + 2", "B", "leading letter"),
        ("A train leaves at noon and I do not know", None, "none"),  # a bare capital is not a choice
        ("the answer is a mystery", None, "none"),  # lower case is not a choice
        ("", None, "none"),
        ("x = 7", None, "none"),  # a value no option has
    ],
)
def test_aqua_letter_extraction(text: str, letter: str | None, rule: str) -> None:
    assert extract_choice(text, OPTIONS) == (letter, rule)


def test_aqua_grade() -> None:
    record = Record("Q?", (), "C", answer_kind="choice", options=OPTIONS)
    assert grade(record, "The answer is (C)") == Graded("C", True, "answer letter")
    assert grade(record, "it is 12") == Graded(None, False, "ambiguous value")


def test_option_values_and_parsing() -> None:
    assert [option_value(o) for o in OPTIONS] == [10.0, 12.0, 1200.0, 12.0, None]
    assert option_value("5(√3 + 1)") is None  # two numbers: no single value
    assert parse_options(["A)21", "B) 22", "C)23", "D)24", "E)25"]) == ("21", "22", "23", "24", "25")
    with pytest.raises(ValueError, match="expected option 'B\\)…'"):
        parse_options(["A)21", "C)22", "C)23", "D)24", "E)25"])
    with pytest.raises(ValueError, match="list of 5"):
        parse_options(["A)21"])
