"""The `math` template filter (thinkpool/templatetags/thinkpool_math.py): LaTeX in untrusted
text becomes MathML, and nothing in the text, the LaTeX or latex2mathml's output reaches the
page as live markup."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from django.template import Context, Template
from django.utils.safestring import SafeString

from thinkpool.templatetags import thinkpool_math
from thinkpool.templatetags.thinkpool_math import ATTRIBUTES, ELEMENTS, render_math, to_mathml


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))


def tags(html: str) -> list[tuple[str, list[tuple[str, str | None]]]]:
    parser = _Tags()
    parser.feed(html)
    parser.close()
    return parser.tags


@pytest.fixture(autouse=True)
def _no_cached_renderings():
    """Renderings are cached by the text's digest: each test starts without them."""
    from django.core.cache import cache

    cache.clear()


def assert_inert(html: str) -> None:
    """Every element is MathML from the allowlist, with allowlisted attributes only."""
    for tag, attrs in tags(html):
        assert tag in ELEMENTS, tag
        for name, _ in attrs:
            assert name in ATTRIBUTES and not name.startswith("on"), name


def test_plain_text_is_escaped():
    out = render_math('<b>bold</b> & "quotes" costs $5 and $10')
    assert isinstance(out, SafeString)
    assert out == "&lt;b&gt;bold&lt;/b&gt; &amp; &quot;quotes&quot; costs $5 and $10"


@pytest.mark.parametrize(
    ("text", "display"),
    [
        ("$x^2$", "inline"),
        ("$$x^2$$", "block"),
        (r"\(x^2\)", "inline"),
        (r"\[x^2\]", "block"),
    ],
)
def test_each_delimiter_renders_mathml(text, display):
    assert render_math(f"a {text} b") == (
        f'a <math display="{display}"><mrow><msup><mi>x</mi><mn>2</mn></msup></mrow></math> b'
    )


def test_math_among_text_keeps_the_text_around_it():
    out = render_math("Let $a<b$ and\n$$\\frac{1}{2}$$ hence <i>done</i>.")
    assert out.startswith('Let <math display="inline"><mrow><mi>a</mi><mo>&lt;</mo>')
    assert "<mfrac><mrow><mn>1</mn></mrow><mrow><mn>2</mn></mrow></mfrac>" in out
    assert out.endswith(" hence &lt;i&gt;done&lt;/i&gt;.")
    assert_inert(out)


def test_an_escaped_dollar_and_a_lone_dollar_stay_text():
    assert render_math(r"it costs \$3 and $ 4") == r"it costs \$3 and $ 4"


@pytest.mark.parametrize(
    "latex",
    [
        r"\text{<script>alert(1)</script>}",
        r"\text{<img src=x onerror=window.__pwned=1>}",
        r"\text{</mtext></math><img src=x onerror=alert(1)>}",
        r"\mathrm{\"><svg onload=alert(1)>}",
        r"\text{<!DOCTYPE x [<!ENTITY a 'b'>]>}",
        r"\text{<!-- x -->}",
    ],
)
def test_markup_inside_math_never_becomes_an_element(latex):
    out = render_math(f"before ${latex}$ after")
    assert_inert(out)
    assert "<script" not in out and "<img" not in out and "<svg" not in out
    assert "<!" not in out


def test_a_failed_or_unsafe_conversion_shows_the_escaped_source():
    out = render_math(r"$\text{<img src=x onerror=alert(1)>}$")
    assert out == r"$\text{&lt;img src=x onerror=alert(1)&gt;}$"
    assert to_mathml(r"\text{<script>x</script>}", display=False) is None
    assert to_mathml(r"\frac{", display=False) is None  # latex2mathml fails
    assert render_math(r"so $x^$ & $\left(<b>$") == r"so $x^$ &amp; $\left(&lt;b&gt;$"


@pytest.mark.parametrize(
    ("latex", "dropped"),
    [
        (r"\href{javascript:alert(1)}{x}", "href"),
        (r"\style{background:url(x)}{y}", "style"),
        (r"\color{red} z", "mathcolor"),
        (r"\hspace{\"onmouseover=alert(1)}", "onmouseover"),
    ],
)
def test_attributes_off_the_list_or_with_odd_values_are_dropped(latex, dropped):
    out = str(to_mathml(latex, display=False))
    assert out.startswith("<math")
    assert dropped not in out and "javascript" not in out
    assert_inert(out)


def test_kept_attributes_are_presentational_and_escaped():
    out = str(to_mathml(r"\boxed{4}\,\left(x\right)", display=True))
    assert '<menclose notation="box">' in out
    assert '<mspace width="0.167em"></mspace>' in out
    assert 'stretchy="true"' in out
    assert_inert(out)


def test_long_pieces_and_too_many_pieces_stay_source(monkeypatch):
    long = "x" * (thinkpool_math.MAX_PIECE + 1)
    assert render_math(f"$${long}$$") == f"$${long}$$"
    monkeypatch.setattr(thinkpool_math, "MAX_PIECES", 2)
    out = render_math("$a$ $b$ $c$")
    assert out.count("<math") == 2 and out.endswith(" $c$")


def test_pathological_input_stays_text():
    text = "\\[" * 5000 + "$" * 5000 + "\\(" * 5000
    out = render_math(text)
    assert "<" not in re.sub(r"</?m\w*[^>]*>", "", out)


def test_a_text_renders_at_most_its_budget_of_latex(monkeypatch):
    # Public pages render this: a completion full of costly math renders MAX_LATEX
    # characters of it, the rest shows as source.
    monkeypatch.setattr(thinkpool_math, "MAX_LATEX", 10)
    out = render_math("$abcd$ $efgh$ $ijkl$")
    assert out.count("<math") == 2 and out.endswith(" $ijkl$")


def test_a_rendering_is_cached_and_rendered_once(monkeypatch):
    calls = []
    real = thinkpool_math.to_mathml
    monkeypatch.setattr(
        thinkpool_math, "to_mathml", lambda latex, **kw: calls.append(latex) or real(latex, **kw)
    )
    first = render_math("$x^2$ and <b>")
    second = render_math("$x^2$ and <b>")
    assert first == second and isinstance(second, SafeString)
    assert "&lt;b&gt;" in second and second.count("<math") == 1
    assert calls == ["x^2"]


def test_a_broken_cache_costs_the_rendering_not_the_page(monkeypatch):
    from django.core.cache import cache

    def down(*args, **kwargs):
        raise ConnectionError("cache down")

    monkeypatch.setattr(cache, "get", down)
    monkeypatch.setattr(cache, "set", down)
    assert render_math("$y$ <i>").count("<math") == 1


def test_the_filter_in_a_template_escapes_and_renders():
    template = Template("{% load thinkpool_math %}<p>{{ text|math }}</p>")
    html = template.render(Context({"text": "<script>x</script> $y_1$"}))
    assert html == (
        "<p>&lt;script&gt;x&lt;/script&gt; "
        '<math display="inline"><mrow><msub><mi>y</mi><mn>1</mn></msub></mrow></math></p>'
    )


def test_none_and_non_strings():
    assert render_math(None) == ""
    assert render_math(42) == "42"
