"""A procedural generator of math word problems with exact answers.

Fresh problems cannot be in any model's training data, so they are uncontaminated by
construction, and their answers are exact (computed with `fractions.Fraction`). The same seed
always gives the same problems.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from fractions import Fraction
from typing import Any

NAMES = ["Ada", "Bilal", "Chen", "Dana", "Emeka", "Farah", "Goran", "Hana", "Ines", "Jun"]
ITEMS = ["apples", "marbles", "books", "stickers", "pencils", "stamps", "shells", "cards"]


def format_answer(value: Fraction) -> str:
    return (
        str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"
    )


def _arithmetic(rng: random.Random) -> tuple[str, Fraction]:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    start, bought, boxes, per_box, given = (
        rng.randint(5, 90),
        rng.randint(2, 40),
        rng.randint(2, 9),
        rng.randint(3, 24),
        rng.randint(1, 30),
    )
    total = start + bought + boxes * per_box - given
    text = (
        f"{name} has {start} {item}. {name} buys {bought} more, then receives {boxes} boxes "
        f"with {per_box} {item} in each box, and gives {given} {item} to a friend. "
        f"How many {item} does {name} have now?"
    )
    return text, Fraction(total)


def _fractions(rng: random.Random) -> tuple[str, Fraction]:
    name = rng.choice(NAMES)
    a = Fraction(rng.randint(1, 5), rng.randint(6, 12))
    b = Fraction(rng.randint(1, 5), rng.randint(6, 12))
    litres = rng.randint(2, 12)
    remaining = Fraction(litres) * (1 - a) * (1 - b)
    text = (
        f"A tank holds {litres} litres of water. {name} drains {a.numerator}/{a.denominator} of "
        f"the water, then drains {b.numerator}/{b.denominator} of what is left. How many litres "
        f"remain? Give the answer as a fraction in lowest terms."
    )
    return text, remaining


def _linear(rng: random.Random) -> tuple[str, Fraction]:
    a = rng.choice([i for i in range(-9, 10) if i not in (0, 1)])
    x = Fraction(rng.randint(-20, 20), rng.choice([1, 1, 1, 2, 3]))
    b = rng.randint(-50, 50)
    c = a * x + b
    sign = "+" if b >= 0 else "-"
    text = f"Solve for x: {a}x {sign} {abs(b)} = {format_answer(c)}."
    return text, x


KINDS: dict[str, Callable[[random.Random], tuple[str, Fraction]]] = {
    "arithmetic": _arithmetic,
    "fractions": _fractions,
    "linear": _linear,
}


def generate(count: int, *, seed: int = 0) -> Iterator[dict[str, Any]]:
    """Yields rows in the import format: {id, prompt, answer, metadata}."""
    rng = random.Random(seed)
    kinds = sorted(KINDS)
    for index in range(count):
        kind = kinds[index % len(kinds)]
        text, answer = KINDS[kind](rng)
        yield {
            "id": f"gen-{seed}-{index}",
            "prompt": text,
            "answer": format_answer(answer),
            "metadata": {"generator": kind, "seed": seed},
        }
