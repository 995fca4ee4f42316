import json

import httpx
import pytest

from contributors.worker.backends import GenRequest
from contributors.worker.backends.openai import OpenAIBackend, _per_choice_tokens
from contributors.worker.errors import BackendUnreachable, ModelNotServed

REQ = GenRequest(
    messages=[{"role": "user", "content": "hi"}], temperature=0.7, top_p=0.9, max_tokens=50, n=3
)


def choice(content, finish="stop", **msg):
    return {"index": 0, "finish_reason": finish, "message": {"content": content, **msg}}


def backend(handler, **kw):
    http = httpx.Client(transport=httpx.MockTransport(handler))
    return OpenAIBackend(http, "http://llm/v1", model="m", **kw)


def test_native_n_one_request_with_reasoning_fields():
    bodies = []

    def handler(request):
        bodies.append(json.loads(request.content))
        return httpx.Response(
            200,
            json={
                "model": "org/m",
                "usage": {"prompt_tokens": 5, "completion_tokens": 30},
                "choices": [
                    choice("a", reasoning_content="r1"),
                    choice("b", reasoning="r2"),
                    choice("<think>r3</think>c", "length"),
                ],
            },
        )

    b = backend(handler)
    got = []
    b.generate_batch([REQ], lambda i, gens: got.extend(gens))
    assert len(bodies) == 1 and bodies[0]["n"] == 3
    assert bodies[0]["messages"] == REQ.messages  # sent as given
    assert (bodies[0]["temperature"], bodies[0]["top_p"], bodies[0]["max_tokens"]) == (0.7, 0.9, 50)
    assert [(g.completion, g.reasoning) for g in got] == [("a", "r1"), ("b", "r2"), ("c", "r3")]
    assert [g.finish_reason for g in got] == ["stop", "stop", "length"]
    assert all(g.model == "org/m" and g.prompt_tokens == 5 for g in got)
    # The "length" choice is exactly max_tokens; the rest share what's left and sum exactly.
    assert got[2].completion_tokens == 50 or sum(g.completion_tokens for g in got) == 30
    assert b.supports_n is True


def test_server_ignoring_n_gets_repeated_requests_and_each_is_reported_at_once():
    bodies = []

    def handler(request):
        bodies.append(json.loads(request.content))
        return httpx.Response(
            200,
            json={
                "model": "m",
                "usage": {"prompt_tokens": 5, "completion_tokens": 7},
                "choices": [choice(f"s{len(bodies)}")],
            },
        )

    b = backend(handler)
    batches = []
    b.generate_batch([REQ], lambda i, gens: batches.append([g.completion for g in gens]))
    assert batches == [["s1"], ["s2"], ["s3"]]  # journaled one by one, not at the end
    assert [x.get("n") for x in bodies] == [3, None, None]
    assert b.supports_n is False
    b.generate_batch([REQ], lambda i, gens: None)
    assert [x.get("n") for x in bodies[3:]] == [None, None, None]  # learnt: no more n


def test_per_choice_tokens_sum_to_the_servers_total():
    choices = [choice("aaaa"), choice("bb", "length"), choice("aaaaaaaaaaaa")]
    counts, apportioned = _per_choice_tokens(choices, 100, 40)
    assert apportioned and counts[1] == 40 and sum(counts) == 100 and counts[2] > counts[0]
    assert _per_choice_tokens([choice("a")], 9, 40) == ([9], False)


def test_model_not_served_names_what_is():
    def handler(request):
        return httpx.Response(200, json={"data": [{"id": "llama3"}, {"id": "qwen3:8b"}]})

    with pytest.raises(ModelNotServed, match=r"does not serve 'm' \(it serves: llama3, qwen3:8b\)"):
        backend(handler).check_model("m")


def test_backend_down_is_unreachable_after_retries():
    calls = []

    def handler(request):
        calls.append(1)
        raise httpx.ConnectError("refused")

    from contributors.worker.net import RetryPolicy

    b = backend(handler, policy=RetryPolicy(max_attempts=2, base_s=0))
    with pytest.raises(BackendUnreachable):
        b.generate(REQ)
    assert len(calls) == 2
    with pytest.raises(BackendUnreachable, match="is it running"):
        b.served_models()
