"""The reward-model scorer on a tiny Qwen2ForSequenceClassification built locally (offline)."""

from __future__ import annotations

import math

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from scoring.rewards import (
    DEFAULT_MAX_TOKENS_PER_BATCH,
    RewardInput,
    RewardModelError,
    RewardResult,
    RewardScorer,
    clear_cache,
    load_count,
    normalise_per_prompt,
)
from tests.fixtures.tiny_reward_model import (
    BOS,
    build_tiny_reward_model,
    tiny_reward_model_dir,
)

TEXT = "the quick brown fox jumps over the lazy dog think step by step then answer"
WORDS = TEXT.split()


def words(n: int, offset: int = 0) -> str:
    return " ".join(WORDS[(offset + i) % len(WORDS)] for i in range(n))


def sample(key: object, prompt: str, response: str, reasoning: str | None = None) -> RewardInput:
    return RewardInput(key, [{"role": "user", "content": prompt}], response, reasoning)


def varied_samples() -> list[RewardInput]:
    return [
        sample("a", "What is 2 + 2?", "The answer is 4."),
        sample("b", words(40), words(30, 3)),
        sample("c", "Say hello.", "Hello!"),
        sample("d", words(5, 1), words(70, 2)),
        sample("e", "Solve for x: 3x + 5 = 20.", "x = 5."),
        sample("f", words(12, 4), words(12, 5)),
        sample("g", "What is 12 * 7?", ""),
    ]


@pytest.fixture
def scorer() -> RewardScorer:
    return RewardScorer(str(tiny_reward_model_dir()), version=1, device="cpu")


def test_batched_and_one_at_a_time_scores_agree_and_keep_input_order(
    scorer: RewardScorer,
) -> None:
    items = varied_samples()
    batched = RewardScorer(
        str(tiny_reward_model_dir()), version=1, device="cpu", max_tokens_per_batch=512
    )
    lengths = [len(batched.encode(i).ids) for i in items]
    groups = batched.batches(lengths)
    # The budget really forms padded multi-sample batches of unequal lengths.
    assert any(len(g) > 1 and len({lengths[i] for i in g}) > 1 for g in groups)

    results = batched.score(items)
    singles = [scorer.score([i])[0] for i in items]

    assert [r.key for r in results] == ["a", "b", "c", "d", "e", "f", "g"]
    assert [r.tokens for r in results] == lengths
    for r, s in zip(results, singles, strict=True):
        assert r.key == s.key
        assert r.tokens == s.tokens
        assert abs(r.raw - s.raw) <= 1e-4
        assert r.truncated is False
    # Distinct inputs score differently, so a shuffled result would be caught above.
    assert len({round(s.raw, 3) for s in singles}) == len(singles)


def test_scores_do_not_depend_on_batch_neighbours(scorer: RewardScorer) -> None:
    items = varied_samples()
    alone = scorer.score(items[:1])[0].raw
    reversed_run = scorer.score(list(reversed(items)))
    assert reversed_run[-1].key == "a"
    assert abs(reversed_run[-1].raw - alone) <= 1e-4


def test_batches_respect_the_token_budget_longest_first(scorer: RewardScorer) -> None:
    scorer.max_tokens_per_batch = 100
    assert scorer.batches([10, 50, 30, 20, 40]) == [[1, 4], [2, 3, 0]]
    # A sample over the budget runs alone; nothing is dropped.
    assert scorer.batches([500, 10, 10]) == [[0], [1, 2]]
    assert scorer.batches([]) == []
    scorer.max_tokens_per_batch = 1
    assert scorer.batches([3, 3]) == [[0], [1]]


def test_empty_input_returns_empty_list(scorer: RewardScorer) -> None:
    assert scorer.score([]) == []
    assert scorer.score(iter([])) == []


def test_empty_response_scores(scorer: RewardScorer) -> None:
    empty, full = scorer.score(
        [sample(1, "What is 2 + 2?", ""), sample(2, "What is 2 + 2?", "The answer is 4.")]
    )
    assert math.isfinite(empty.raw)
    assert empty.tokens > 0
    assert empty.tokens < full.tokens
    assert empty.raw != full.raw


def test_chat_is_prompt_then_assistant_response_reasoning_only_when_asked(
    scorer: RewardScorer,
) -> None:
    item = RewardInput(
        "k",
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2 + 2?"}],
        "4",
        "two and two",
    )
    assert scorer.chat(item) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "2 + 2?"},
        {"role": "assistant", "content": "4"},
    ]
    with_reasoning = RewardScorer(
        str(tiny_reward_model_dir()), version=1, device="cpu", include_reasoning=True
    )
    assert with_reasoning.chat(item)[-1] == {
        "role": "assistant",
        "content": "<think>\ntwo and two\n</think>\n\n4",
    }
    # No reasoning to include: the same chat as without the setting.
    no_reasoning = RewardInput("k", item.messages, "4", None)
    assert with_reasoning.chat(no_reasoning) == scorer.chat(no_reasoning)
    assert scorer.encode(item).ids == scorer.encode(no_reasoning).ids
    assert len(with_reasoning.encode(item).ids) > len(scorer.encode(item).ids)


def test_rendered_chat_is_tokenized_once_with_the_templates_own_tokens(
    scorer: RewardScorer,
) -> None:
    item = sample("k", "What is 2 + 2?", "The answer is 4.")
    tok = scorer.tokenizer
    text = tok.apply_chat_template(scorer.chat(item), tokenize=False)
    enc = scorer.encode(item)
    assert enc.ids == tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(enc.ids) == text
    # The prompt part ends with the assistant header; the rest is the response and its end.
    assert tok.decode(enc.ids[: enc.prompt_tokens]).endswith("<|im_start|>assistant\n")
    assert tok.decode(enc.ids[enc.prompt_tokens :]) == "The answer is 4.<|im_end|>\n"


def test_no_double_bos_when_the_template_writes_one() -> None:
    path = tiny_reward_model_dir(with_bos=True)
    scorer = RewardScorer(str(path), version=1, device="cpu")
    bos = scorer.tokenizer.convert_tokens_to_ids(BOS)
    item = sample("k", "What is 2 + 2?", "The answer is 4.")
    text = scorer.tokenizer.apply_chat_template(scorer.chat(item), tokenize=False)
    assert text.startswith(BOS)
    # The trap is real: tokenizing the rendered chat the default way doubles the BOS.
    naive = scorer.tokenizer(text)["input_ids"]
    assert naive[:2] == [bos, bos]

    ids = scorer.encode(item).ids
    assert ids[0] == bos
    assert ids[1] != bos
    assert ids.count(bos) == 1
    assert scorer.score([item])[0].tokens == len(naive) - 1


def test_over_long_prompt_is_cut_from_the_left_and_the_response_kept(
    scorer: RewardScorer,
) -> None:
    assert scorer.max_length == 256  # the tiny model's max_position_embeddings
    item = sample("long", words(600), "The answer is 4.")
    full_text = scorer.tokenizer.apply_chat_template(scorer.chat(item), tokenize=False)
    full = scorer.tokenizer(full_text, add_special_tokens=False)["input_ids"]
    assert len(full) > 256

    enc = scorer.encode(item)
    assert enc.truncated is True
    assert len(enc.ids) == 256
    assert enc.ids == full[-256:]
    assert scorer.tokenizer.decode(enc.ids).endswith("The answer is 4.<|im_end|>\n")
    assert enc.prompt_tokens == 256 - len(
        scorer.tokenizer("The answer is 4.<|im_end|>\n")["input_ids"]
    )

    (result,) = scorer.score([item])
    assert result == RewardResult("long", result.raw, 256, True)
    assert math.isfinite(result.raw)


def test_left_cut_keeps_a_leading_bos() -> None:
    scorer = RewardScorer(str(tiny_reward_model_dir(with_bos=True)), version=1, device="cpu")
    bos = scorer.tokenizer.convert_tokens_to_ids(BOS)
    item = sample("long", words(600), "The answer is 4.")
    enc = scorer.encode(item)
    assert enc.truncated is True
    assert len(enc.ids) == 256
    assert enc.ids[0] == bos
    assert enc.ids.count(bos) == 1
    assert scorer.tokenizer.decode(enc.ids).endswith("The answer is 4.<|im_end|>\n")


def test_over_long_response_is_cut_from_the_right(scorer: RewardScorer) -> None:
    item = sample("huge", "What is 2 + 2?", words(20_000))  # bounded: 256 tokens are scored
    full_text = scorer.tokenizer.apply_chat_template(scorer.chat(item), tokenize=False)
    full = scorer.tokenizer(full_text, add_special_tokens=False)["input_ids"]
    enc = scorer.encode(item)
    assert enc.truncated is True
    assert enc.ids == full[:256]
    assert scorer.tokenizer.decode(enc.ids).startswith("<|im_start|>user\nWhat is 2 + 2?")
    (result,) = scorer.score([item])
    assert (result.tokens, result.truncated) == (256, True)


def test_max_length_lowers_the_limit() -> None:
    scorer = RewardScorer(str(tiny_reward_model_dir()), version=1, device="cpu", max_length=32)
    assert scorer.max_length == 32
    results = scorer.score([sample(1, words(50), "ok"), sample(2, "Hi", "ok")])
    assert [(r.tokens, r.truncated) for r in results] == [(32, True), (results[1].tokens, False)]
    assert results[1].tokens < 32
    # A cap above the model's own limit changes nothing.
    assert (
        RewardScorer(
            str(tiny_reward_model_dir()), version=1, device="cpu", max_length=10_000
        ).max_length
        == 256
    )


def test_model_is_loaded_once_per_process() -> None:
    path = str(tiny_reward_model_dir(seed=1))
    clear_cache()
    first = RewardScorer(path, version=1, device="cpu")
    for _ in range(3):
        again = RewardScorer(path, version=2, device="cpu", include_reasoning=True)
        assert again.model is first.model
        assert again.tokenizer is first.tokenizer
    assert load_count() == 1
    # Another dtype is another model.
    RewardScorer(path, version=1, device="cpu", dtype="bfloat16")
    assert load_count() == 2
    assert RewardScorer(path, version=1, device="cpu", dtype="float32").model is first.model
    assert load_count() == 2


def test_cpu_defaults_to_float32(scorer: RewardScorer) -> None:
    import torch

    assert scorer.dtype is torch.float32
    assert next(scorer.model.parameters()).dtype is torch.float32
    assert scorer.details() == {
        "model": str(tiny_reward_model_dir()),
        "version": 1,
        "max_length": 256,
        "include_reasoning": False,
        "device": "cpu",
        "dtype": "float32",
    }


def test_model_without_pad_token_pads_with_eos_and_still_batches() -> None:
    scorer = RewardScorer(str(tiny_reward_model_dir(pad_token=False)), version=1, device="cpu")
    assert scorer.tokenizer.pad_token == "<|im_end|>"
    assert scorer.model.config.pad_token_id == scorer.tokenizer.eos_token_id
    items = varied_samples()
    batched = scorer.score(items)
    singles = [scorer.score([i])[0] for i in items]
    for r, s in zip(batched, singles, strict=True):
        assert abs(r.raw - s.raw) <= 1e-4


@pytest.mark.parametrize(
    "item",
    [
        RewardInput("k", [], "x"),
        RewardInput("k", "hello", "x"),  # type: ignore[arg-type]
        RewardInput("k", [{"role": "user"}], "x"),
        RewardInput("k", [{"role": "user", "content": 3}], "x"),  # type: ignore[list-item]
        RewardInput("k", [{"role": "user", "content": "hi"}], None),  # type: ignore[arg-type]
        RewardInput("k", [{"role": "user", "content": "hi"}], "x", 5),  # type: ignore[arg-type]
    ],
)
def test_bad_input_is_refused(scorer: RewardScorer, item: RewardInput) -> None:
    with pytest.raises(ValueError, match="sample 'k'"):
        scorer.score([sample("ok", "hi", "x"), item])


def test_bad_settings_are_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = str(tiny_reward_model_dir())
    with pytest.raises(ValueError, match="max_tokens_per_batch"):
        RewardScorer(path, version=1, max_tokens_per_batch=0)
    with pytest.raises(ValueError, match="max_length"):
        RewardScorer(path, version=1, max_length=1)
    with pytest.raises(RewardModelError, match="unknown dtype"):
        RewardScorer(path, version=1, device="cpu", dtype="float7")
    with pytest.raises(RewardModelError, match="cannot load reward model"):
        RewardScorer(str(tmp_path / "missing"), version=1, device="cpu")


def test_a_classifier_with_two_labels_is_not_a_reward_model(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from transformers import AutoConfig, AutoModelForSequenceClassification

    path = build_tiny_reward_model(tmp_path / "rm")
    config = AutoConfig.from_pretrained(path)
    config.num_labels = 2
    AutoModelForSequenceClassification.from_config(config).save_pretrained(path)
    with pytest.raises(RewardModelError, match="2 labels"):
        RewardScorer(str(path), version=1, device="cpu")


# --- normalise_per_prompt -------------------------------------------------------------------------


def test_normalise_gives_z_scores_within_each_prompt() -> None:
    z = math.sqrt(1.5)  # (3 - 2) / sqrt(2/3)
    out = normalise_per_prompt(
        {
            "p1": [1.0, 2.0, 3.0],
            "p2": [RewardResult("x", -5.0, 10, False), RewardResult("y", 5.0, 10, False)],
            "p3": [100.0, 102.0, 101.0],
        }
    )
    assert out["p1"] == pytest.approx([-z, 0.0, z], abs=1e-12)
    assert out["p2"] == [-1.0, 1.0]
    assert out["p3"] == pytest.approx([-z, z, 0.0], abs=1e-12)


def test_normalise_single_constant_and_empty_prompts_give_zero() -> None:
    assert normalise_per_prompt(
        {"one": [7.5], "same": [0.3, 0.3, 0.3], "big": [1e12, 1e12], "none": []}
    ) == {"one": [0.0], "same": [0.0, 0.0, 0.0], "big": [0.0, 0.0], "none": []}
    assert normalise_per_prompt({}) == {}


def test_normalise_refuses_non_finite_scores() -> None:
    with pytest.raises(ValueError, match="finite"):
        normalise_per_prompt({"p": [1.0, math.nan]})
    with pytest.raises(ValueError, match="finite"):
        normalise_per_prompt({"p": [math.inf]})


def test_default_token_budget_depends_on_the_device(scorer: RewardScorer) -> None:
    assert scorer.max_tokens_per_batch == DEFAULT_MAX_TOKENS_PER_BATCH["cpu"] == 4096
    assert DEFAULT_MAX_TOKENS_PER_BATCH["cuda"] == 16384
