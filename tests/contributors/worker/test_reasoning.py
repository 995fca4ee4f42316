import pytest

from contributors.worker.reasoning import split_reasoning


@pytest.mark.parametrize(
    ("content", "field", "expected"),
    [
        ("The answer is 4.", None, ("The answer is 4.", None)),
        ("<think>2+2=4</think>\n\nThe answer is 4.", None, ("The answer is 4.", "2+2=4")),
        ("  <think>\nhmm\n</think>4", None, ("4", "hmm")),
        # The template opened the block in the prompt: only the closing tag is generated.
        ("first, 2+2\n</think>\n\n4", None, ("4", "first, 2+2")),
        # Cut off inside the think block.
        ("<think>still thinking", None, ("", "still thinking")),
        # The server split it already: the text is left alone, even if it has markup.
        ("4", "2+2=4", ("4", "2+2=4")),
        # A tag in the middle of an answer is the answer's business.
        ("Use the <think> tag like so.", None, ("Use the <think> tag like so.", None)),
        ("", None, ("", None)),
        (None, None, ("", None)),
    ],
)
def test_split_reasoning(content, field, expected):
    assert split_reasoning(content, field) == expected
