"""Model attestation (scoring/attestation.py) on tiny Qwen2 models built locally, offline.

Two models share the tokenizer and chat template and differ only in their seed (both fitted
briefly to the same four dialogues, so on familiar ground they write much the same text: the
hard case). Each generates 180 samples (30 prompts x 3, at T=0.7 and T=1.0, top-p 0.95, up to
48 new tokens) with ``generate``; the samples are stored as the worker stores them (reasoning
split out of ``<think>…</think>``), then attested against the right and the wrong model. Foreign
text: random words from the tokenizer's corpus, the same samples with their words shuffled, and
samples from a third seed. Everything is built once per session (about 10 s on 2 CPU cores).

Measured rates (seeds 0/1/2, default rule: max_outside 0.10, min_z -3, min_tokens 16) are asserted
under bounds below and printed with ``-s``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from django.test import override_settings

from contributors.worker.reasoning import split_reasoning
from scoring.attestation import (
    FAIL,
    INCONCLUSIVE,
    PASS,
    Attestation,
    AttestationError,
    Attester,
    Claim,
    Rule,
    attester_from_settings,
    completion_text,
    pool,
)
from tests.fixtures.tiny_model import _CORPUS, sample_chats, tiny_model_dir

# The tiny model writes "<think>…</think> answer": its markup, for rebuilding the worker's split.
TINY_THINK = {"open": "<think>", "close": "</think> "}
TEMPERATURES = (0.7, 1.0)
TOP_P = 0.95
PER_PROMPT = 3
MAX_NEW_TOKENS = 48
# Rule used for the rates: min_tokens 0 so that every sample counts (the default rule calls the
# shortest ones inconclusive, which is neither a pass nor a fail).
RATE_RULE = Rule(max_outside=0.10, min_z=-3.0, min_tokens=0)
WORDS = " ".join(_CORPUS[:8]).replace("\n", " ").split()


def _prompts() -> list[str]:
    # Not the four fitted questions: on those both models write the memorised answer word for
    # word, which no likelihood test can tell apart (and no dishonesty would be gained).
    rng = random.Random(0)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 10))) + "?" for _ in range(30)]


def _generate(path: Any, temperature: float, seed: int) -> list[dict[str, Any]]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    prompts = _prompts()
    generated = sample_chats(
        AutoTokenizer.from_pretrained(path),
        AutoModelForCausalLM.from_pretrained(path).eval(),
        [[{"role": "user", "content": p}] for p in prompts],
        temperature=temperature,
        top_p=TOP_P,
        max_new_tokens=MAX_NEW_TOKENS,
        per_chat=PER_PROMPT,
        seed=seed,
    )
    samples = []
    for prompt, outs in zip(prompts, generated, strict=True):
        for g in outs:
            completion, reasoning = split_reasoning(g.text)
            samples.append(
                {
                    "prompt": prompt,
                    "completion": completion,
                    "reasoning": reasoning,
                    "finish_reason": "stop" if g.stopped else "length",
                    "temperature": temperature,
                }
            )
    return samples


def _claims(samples: Sequence[dict[str, Any]]) -> list[Claim]:
    return [
        Claim(
            key=i,
            messages=[{"role": "user", "content": s["prompt"]}],
            completion=s["completion"],
            reasoning=s["reasoning"],
            finish_reason=s["finish_reason"],
            temperature=s["temperature"],
            top_p=TOP_P,
        )
        for i, s in enumerate(samples)
    ]


def _random_words(n: int) -> list[dict[str, Any]]:
    rng = random.Random(1)
    prompts = _prompts()
    return [
        {
            "prompt": rng.choice(prompts),
            "reasoning": " ".join(rng.choice(WORDS) for _ in range(rng.randint(10, 30))),
            "completion": " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8))),
            "finish_reason": "stop",
            "temperature": rng.choice(TEMPERATURES),
        }
        for _ in range(n)
    ]


def _shuffled(samples: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    rng = random.Random(2)
    out = []
    for s in samples:
        parts = {}
        for field in ("reasoning", "completion"):
            words = (s[field] or "").split()
            rng.shuffle(words)
            parts[field] = " ".join(words)
        out.append({**s, **parts})
    return out


@pytest.fixture(scope="session")
def corpus() -> dict[str, Any]:
    """Models A, B (C only generates) and their samples, built once per session."""
    paths = {name: tiny_model_dir(seed) for name, seed in (("A", 0), ("B", 1), ("C", 2))}
    samples = {
        name: [
            s
            for k, t in enumerate(TEMPERATURES)
            for s in _generate(paths[name], t, seed=10 * n + k)
        ]
        for n, name in enumerate(paths)
    }
    return {"paths": paths, "samples": samples}


@pytest.fixture(scope="session")
def attesters(corpus: dict[str, Any]) -> dict[str, Attester]:
    return {
        name: Attester(str(corpus["paths"][name]), rule=RATE_RULE, device="cpu", think=TINY_THINK)
        for name in ("A", "B")
    }


@pytest.fixture(scope="session")
def results(corpus: dict[str, Any], attesters: dict[str, Attester]) -> dict[str, list[Attestation]]:
    s = corpus["samples"]
    foreign = _random_words(60)
    shuffled = _shuffled(s["A"][:60]) + _shuffled(s["B"][:60])
    return {
        "A as A": attesters["A"].attest(_claims(s["A"])),
        "B as B": attesters["B"].attest(_claims(s["B"])),
        "A as B": attesters["B"].attest(_claims(s["A"])),
        "B as A": attesters["A"].attest(_claims(s["B"])),
        "C as A": attesters["A"].attest(_claims(s["C"])),
        "C as B": attesters["B"].attest(_claims(s["C"])),
        "words as A": attesters["A"].attest(_claims(foreign)),
        "words as B": attesters["B"].attest(_claims(foreign)),
        "shuffled A as A": attesters["A"].attest(_claims(shuffled[:60])),
        "shuffled B as B": attesters["B"].attest(_claims(shuffled[60:])),
    }


def _pass_rate(rows: Sequence[Attestation]) -> float:
    return sum(r.status == PASS for r in rows) / len(rows)


def _pooled_pass_rate(rows: Sequence[Attestation], group: int) -> float:
    groups = [rows[i : i + group] for i in range(0, len(rows) - group + 1, group)]
    return sum(RATE_RULE.decide(pool([r.stats for r in g])) == PASS for g in groups) / len(groups)


def test_honest_samples_pass_and_wrong_or_foreign_claims_fail(
    results: dict[str, list[Attestation]],
) -> None:
    rates = {name: _pass_rate(rows) for name, rows in results.items()}
    pooled = {name: _pooled_pass_rate(rows, 10) for name, rows in results.items()}
    for name, rows in results.items():
        print(f"{name:16s} n={len(rows):3d} pass {rates[name]:.3f} pooled-by-10 {pooled[name]:.3f}")
    # False negatives (an honest sample rejected): measured 1.7 % (A) and 2.8 % (B) per sample,
    # 0 % pooled: a model that emits a non-canonical split such as "Ġ" + "x", which re-tokenizing
    # writes "Ġx", puts that token outside the nucleus.
    for honest in ("A as A", "B as B"):
        assert rates[honest] >= 0.95, (honest, rates[honest])
        assert pooled[honest] == 1.0, (honest, pooled[honest])
    # Wrong model, one sample at a time: two models fitted to the same dialogues often write the
    # same short answer, which both find likely. Measured 7-22 % passing; a contributor's pooled
    # samples (10 at a time) are what a flag should use: measured 0 %.
    for cross in ("A as B", "B as A", "C as A", "C as B"):
        assert rates[cross] <= 0.30, (cross, rates[cross])
        assert pooled[cross] <= 0.05, (cross, pooled[cross])
    # Text neither model wrote: measured 0 % (random words), 0-3.3 % (a model's own samples with
    # their words shuffled: a three-word answer can come out of the shuffle nearly unchanged).
    for foreign in ("words as A", "words as B", "shuffled A as A", "shuffled B as B"):
        assert rates[foreign] <= 0.05, (foreign, rates[foreign])
        assert pooled[foreign] == 0.0, (foreign, pooled[foreign])


def test_statistics_have_the_shape_the_rule_relies_on(
    results: dict[str, list[Attestation]],
) -> None:
    def median(values: list[float]) -> float:
        return sorted(values)[len(values) // 2]

    honest = results["A as A"] + results["B as B"]
    foreign = results["words as A"] + results["words as B"]
    # Own samples: inside the nucleus, about as likely as the model expects (z near 0).
    assert median([r.stats.outside_nucleus for r in honest]) == 0.0
    assert -1.0 < median([r.stats.z for r in honest]) < 2.0  # type: ignore[misc]
    # Foreign text: a third or more outside the nucleus (z only weighs the tokens inside it, so
    # alone it says little here), and, pooled, far less likely than the model's own.
    assert median([r.stats.outside_nucleus for r in foreign]) > 0.3
    assert min(r.stats.outside_nucleus for r in foreign) > RATE_RULE.max_outside
    assert pool([r.stats for r in foreign]).z < -5  # type: ignore[operator]
    assert pool([r.stats for r in honest]).z > -3  # type: ignore[operator]
    assert all(r.stats.tokens > 0 and not r.stats.truncated for r in honest)
    assert all(r.verdict_details()["model"] for r in honest)


# --- units ----------------------------------------------------------------------------------------


def test_completion_text_undoes_the_workers_split() -> None:
    raw = "<think>2 plus 2 makes 4.</think> The answer is 4."
    completion, reasoning = split_reasoning(raw)
    text, inserted = completion_text(completion, reasoning, "stop", TINY_THINK)
    assert text == raw
    assert [text[a:b] for a, b in inserted] == ["<think>", "</think> "]
    # No reasoning field: the completion as it is, nothing inserted.
    assert completion_text("plain answer", None) == ("plain answer", [])
    # Unclosed (cut off) reasoning: no closing tag invented.
    assert completion_text("", "half a thou", "length", TINY_THINK)[0] == "<think>half a thou"
    # A template that opens the block itself (DeepSeek-R1): the tag is not written twice.
    text, inserted = completion_text("4", "r", "stop", prefix="<|Assistant|><think>\n")
    assert text == "r\n</think>\n\n4"


def test_batched_and_single_agree_and_order_is_kept(
    corpus: dict[str, Any], attesters: dict[str, Attester]
) -> None:
    claims = _claims(corpus["samples"]["A"][:12])
    small = Attester(
        str(corpus["paths"]["A"]),
        rule=RATE_RULE,
        device="cpu",
        think=TINY_THINK,
        max_tokens_per_batch=60,
    )
    assert any(
        len(b) > 1 for b in attesters["A"].batches([len(small.encode(c).ids) for c in claims])
    )
    together = attesters["A"].attest(claims)
    alone = [small.attest([c])[0] for c in claims]
    assert [r.key for r in together] == list(range(12))
    for a, b in zip(together, alone, strict=True):
        assert a.stats.tokens == b.stats.tokens
        assert a.stats.mean_logprob == pytest.approx(b.stats.mean_logprob, abs=1e-4)
        assert a.stats.outside_nucleus == b.stats.outside_nucleus


def test_long_completions_are_cut_and_say_so(corpus: dict[str, Any]) -> None:
    attester = Attester(
        str(corpus["paths"]["A"]), rule=RATE_RULE, device="cpu", think=TINY_THINK, max_tokens=8
    )
    claim = Claim("k", [{"role": "user", "content": "Say hello."}], " ".join(WORDS[:40]))
    (result,) = attester.attest([claim])
    assert result.stats.truncated and result.stats.tokens == 8


def test_short_samples_are_inconclusive_and_greedy_claims_use_the_argmax(
    corpus: dict[str, Any],
) -> None:
    attester = Attester(
        str(corpus["paths"]["A"]), rule=Rule(min_tokens=16), device="cpu", think=TINY_THINK
    )
    short = Claim("s", [{"role": "user", "content": "Say hello."}], "Hi.")
    assert attester.attest([short])[0].status == INCONCLUSIVE
    words = Claim(
        "g", [{"role": "user", "content": "Say hello."}], " ".join(WORDS[:30]), temperature=0.0
    )
    (greedy,) = attester.attest([words])
    assert greedy.stats.z is None and greedy.status == FAIL
    with pytest.raises(AttestationError):
        attester.attest([Claim("t", [{"role": "user", "content": "x"}], "y", top_p=0.0)])


def test_settings_map_claimed_names_to_models(corpus: dict[str, Any]) -> None:
    path = str(corpus["paths"]["A"])
    conf = {
        "models": {"org/tiny": {"path": path, "think": TINY_THINK}, "org/plain": path},
        "max_outside": 0.2,
        "min_z": -5,
        "min_tokens": 4,
        "max_tokens": 64,
    }
    with override_settings(THINKPOOL_ATTESTATION=conf):
        assert attester_from_settings("org/unknown") is None
        tiny = attester_from_settings("org/tiny")
        assert tiny is not None
        assert tiny.rule == Rule(0.2, -5.0, 4) and tiny.max_tokens == 64
        assert tiny.think == TINY_THINK
        plain = attester_from_settings("org/plain")
        assert plain is not None and plain.think["open"] == "<think>\n"
