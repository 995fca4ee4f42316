"""Split a completion into (answer, reasoning).

Servers differ: vLLM/SGLang with a reasoning parser, `transformers serve` and DeepSeek's API put
the chain of thought in ``reasoning_content``; Ollama and OpenRouter-style servers use
``reasoning``; llama.cpp, TGI, LM Studio and plain vLLM leave ``<think>…</think>`` in the text.
We take the server's split when it gives one and parse the markup otherwise. Nothing else is
touched: whitespace inside the reasoning and the answer is the model's own.
"""

from __future__ import annotations

OPEN = "<think>"
CLOSE = "</think>"


def split_reasoning(
    content: str | None, reasoning_field: str | None = None
) -> tuple[str, str | None]:
    """Return ``(completion, reasoning)``; reasoning is None when the model produced none."""
    text = content or ""
    if reasoning_field:
        return text, reasoning_field
    start = text.find(OPEN)
    end = text.find(CLOSE)
    if start != -1 and text[:start].strip() == "":
        body_start = start + len(OPEN)
        end = text.find(CLOSE, body_start)
        if end == -1:
            # Cut off inside the think block (finish_reason "length"): all of it is reasoning.
            return "", text[body_start:].strip()
        return text[end + len(CLOSE) :].lstrip(), text[body_start:end].strip()
    if end != -1 and OPEN not in text[:end]:
        # Templates like DeepSeek-R1's and Qwen3's open the think block in the prompt, so the
        # generation starts inside it and only the closing tag appears.
        return text[end + len(CLOSE) :].lstrip(), text[:end].strip()
    return text, None
