"""Attestation throughput against generation throughput, run by hand:
`.venv/bin/python bench/attestation.py [--gpu]`.

Model attestation (scoring/attestation.py) re-runs the claimed model on prompt + completion in
one teacher-forced forward pass; generating the same completion takes one forward step per
token. For the same model, prompts and completion lengths this reports, per completion length:

- generation: `model.generate` (sampling at --temperature / --top-p, KV cache, batches of
  --batch prompts, exactly --lengths new tokens: EOS suppressed), completion tokens per second;
- attestation: `Attester.attest` over the decoded completions (what the `gpu` task does: the
  chat template, token-budget batches, the vocabulary projection in chunks), completion tokens
  scored per second;
- the ratio, and the share of the generated samples that pass attestation (a sanity check:
  they are the model's own samples at the claimed settings, so nearly all should).

Default: CPU, a small Qwen2 built locally (hidden 256, 4 layers, 4 heads, 2 KV heads, vocab
4096, float32). `--gpu`: CUDA, a Qwen2-0.5B-shaped model (24 layers, hidden 896, vocab 151936,
bf16). Both have random weights, with output embeddings scaled so that logits spread like a
trained model's (`--logit-std`: a nucleus of a few tokens at most positions, which is what
makes the top-p cut cheap; at the usual random scale every position is nearly uniform). The
tokenizer is the tiny test tokenizer, its vocabulary padded to the model's with plain added
tokens, so that whatever the random model samples decodes and re-encodes to the same ids.
`--model PATH` benchmarks a local checkpoint instead. Nothing is downloaded. On a shared
machine pass `--threads 1` (CPU) for steady numbers.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.rewards import WORDS, machine
from scoring.attestation import PASS, Attester, Claim, Rule, clear_cache
from tests.fixtures.tiny_model import build_tiny_model

CPU_SHAPE: dict[str, Any] = {
    "vocab_size": 4096,
    "hidden_size": 256,
    "intermediate_size": 704,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 4096,
}
# Qwen2-0.5B's shape (its config.json).
GPU_SHAPE: dict[str, Any] = {
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


def build_model(root: Path, shape: dict[str, Any], dtype: str, logit_std: float) -> Path:
    """The tiny test tokenizer, its vocabulary padded to the shape's, and a Qwen2 of `shape`
    with random weights, in `root`.

    The padding is plain added tokens ("<|v123|>"), which decode to themselves and re-encode to
    the same ids, and the model writes only those: the output rows of the tokenizer's own 400
    tokens are zero (logit 0, below nearly every nucleus). A random model writing byte-level
    tokens would write bytes that are not UTF-8, or splits the tokenizer never makes, which no
    check that reads text can take back to the tokens sampled (measured: 2 of 16 samples of
    1024 tokens failed attestation that way). Fitting the model to text instead does not help:
    forcing a fixed length then suppresses the EOS it wants to write, and the samples are no
    longer what the claimed settings sample."""
    import torch
    from tokenizers import AddedToken
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    path = build_tiny_model(root / "model", train_steps=0)
    tok = AutoTokenizer.from_pretrained(path)
    own = len(tok)
    vocab = int(shape.get("vocab_size", own))
    if vocab > len(tok):
        # Plain added tokens: "<|v123|>" decodes to itself and re-encodes to the same id.
        tok.add_tokens([AddedToken(f"<|v{i}|>", normalized=False) for i in range(len(tok), vocab)])
        tok.save_pretrained(path)
    config = Qwen2Config(
        **{**shape, "vocab_size": max(vocab, len(tok))},
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        bos_token_id=None,
        dtype=dtype,
    )
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config)
    # Logits of standard deviation `logit_std` (before the temperature): a trained model is
    # sure of most next tokens (a nucleus of a few tokens), which random weights at their
    # usual scale (nearly uniform over the vocabulary) are not.
    torch.nn.init.normal_(model.lm_head.weight, std=logit_std / math.sqrt(config.hidden_size))
    if vocab > own:
        with torch.no_grad():
            model.lm_head.weight[:own] = 0
    model = model.to(getattr(torch, dtype))
    model.save_pretrained(path)
    params = sum(p.numel() for p in model.parameters())
    print(f"built {params / 1e6:.1f}M-parameter Qwen2ForCausalLM ({dtype}), vocab {len(tok)}")
    return path


def prompts(n: int, words: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(words)) + "?" for _ in range(n)]


def generate(
    attester: Attester, texts: list[str], new_tokens: int, args: argparse.Namespace
) -> tuple[float, list[str], int]:
    """Seconds, the completions (decoded), and the tokens generated."""
    import torch

    tok, model = attester.tokenizer, attester.model
    tok.padding_side = "left"
    out_texts: list[str] = []
    generated = 0
    seconds = 0.0
    for start in range(0, len(texts), args.batch):
        chats = [
            tok.apply_chat_template(
                [{"role": "user", "content": t}], tokenize=False, add_generation_prompt=True
            )
            for t in texts[start : start + args.batch]
        ]
        enc = tok(chats, return_tensors="pt", padding=True, add_special_tokens=False).to(
            attester.device
        )
        _sync(attester.device)
        began = time.perf_counter()
        with torch.no_grad():
            out = model.generate(
                **enc,
                do_sample=True,
                temperature=args.temperature,
                top_p=args.top_p,
                top_k=0,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,  # the same length for every sample: no early EOS
                pad_token_id=tok.pad_token_id,
            )
        _sync(attester.device)
        seconds += time.perf_counter() - began
        for row in out[:, enc["input_ids"].shape[1] :]:
            ids = row.tolist()
            generated += len(ids)
            out_texts.append(str(tok.decode(ids, skip_special_tokens=False)))
    return seconds, out_texts, generated


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def attest(
    attester: Attester, texts: list[str], completions: list[str], args: argparse.Namespace
) -> tuple[float, int, float]:
    """Seconds, completion tokens scored, and the share that passed."""
    claims = [
        Claim(
            key=i,
            messages=[{"role": "user", "content": t}],
            completion=c,
            finish_reason="length",
            temperature=args.temperature,
            top_p=args.top_p,
        )
        for i, (t, c) in enumerate(zip(texts, completions, strict=True))
    ]
    _sync(attester.device)
    began = time.perf_counter()
    results = attester.attest(claims)
    _sync(attester.device)
    seconds = time.perf_counter() - began
    scored = sum(r.stats.tokens for r in results)
    return seconds, scored, sum(r.status == PASS for r in results) / len(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", action="store_true", help="0.5B-shaped model in bf16 on CUDA")
    parser.add_argument("--model", help="a local causal-LM checkpoint instead of a random one")
    parser.add_argument("--samples", type=int, help="default 16 (CPU) or 64 (GPU)")
    parser.add_argument("--batch", type=int, help="generation batch; default: all samples")
    parser.add_argument(
        "--lengths", help="completion lengths in tokens (default 64,256 on CPU; 256,1024 on GPU)"
    )
    parser.add_argument("--prompt-words", type=int, default=40)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--top-p", type=float, default=0.95)
    parser.add_argument("--repeat", type=int, default=3, help="median of this many runs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--logit-std",
        type=float,
        default=6.0,
        help="spread of the random model's logits (larger: surer, smaller nuclei)",
    )
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: its own)")
    args = parser.parse_args()

    import torch

    if args.threads:
        # On a shared machine fewer threads than cores gives steadier numbers (a busy core
        # stalls every thread of an OpenMP region).
        torch.set_num_threads(args.threads)

    if args.gpu and not torch.cuda.is_available():
        raise SystemExit("--gpu: no CUDA device here")
    device = "cuda" if args.gpu else "cpu"
    dtype = "bfloat16" if args.gpu else "float32"
    n = args.samples or (64 if args.gpu else 16)
    args.batch = args.batch or n
    lengths = [int(x) for x in (args.lengths or ("256,1024" if args.gpu else "64,256")).split(",")]

    with tempfile.TemporaryDirectory(prefix="thinkpool-bench-attest-") as tmp:
        path = (
            Path(args.model)
            if args.model
            else build_model(Path(tmp), GPU_SHAPE if args.gpu else CPU_SHAPE, dtype, args.logit_std)
        )
        clear_cache()
        attester = Attester(
            str(path),
            rule=Rule(min_tokens=1),
            device=device,
            dtype=dtype,
            max_tokens=max(lengths) + 16,
        )
        texts = prompts(n, args.prompt_words, args.seed)
        prompt_tokens = statistics.median(
            len(attester.encode(Claim(0, [{"role": "user", "content": t}], "")).ids) for t in texts
        )
        print(f"machine: {machine(device)}")
        print(
            f"{n} samples, prompts of {prompt_tokens:.0f} tokens (median), T={args.temperature}, "
            f"top-p {args.top_p}, generation batch {args.batch}, attestation budget "
            f"{attester.max_tokens_per_batch} tokens per batch; median of {args.repeat} runs"
        )
        # Warm-up (allocator, kernels, the chat template's compilation).
        torch.manual_seed(args.seed)
        _, warm, _ = generate(attester, texts[:2], 8, args)
        attest(attester, texts[:2], warm, args)

        print(
            f"{'completion':>10}{'generate s':>12}{'gen tok/s':>11}{'attest s':>10}"
            f"{'attest tok/s':>14}{'ratio':>8}{'passed':>8}"
        )
        for length in lengths:
            torch.manual_seed(args.seed + length)
            gen_runs, att_runs = [], []
            completions: list[str] = []
            generated = scored = 0
            passed = 0.0
            for _ in range(args.repeat):
                seconds, completions, generated = generate(attester, texts, length, args)
                gen_runs.append(seconds)
            for _ in range(args.repeat):
                seconds, scored, passed = attest(attester, texts, completions, args)
                att_runs.append(seconds)
            gen_rate = generated / statistics.median(gen_runs)
            att_rate = scored / statistics.median(att_runs)
            print(
                f"{length:>10}{statistics.median(gen_runs):>12.2f}{gen_rate:>11.0f}"
                f"{statistics.median(att_runs):>10.2f}{att_rate:>14.0f}"
                f"{att_rate / gen_rate:>7.1f}x{passed:>8.0%}"
            )
            if scored != generated:
                print(f"  (re-tokenizing {generated} generated tokens gave {scored} scored)")


if __name__ == "__main__":
    main()
