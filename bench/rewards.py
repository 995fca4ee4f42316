"""Reward-scoring throughput, run by hand: `.venv/bin/python bench/rewards.py [--gpu]`.

Scores the same samples with the same model three ways and reports tokens scored per second
(real tokens, not padding):

- one at a time: a forward pass per sample (no padding, no batching);
- token-budget batching: `RewardScorer.score` over all samples (length-sorted batches whose
  padded size stays within `--budget` tokens), what the scoring task does;
- fixed batches: 16 samples at a time in arrival order (what a naive batcher does), to show the
  padding that sorting saves.

Default: a small Qwen2-shaped reward model on CPU (4 layers, hidden 384, 6 heads, 2 KV heads,
random weights in float32) and 200 chats of 50-800 tokens. `--gpu`: a Qwen2-0.5B-shaped model
(24 layers, hidden 896, 14 heads, 2 KV heads, vocab 151936, random weights in bf16) on CUDA and
1000 chats. `--model PATH` benchmarks a local checkpoint instead. Both models are built locally
(no downloads) with the tiny test tokenizer; the token ids it produces are a subset of the vocab.
The agreement of batched and one-at-a-time scores is printed as a sanity check.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from scoring.rewards import RewardInput, RewardResult, RewardScorer
from tests.fixtures.tiny_reward_model import build_tiny_reward_model

TEXT = (
    "the quick brown fox jumps over the lazy dog think step by step then give the final answer "
    "in a box what is 12 times 7 solve for x reasoning first we note the constraints check each "
    "case write a python function that returns the sum of a list of numbers"
)
WORDS = TEXT.split()

CPU_SHAPE = {
    "hidden_size": 384,
    "intermediate_size": 1024,
    "num_hidden_layers": 4,
    "num_attention_heads": 6,
    "num_key_value_heads": 2,
    "max_position_embeddings": 4096,
}
# Qwen2-0.5B's shape (Qwen2ForCausalLM's config.json), as a one-label classifier.
GPU_SHAPE = {
    "vocab_size": 151936,
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "max_position_embeddings": 32768,
    "rope_theta": 1000000.0,
    "rms_norm_eps": 1e-6,
}


def build_model(root: Path, shape: dict[str, object], dtype: str) -> Path:
    """The tiny test tokenizer with a reward model of `shape` (random weights) in `root`."""
    import torch
    from transformers import AutoConfig, Qwen2Config, Qwen2ForSequenceClassification

    path = build_tiny_reward_model(root / "rm", max_positions=4096)
    tiny = AutoConfig.from_pretrained(path)
    config = Qwen2Config(
        **{"vocab_size": tiny.vocab_size, **shape},
        num_labels=1,
        eos_token_id=tiny.eos_token_id,
        pad_token_id=tiny.pad_token_id,
        dtype=dtype,
    )
    torch.manual_seed(0)
    model = Qwen2ForSequenceClassification(config).to(getattr(torch, dtype))
    model.save_pretrained(path)
    params = sum(p.numel() for p in model.parameters())
    print(f"built {params / 1e6:.1f}M-parameter Qwen2ForSequenceClassification ({dtype}) in {path}")
    del model
    return path


def make_samples(scorer: RewardScorer, n: int, lo: int, hi: int, seed: int) -> list[RewardInput]:
    """`n` chats whose rendered length is roughly uniform in [lo, hi] tokens (prompt 10-40%)."""
    rng = random.Random(seed)
    probe = " ".join(rng.choice(WORDS) for _ in range(2000))
    per_word = len(scorer.tokenizer(probe, add_special_tokens=False)["input_ids"]) / 2000
    overhead = len(scorer.encode(RewardInput(0, [{"role": "user", "content": ""}], "")).ids)
    out = []
    for i in range(n):
        target = max(rng.randint(lo, hi) - overhead, 2)
        prompt_words = max(1, round(target * rng.uniform(0.1, 0.4) / per_word))
        response_words = max(1, round(target / per_word) - prompt_words)
        prompt = " ".join(rng.choice(WORDS) for _ in range(prompt_words))
        response = " ".join(rng.choice(WORDS) for _ in range(response_words))
        out.append(RewardInput(i, [{"role": "user", "content": prompt}], response))
    return out


def timed(fn: Callable[[], list[RewardResult]], repeat: int) -> tuple[float, list[RewardResult]]:
    times = []
    results: list[RewardResult] = []
    for _ in range(repeat):
        start = time.perf_counter()
        results = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), results


def machine(device: str) -> str:
    import torch as t

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    text = f"{cpu}, {os.cpu_count()} CPUs visible, torch {t.__version__}"
    text += f" ({t.get_num_threads()} threads)"
    if device.startswith("cuda"):
        text += f", GPU {t.cuda.get_device_name(0)}"
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", action="store_true", help="0.5B-shaped model in bf16 on CUDA")
    parser.add_argument("--model", help="a local reward-model checkpoint instead of a random one")
    parser.add_argument("--samples", type=int, help="default 200 (CPU) or 1000 (GPU)")
    parser.add_argument("--min-tokens", type=int, default=50)
    parser.add_argument("--max-tokens", type=int, default=800)
    parser.add_argument(
        "--budget",
        help="tokens per batch, comma-separated to compare several "
        "(default 1024,4096,8192 on CPU; 4096,16384,65536 on GPU)",
    )
    parser.add_argument("--fixed-batch", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3, help="median of this many runs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch

    device = "cuda" if args.gpu else "cpu"
    if args.gpu and not torch.cuda.is_available():
        raise SystemExit("--gpu: no CUDA device here")
    dtype = "bfloat16" if args.gpu else "float32"
    n = args.samples or (1000 if args.gpu else 200)
    budgets = [
        int(b)
        for b in (args.budget or ("4096,16384,65536" if args.gpu else "1024,4096,8192")).split(",")
    ]

    with tempfile.TemporaryDirectory(prefix="thinkpool-bench-rm-") as tmp:
        path = (
            Path(args.model)
            if args.model
            else build_model(Path(tmp), GPU_SHAPE if args.gpu else CPU_SHAPE, dtype)
        )
        started = time.perf_counter()
        batched = RewardScorer(str(path), version=1, device=device, dtype=dtype)
        print(f"loaded in {time.perf_counter() - started:.1f}s on {device} ({dtype})")
        single = RewardScorer(
            str(path), version=1, device=device, dtype=dtype, max_tokens_per_batch=1
        )
        samples = make_samples(batched, n, args.min_tokens, args.max_tokens, args.seed)
        lengths = [len(batched.encode(s).ids) for s in samples]
        real = sum(lengths)
        print(
            f"{n} chats, {real} tokens (min {min(lengths)}, "
            f"median {statistics.median(lengths):.0f}, "
            f"max {max(lengths)})"
        )
        print(f"machine: {machine(device)}")

        batched.score(samples[:8])  # warm-up (allocator, kernels)
        single.score(samples[:8])

        def fixed() -> list[RewardResult]:
            out: list[RewardResult] = []
            k = args.fixed_batch
            unlimited = RewardScorer(
                str(path), version=1, device=device, dtype=dtype, max_tokens_per_batch=10**12
            )
            for i in range(0, len(samples), k):
                out += unlimited.score(samples[i : i + k])
            return out

        def padded(groups: list[list[int]]) -> int:
            return sum(max(lengths[i] for i in g) * len(g) for g in groups)

        def budgeted(budget: int) -> Callable[[], list[RewardResult]]:
            return lambda: RewardScorer(
                str(path), version=1, device=device, dtype=dtype, max_tokens_per_batch=budget
            ).score(samples)

        fixed_groups = [
            list(range(i, min(i + args.fixed_batch, n))) for i in range(0, n, args.fixed_batch)
        ]
        rows: list[tuple[str, Callable[[], list[RewardResult]], int, int]] = [
            ("one at a time", lambda: single.score(samples), real, n)
        ]
        for budget in budgets:
            batched.max_tokens_per_batch = budget
            groups = batched.batches(lengths)
            rows.append((f"token budget {budget}", budgeted(budget), padded(groups), len(groups)))
        rows.append(
            (f"fixed batches of {args.fixed_batch}", fixed, padded(fixed_groups), len(fixed_groups))
        )
        results: dict[str, list[RewardResult]] = {}
        base = None
        print(
            f"{'mode':<24}{'batches':>8}{'padding':>9}{'seconds':>9}{'tokens/s':>11}{'speed-up':>10}"
        )
        for name, fn, padded_tokens, batches in rows:
            seconds, res = timed(fn, args.repeat)
            results[name] = res
            rate = real / seconds
            base = base or rate
            print(
                f"{name:<24}{batches:>8}{(padded_tokens - real) / padded_tokens:>8.1%}"
                f"{seconds:>9.2f}{rate:>11.0f}{rate / base:>9.2f}x"
            )
        one = results["one at a time"]
        for name, res in results.items():
            diff = max(abs(a.raw - b.raw) for a, b in zip(res, one, strict=True))
            print(f"max |score - one-at-a-time score|, {name}: {diff:.2e}")


if __name__ == "__main__":
    main()
