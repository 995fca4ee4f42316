"""scoring.publishing.card: the escaping of untrusted text, the Hub's size buckets, and the
dataset card's YAML and body. Nothing here reaches the Hub (DatasetCard.validate is not run)."""

import json
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path

import datasets
import pytest
import yaml
from huggingface_hub import DatasetCard

from scoring.publishing.card import (
    CONFIG_DESCRIPTIONS,
    CardInput,
    Source,
    build_card,
    md,
    size_category,
)
from scoring.publishing.rows import Stats
from scoring.selection import Policy

# --- md --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "escaped"),
    [
        ("[x](javascript:alert(1))", r"\[x\]\(javascript:alert\(1\)\)"),
        ("<img src=x onerror=alert(1)>", r"&lt;img src=x onerror=alert\(1\)&gt;"),
        ("<script>alert(1)</script>", r"&lt;script&gt;alert\(1\)&lt;/script&gt;"),
        ("| col |", r"\| col \|"),
        ("line one\nline two\r\n\tthree  four\u2028five", "line one line two three four five"),
        ("`rm -rf /`", r"\`rm \-rf /\`"),
        ("```", r"\`\`\`"),
        ("AT&T &lt;b&gt; &#60;", r"AT&amp;T &amp;lt;b&amp;gt; &amp;\#60;"),
        ("**bold** _it_ ~~gone~~", r"\*\*bold\*\* \_it\_ \~\~gone\~\~"),
        ("# title", r"\# title"),
        ("1. item + more!", r"1\. item \+ more\!"),
        ("![img](x.png)", r"\!\[img\]\(x\.png\)"),
        ("{attr}", r"\{attr\}"),
        ("back\\slash", r"back\\slash"),
        ("org/model_a-1.5", r"org/model\_a\-1\.5"),
        ("plain handle 42", "plain handle 42"),
        ("  \n ", ""),
        ("", ""),
    ],
)
def test_md_escapes_markdown_and_html_active_characters(text, escaped):
    assert md(text) == escaped


def test_md_takes_any_object_as_its_text():
    assert md(42) == "42"
    assert md(0.5) == r"0\.5"
    assert md(None) == "None"


HOSTILE = [
    "[x](javascript:alert(1))",
    "<img src=x onerror=alert(1)>",
    "<script>alert(1)</script>",
    "| col | two |",
    "a\n\n# heading\n- item\n> quote",
    "`code` ``more``",
    "&#60;script&#62; &amp; &lt;",
    "**bold** __b__ *i* _i_ ~~s~~",
    "<https://evil.example/>",
    "[ref]: https://evil.example/",
    "\\<b>\\</b>",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_md_renders_as_the_same_text(text):
    markdown_it = pytest.importorskip("markdown_it")
    from markdown_it.common.utils import escapeHtml

    renderer = markdown_it.MarkdownIt("commonmark", {"html": True}).enable("table")
    rendered = renderer.render(md(text))
    assert rendered == f"<p>{escapeHtml(' '.join(text.split()))}</p>\n"


# --- size_category ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rows", "label"),
    [
        (0, "n<1K"),
        (999, "n<1K"),
        (1_000, "1K<n<10K"),
        (9_999, "1K<n<10K"),
        (10_000, "10K<n<100K"),
        (99_999, "10K<n<100K"),
        (100_000, "100K<n<1M"),
        (999_999, "100K<n<1M"),
        (1_000_000, "1M<n<10M"),
        (9_999_999, "1M<n<10M"),
        (10_000_000, "10M<n<100M"),
        (100_000_000, "100M<n<1B"),
        (999_999_999, "100M<n<1B"),
        (1_000_000_000, "1B<n<10B"),
        (9_999_999_999, "1B<n<10B"),
        (1_000_000_000_000, "n>1T"),
    ],
)
def test_size_category_bounds(rows, label):
    assert size_category(rows) == label


@pytest.mark.parametrize(
    ("rows", "label"),
    [(10_000_000_000, "10B<n<100B"), (100_000_000_000, "100B<n<1T")],
)
def test_size_category_above_ten_billion(rows, label):
    assert size_category(rows) == label


def test_size_category_labels_are_the_hubs():
    known = json.loads(
        (Path(datasets.__file__).parent / "utils/resources/size_categories.json").read_text()
    )
    for exponent in range(13):
        assert size_category(10**exponent) in known
        assert size_category(10**exponent - 1) in known


# --- build_card ------------------------------------------------------------------------------

FILES = {
    "sft": ["data/sft/train-00000-of-00002.parquet", "data/sft/train-00001-of-00002.parquet"],
    "preference": ["data/preference/train-00000-of-00001.parquet"],
    "rl": ["data/rl/train-00000-of-00001.parquet"],
    "raw": ["data/raw/train-00000-of-00001.parquet"],
}
EVIL_MODEL = "evil/<script>alert(1)</script>"
EVIL_HANDLE = "[x](javascript:alert(1))"
EVIL_SET = "<img src=x onerror=alert(1)>"
EVIL_URL = "javascript:alert(1)"
EVIL_LEFT_OUT = "| col |\n<a href=x>set</a>"
EVIL_BENCHMARK = "**MATH-500**](x)"
EVIL_DOMAIN = "<b>code</b>"
EVIL_VERIFIER = "`code`"


def make_stats() -> Stats:
    stats = Stats()
    stats.rows.update({"sft": 1_500, "preference": 10, "rl": 3, "raw": 2_500})
    stats.prompts = 12
    stats.new_prompts = 5
    stats.samples_per_domain.update({"math": 2_000, EVIL_DOMAIN: 500})
    stats.per_model[(EVIL_MODEL, 0.6)] = [2_000, 1_500]
    stats.per_model[("org/model_a", 1.0)] = [500, 100]
    stats.verified = 1_600
    stats.verifier_versions["math"] |= {3, 1}
    stats.verifier_versions[EVIL_VERIFIER] |= {2}
    stats.contributor_rows.update(
        {"bob": 1_000, "alice": 1_000, EVIL_HANDLE: 200, "anonymous": 300}
    )
    return stats


def make_input(**changes) -> CardInput:
    fields = {
        "repo_id": "org/thinkpool-r1",
        "version": 3,
        "license": "Apache-2.0",
        "built_at": datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC),
        "policy": Policy(name="r1-rejection", version=2),
        "stats": make_stats(),
        "files": FILES,
        "sources": [
            Source(name=EVIL_SET, license="MIT", url=EVIL_URL, prompts=10),
            Source(name="no-url", license="apache-2.0", url="", prompts=2),
        ],
        "left_out": [(EVIL_LEFT_OUT, "licence 'other' is not one known to allow this")],
        "contamination": {EVIL_BENCHMARK: 3, "gpqa": 1},
        "contaminated_prompts": 4,
    }
    fields.update(changes)
    return CardInput(**fields)


def front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    head, _, _ = text[4:].partition("\n---\n")
    return yaml.safe_load(head)


def test_card_yaml_maps_each_config_to_its_files():
    card = build_card(make_input())
    data = card.data.to_dict()
    assert data["configs"] == [
        {
            "config_name": config,
            "data_files": [{"split": "train", "path": f"data/{config}/train-*"}],
        }
        for config in ("sft", "preference", "rl", "raw")
    ]
    assert data["license"] == "apache-2.0"
    assert data["pretty_name"] == "thinkpool-r1"
    assert data["size_categories"] == ["1K<n<10K"]  # the largest config: raw, 2,500 rows
    assert data["task_categories"] == ["text-generation"]
    assert data["tags"] == ["reasoning", "chain-of-thought", "synthetic", "thinkpool"]
    # The text as written parses as the same YAML, and reads back as the same card.
    assert front_matter(str(card)) == data
    assert DatasetCard(str(card)).data.to_dict() == data


def test_card_reads_back_from_a_readme_file(tmp_path):
    card = build_card(make_input())
    card.save(tmp_path / "README.md")
    loaded = DatasetCard.load(tmp_path / "README.md")
    assert loaded.data.to_dict() == card.data.to_dict()
    assert loaded.text == card.text


def test_card_yaml_holds_only_the_configs_given_and_sizes_by_the_largest():
    stats = make_stats()
    stats.rows["sft"] = 12_000
    card = build_card(make_input(stats=stats, files={"sft": FILES["sft"]}))
    data = card.data.to_dict()
    assert [c["config_name"] for c in data["configs"]] == ["sft"]
    assert data["size_categories"] == ["10K<n<100K"]


def test_card_yaml_with_no_rows_is_the_smallest_bucket():
    card = build_card(make_input(stats=Stats(), files={"raw": FILES["raw"]}))
    assert card.data.to_dict()["size_categories"] == ["n<1K"]
    assert "0 judged samples, 0 verified (n/a)." in card.text


def lines(card: DatasetCard) -> list[str]:
    return card.text.splitlines()


def test_card_body_lists_configs_sources_and_statistics():
    body = lines(build_card(make_input()))
    assert body[0] == r"# org/thinkpool\-r1"
    assert 'sft = load_dataset("org/thinkpool-r1", "sft", split="train")' in body
    assert f"| `sft` | 1,500 | 2 | {CONFIG_DESCRIPTIONS['sft']} |" in body
    assert f"| `preference` | 10 | 1 | {CONFIG_DESCRIPTIONS['preference']} |" in body
    assert f"| `rl` | 3 | 1 | {CONFIG_DESCRIPTIONS['rl']} |" in body
    assert f"| `raw` | 2,500 | 1 | {CONFIG_DESCRIPTIONS['raw']} |" in body
    assert "Released under `Apache-2.0`. Prompts come from:" in body
    sources = body.index("| source | licence | prompts | link |")
    assert body[sources + 2 : sources + 5] == [
        r"| &lt;img src=x onerror=alert\(1\)&gt; | MIT | 10 | javascript:alert\(1\) |",
        r"| no\-url | apache\-2\.0 | 2 |  |",
        "",
    ]
    assert "2,500 judged samples, 1,600 verified (64.0%)." in body
    domains = body.index("| domain | samples |")
    assert body[domains + 2 : domains + 4] == [
        "| &lt;b&gt;code&lt;/b&gt; | 500 |",
        "| math | 2,000 |",
    ]
    models = body.index("| model | temperature | samples | verified | pass rate |")
    assert body[models + 2 : models + 4] == [
        r"| evil/&lt;script&gt;alert\(1\)&lt;/script&gt; | 0.6 | 2,000 | 1,500 | 75.0% |",
        r"| org/model\_a | 1 | 500 | 100 | 20.0% |",
    ]
    verifiers = body.index("| verifier | versions |")
    assert body[verifiers + 2 : verifiers + 4] == [r"| \`code\` | 2 |", "| math | 1, 3 |"]


def test_card_body_lists_left_out_sets_and_contamination_per_benchmark():
    body = lines(build_card(make_input()))
    assert "Prompt sets left out of this release:" in body
    assert (
        r"- \| col \| &lt;a href=x&gt;set&lt;/a&gt;: licence 'other' is not one known to allow "
        "this"
    ) in body
    start = body.index(
        "Decontamination: 4 closed prompts were left out for sharing a word 8-gram with a "
        "benchmark."
    )
    assert body[start + 1 : start + 4] == [r"- \*\*MATH\-500\*\*\]\(x\): 3", "- gpqa: 1", ""]


def test_card_body_credits_handles_with_counts_and_counts_anonymous_rows():
    body = lines(build_card(make_input()))
    start = body.index("Credited, by the handle each chose (samples in `raw`):")
    # Most samples first, then by handle.
    assert body[start + 1 : start + 6] == [
        "",
        "- alice (1,000)",
        "- bob (1,000)",
        r"- \[x\]\(javascript:alert\(1\)\) (200)",
        "",
    ]
    assert "300 samples come from contributors who chose to stay anonymous." in body
    assert "- anonymous (300)" not in body


def test_card_with_nobody_credited_and_nothing_left_out():
    stats = make_stats()
    stats.contributor_rows.clear()
    stats.contributor_rows["anonymous"] = 2_500
    card = build_card(make_input(stats=stats, left_out=[], contamination={}))
    assert "Credited, by the handle each chose" not in card.text
    assert "Prompt sets left out of this release:" not in card.text
    assert "2,500 samples come from contributors who chose to stay anonymous." in lines(card)


def test_card_names_the_reward_model_when_the_policy_has_one():
    plain = build_card(make_input()).text
    assert "- Ranking policy `r1-rejection-no-reward` version 2: verified first, then fewer " in (
        plain
    )
    ranked = build_card(
        make_input(policy=Policy(version=2, reward_model="org/rm`x`", reward_version=7))
    ).text
    assert (
        "- Ranking policy `r1-rejection` version 2: verified first, then reward model "
        "`org/rmx` v7, then fewer tokens; up to 4 samples per prompt for SFT; RL prompts with "
        "a pass rate strictly between 0.1 and 0.9."
    ) in ranked


def test_hostile_names_appear_only_escaped():
    text = build_card(make_input()).text
    for raw in (
        EVIL_MODEL,
        EVIL_HANDLE,
        EVIL_SET,
        EVIL_URL,
        EVIL_BENCHMARK,
        EVIL_DOMAIN,
        EVIL_VERIFIER,
        "<script",
        "<img",
        "<a ",
        "<b>",
        "](",
        "](x)",
        "alert(1)",
    ):
        assert raw not in text, raw
    for name in (EVIL_MODEL, EVIL_HANDLE, EVIL_SET, EVIL_URL, EVIL_BENCHMARK, EVIL_DOMAIN):
        assert md(name) in text, name


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, list]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, attrs))


def test_card_body_renders_without_links_images_or_scripts():
    markdown_it = pytest.importorskip("markdown_it")
    renderer = markdown_it.MarkdownIt("commonmark", {"html": True}).enable("table")
    html = renderer.render(build_card(make_input()).text)
    parser = _Tags()
    parser.feed(html)
    tags = {tag for tag, _ in parser.tags}
    assert tags <= {
        "h1", "h2", "p", "strong", "code", "pre", "table", "thead", "tbody", "tr", "th",
        "td", "ul", "li",
    }, tags  # fmt: skip
    # No attribute but the tables' alignment and the code block's language.
    assert {(tag, tuple(attrs)) for tag, attrs in parser.tags if attrs} == {
        ("code", (("class", "language-python"),)),
        ("td", (("style", "text-align:right"),)),
        ("th", (("style", "text-align:right"),)),
    }
    # A `|` in a name splits no cell.
    assert "<td>&lt;img src=x onerror=alert(1)&gt;</td>" in html
    assert "<td>javascript:alert(1)</td>" in html
    assert "<li>[x](javascript:alert(1)) (200)</li>" in html
    assert "<li>| col | &lt;a href=x&gt;set&lt;/a&gt;: licence" in html
    assert "<td>evil/&lt;script&gt;alert(1)&lt;/script&gt;</td>" in html
