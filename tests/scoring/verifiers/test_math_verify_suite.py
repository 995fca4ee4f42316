"""Equivalences from math-verify's own test suite (github.com/huggingface/Math-Verify,
tests/test_all.py: latex notation, relations, matrices, precision, numbers), each as a gold and
a boxed answer: our verifier agrees with math-verify's expected verdict, except where one of
our rules disagrees on purpose (`ON_PURPOSE`, with the rule)."""

from __future__ import annotations

import pytest

from scoring.verifiers import MathVerifier
from scoring.verifiers.base import Gold, Status
from tests.scoring.verifiers.helpers import completion

V = MathVerifier()
P, F = Status.PASS, Status.FAIL

# (gold, answer, math-verify's verdict in its suite)
SUITE = [
    # notation
    ("1/3", r"\left( \frac{1}{3} \right)", P),
    ("1/3", r"\frac13", P),
    ("1", r"\frac3{3}", P),
    (r"\sqrt{3}", r"\sqrt3", P),
    ("1/3", r"\cfrac{1}{3}", P),
    ("1/3", r"\dfrac{1}{3}", P),
    ("1/3", r"\tfrac{1}{3}", P),
    ("1/3", "1/3", P),
    ("1/3", r"\frac{1}{3} \text{meters}", P),
    ("1/3", r"\frac{1}{3} \textbf{meters}", P),
    ("1/3", r"k = \frac{1}{3}", P),
    ("10/9", r"\frac{10}{9}", P),
    ("-10/9", r"-\frac{10}{9}", P),
    (r"28\%", r"28 \%", P),
    (r"28\%", "28 percent", P),
    (r"28\%", "28 pct", P),
    # from math problems
    (r"3\sqrt{13}", r"3\sqrt{13}", P),
    (r"15\mbox{ cm}^2", r"15\mbox{ cm}^2", P),
    ("125", r"125\textnormal{ miles}", P),
    ("-2,1", "-2,1", P),
    ("204_5", "204_5", P),
    ("(6,31,-1)", "(6,31,-1)", P),
    (r"1 \pm \sqrt{19}", r"1 \pm \sqrt{19}", P),
    (r"\{1\pm\sqrt{5},-2\}", r"\{1\pm\sqrt{5},-2\}", P),
    ("f(2) < f(1) < f(4)", "f(2) < f(1) < f(4)", P),
    (r"2 \sin b \cos a", r"2 \sin b \cos a", P),
    (r"\frac{\pi r}{h+r}", r"\frac{\pi r}{h+r}", P),
    (
        r"[-1, -\frac{1}{2}) \cup (-\frac{1}{2}, 0) \cup (0, 1) \cup (1, \infty)",
        r"[-1, -\tfrac12) \cup (-\tfrac12, 0) \cup (0, 1) \cup (1, \infty)",
        P,
    ),
    (r"\sqrt{2}+\sqrt{5}", r"\sqrt 2+\sqrt 5", P),
    (r"\frac{9}{4}\pi", r"\frac94\pi", P),
    (r"\{-1\} \cup [0,7)", r"\{-1\} \cup [0,7)", P),
    (r"\left( \frac{4}{3}, -\frac{1}{3} \right)", r"\left( \frac{4}{3}, -\frac{1}{3} \right)", P),
    (r"90^\circ", r"90^\circ", P),
    (r"\frac{14}{3}", r"\frac{14}{3}", P),
    (r"\text{C}", r"\text{(C)}", P),
    # sets and intervals
    ("[0,1)", "[0,1)", P),
    ("[0,9)", "[0,1)", F),
    ("(0,9)", "[0,9)", F),
    ("1", "-[0,1)", F),
    ("(3,1)", "{1,3}", F),
    ("(1,3)", "{1,3}", P),
    # relations
    ("x >= 5", r"x \geq 5", P),
    ("x < 3", r"x \lt 3", P),
    (r"x \leq 2", "x <= 2", P),
    ("x > 5", r"x \gt 5", P),
    ("x != 3", r"x \neq 3", P),
    ("x > 5", "x < 5", F),
    (r"x \geq 5", r"x \leq 5", F),
    (r"x \leq 5", r"5 \geq x", P),
    (r"x \geq 5", r"5 \leq x", P),
    ("x < 1", "-x > -1", P),
    ("x < 1", "x > -1", F),
    ("x <= 1", "-x >= -1", P),
    ("x = 11", "x = 5+5+1 = 7 =11", P),
    ("7 = 11a+c", "11a+c", F),
    ("11", "x=11", P),
    ("11", r"x\approx11", P),
    ("1/3", r"x=1/3\approx1.3", P),
    ("a +3z = 0", "0", F),
    ("2x + z = 1", "1", F),
    ("a^2 + b = 0", "0", F),
    ("k=1", "1", P),
    ("1", "k=1", P),
    ("z = 1 + 1 = 2", "z = 3+3 = 2", P),
    ("2x+4y-3=0", r"y=-\frac{1}{2}x+\frac{3}{4}", P),
    ("x^2/4 + y^2/3 = 1", "x^2/16 + y^2/12 = 1/4", P),
    ("34x+45y-20z+100=0", "-34x-45y+20z-100=0", P),
    # matrices
    (
        r"\begin{pmatrix}1 & 0 \\ 0 & 1\end{pmatrix}",
        r"\begin{pmatrix}1 & 0 \\ 0 & 1\end{pmatrix}",
        P,
    ),
    (r"\begin{bmatrix}0 & 0 \\0 & 0\end{bmatrix}", r"\begin{pmatrix}0 & 0 \\0 & 0\end{pmatrix}", P),
    (
        r"\begin{pmatrix}1 & 2 \\ 3 & 4\end{pmatrix}",
        r"\begin{pmatrix}1 & 2 \\ 3 & 5\end{pmatrix}",
        F,
    ),
    # precision and expressions
    (r"\frac{1}{12}", "0.0833333333333333", P),
    (r"(1,\frac{9}{2})", "(1,4.5)", P),
    (r"\frac{x+2}{7}", r"\frac{x}{7}+\frac{2}{7}", P),
    (r"\tan^2(y)+1", r"\sec^2(y)", P),
    ("(a+5)(b+2)", "(+5)(b+2)", F),
    ("2", r"\frac{1+\sqrt{5}}{2}", F),
    (r"1\sqrt{19}", "1", F),
    ("x+2n+1", "x+1", F),
    # numbers
    ("7425000", "7,425,000", P),
    ("1000", "1 000", P),
    ("1000.99", "1,000.99", P),
    ("0.4", ".4", P),
    ("-5", "-5", P),
    ("11111111100", r"11,\! 111,\! 111,\! 100", P),
    ("32349", r"32,\!349", P),
]

# Where our rules give another verdict than math-verify's suite, on purpose.
ON_PURPOSE = {
    # Rule 5: every part of a chain after the name must be the value; 7 is not 11.
    ("x = 11", "x = 5+5+1 = 7 =11"): F,
    ("z = 1 + 1 = 2", "z = 3+3 = 2"): F,
    # Rule 5: an approximation is a relation, not the value.
    ("11", r"x\approx11"): F,
    ("1/3", r"x=1/3\approx1.3"): F,
}


@pytest.mark.parametrize(("gold", "answer", "math_verify"), SUITE)
def test_agrees_with_math_verify_suite(gold: str, answer: str, math_verify: Status) -> None:
    expected = ON_PURPOSE.get((gold, answer), math_verify)
    out = V.verify(completion(rf"\boxed{{{answer}}}"), Gold(answer=gold), {})
    assert out.status is expected, out.details


def test_on_purpose_differences_are_in_the_suite() -> None:
    assert set(ON_PURPOSE) <= {(g, a) for g, a, _ in SUITE}
