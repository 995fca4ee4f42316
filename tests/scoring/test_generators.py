from __future__ import annotations

from fractions import Fraction

from scoring.generators import generate


def test_same_seed_same_prompts_other_seed_other_prompts():
    assert list(generate(20, seed=7)) == list(generate(20, seed=7))
    assert [r["prompt"] for r in generate(20, seed=7)] != [
        r["prompt"] for r in generate(20, seed=8)
    ]


def test_linear_answers_solve_their_equations():
    for row in generate(60, seed=3):
        if row["metadata"]["generator"] != "linear":
            continue
        lhs, rhs = row["prompt"].removeprefix("Solve for x: ").rstrip(".").split(" = ")
        a_text, sign, b_text = lhs.split(" ")
        a, b = int(a_text.removesuffix("x")), int(b_text) * (1 if sign == "+" else -1)
        x = Fraction(row["answer"])
        assert a * x + b == Fraction(rhs)


def test_all_three_kinds_appear_and_answers_are_exact():
    rows = list(generate(9, seed=1))
    assert {r["metadata"]["generator"] for r in rows} == {"arithmetic", "fractions", "linear"}
    for row in rows:
        Fraction(row["answer"])  # parses exactly: an integer or p/q
