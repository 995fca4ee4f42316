import time

from contributors.worker.backends import Generation, GenRequest
from contributors.worker.runner import ItemTimer, Runner, RunOptions, parse_deadline, sample_payload


def runner_with(deadline_in_s, mean_s):
    r = Runner.__new__(Runner)  # only the deadline logic; no server or backend needed
    import threading

    r._lease_lock = threading.Lock()
    r._deadline = None if deadline_in_s is None else time.time() + deadline_in_s
    r.timer = ItemTimer()
    if mean_s is not None:
        r.timer.observe(mean_s, 1)
    r.opts = RunOptions(deadline_safety=1.5, deadline_margin_s=5)
    return r


def test_does_not_start_an_item_it_cannot_finish_before_the_deadline():
    assert runner_with(60, None)._fits_before_deadline(1)  # nothing observed yet: try
    assert runner_with(60, 10)._fits_before_deadline(1)  # 10*1.5+5 = 20 s < 60 s
    assert not runner_with(60, 10)._fits_before_deadline(4)  # 4 items: 65 s > 60 s
    assert not runner_with(15, 10)._fits_before_deadline(1)
    assert runner_with(None, 1000)._fits_before_deadline(1)  # no deadline given


def test_item_timer_is_a_moving_average():
    t = ItemTimer(alpha=0.5)
    t.observe(10, 2)
    assert t.mean_s == 5
    t.observe(1, 1)
    assert t.mean_s == 3


def test_parse_deadline():
    assert parse_deadline("2030-01-01T00:00:00Z") == 1893456000
    assert parse_deadline("2030-01-01T01:00:00+01:00") == 1893456000
    assert parse_deadline("tomorrow") is None and parse_deadline(None) is None


def test_sample_payload_records_provenance_and_keeps_backend_id():
    req = GenRequest(messages=[], temperature=0.6, top_p=0.95, max_tokens=100, n=4)
    g = Generation("4", "2+2", "stop", 12, 30, 250, "qwen3:8b", "rev1", {"x": 1})
    p = sample_payload("Qwen/Qwen3-8B", {"temperature": 0.6, "n": 4}, req, g)
    assert p["model"] == "Qwen/Qwen3-8B" and p["model_revision"] == "rev1"
    assert p["sampling"] == {
        "temperature": 0.6,
        "top_p": 0.95,
        "max_tokens": 100,
        "n": 4,
        "backend_model": "qwen3:8b",
        "x": 1,
    }
    assert (p["finish_reason"], p["prompt_tokens"], p["completion_tokens"]) == ("stop", 12, 30)
    same = sample_payload("qwen3:8b", {}, req, g)
    assert "backend_model" not in same["sampling"]


def test_lone_surrogates_never_reach_the_journal():
    from contributors.worker.runner import valid_text

    assert valid_text("ok \ud800 end") == "ok \ufffd end"
    assert valid_text("\ud83d\ude00") == "\U0001f600"  # a split pair is joined again
    assert valid_text("plain ü 😀") == "plain ü 😀"
    valid_text("x\udfff").encode("utf-8")  # encodable: no UnicodeEncodeError
