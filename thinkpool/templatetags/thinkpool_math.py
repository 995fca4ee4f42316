"""`{{ text|math }}`: untrusted text with its LaTeX rendered as MathML, everything else escaped.

The text is split on `$$…$$`, `\\[…\\]`, `\\(…\\)` and `$…$`; each piece of math goes through
latex2mathml, and what comes out is *not* trusted either: latex2mathml copies `\\text{…}`,
`&` and the arguments of `\\href`, `\\style` and the like into its output unescaped. So its
output is tokenised (html.parser: no entities are expanded, no DTD is read) and written out
again from an allowlist with format_html: MathML elements only (any other element, a comment
or declaration, tags that do not nest, or a failed conversion shows the escaped LaTeX source
instead), attributes only from a list of presentational ones with plain values (others are
dropped), and every text escaped. Nothing from the sample reaches the page unescaped.

Bounded: each piece of math at most MAX_PIECE characters; per text at most MAX_PIECES pieces
and MAX_LATEX characters of LaTeX in all are rendered (the rest stay escaped source: a
rendering costs up to tens of milliseconds for nested fractions, and the pages that use this
are public), and the patterns never look further than that. The result is cached by the
text's digest, so a page viewed again renders nothing.
"""

from __future__ import annotations

import hashlib
import logging
import re
from html.parser import HTMLParser
from typing import Any

from django import template
from django.core.cache import cache
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

logger = logging.getLogger(__name__)

register = template.Library()

MAX_PIECE = 2000
MAX_PIECES = 100
MAX_LATEX = 8000
CACHE_S = 24 * 3600

# Presentation MathML (MathML Core and the elements latex2mathml writes). No `annotation-xml`
# (it can embed HTML), no `maction`, no `semantics`.
ELEMENTS = frozenset(
    {
        "math", "mrow", "mi", "mn", "mo", "ms", "mtext", "mspace", "msub", "msup", "msubsup",
        "munder", "mover", "munderover", "mfrac", "msqrt", "mroot", "mstyle", "mtable", "mtr",
        "mtd", "mlabeledtr", "mpadded", "mphantom", "menclose", "mfenced", "merror",
        "mmultiscripts", "mprescripts", "none",
    }
)  # fmt: skip
ATTRIBUTES = frozenset(
    {
        "display", "mathvariant", "stretchy", "fence", "separator", "lspace", "rspace",
        "accent", "accentunder", "movablelimits", "columnalign", "rowalign", "columnspacing",
        "rowspacing", "columnlines", "rowlines", "frame", "linethickness", "width", "height",
        "depth", "voffset", "minsize", "maxsize", "symmetric", "largeop", "form", "notation",
        "displaystyle", "scriptlevel", "align", "open", "close", "separators", "linebreak",
        "columnspan", "rowspan",
    }
)  # fmt: skip
# Attribute values are lengths, keywords and fence characters: nothing else is kept.
_VALUE = re.compile(r"[\w .,+\-%#()\[\]{}|]{0,64}")

_MATH = re.compile(
    rf"(?<!\\)\$\$(?P<dd>.{{1,{MAX_PIECE}}}?)(?<!\\)\$\$"
    rf"|\\\[(?P<db>.{{1,{MAX_PIECE}}}?)\\\]"
    rf"|\\\((?P<ip>.{{1,{MAX_PIECE}}}?)\\\)"
    # $…$: on one line, not opened or closed next to a space, not closed before a digit
    # ("costs $5 and $10" stays text).
    rf"|(?<![\\$])\$(?![\s$])(?P<id>[^\n$]{{1,{MAX_PIECE}}}?)(?<![\s\\])\$(?!\d)",
    re.DOTALL,
)


class _Unsafe(ValueError):
    pass


class _Sanitiser(HTMLParser):
    """Re-writes latex2mathml's output from the allowlists: a stream of start tags, end tags
    and text, checked to nest properly, and written out with format_html (every text and
    attribute value escaped). Anything else (a comment, a declaration, an element not on the
    list, a tag that does not close what is open) raises _Unsafe."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[SafeString | str] = []
        self.open: list[str] = []

    def _tag(self, tag: str, attrs: list[tuple[str, str | None]]) -> SafeString:
        if tag not in ELEMENTS:
            raise _Unsafe(tag)
        if not self.open and (tag != "math" or self.parts):
            raise _Unsafe("not one <math> element")
        kept = sorted(
            (name, value)
            for name, value in attrs
            if name in ATTRIBUTES and value is not None and _VALUE.fullmatch(value)
        )
        return format_html("<{}{}>", tag, format_html_join("", ' {}="{}"', kept))

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.parts.append(self._tag(tag, attrs))
        self.open.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.parts.append(self._tag(tag, attrs))
        self.parts.append(format_html("</{}>", tag))  # MathML in HTML has no void elements

    def handle_endtag(self, tag: str) -> None:
        if not self.open or self.open.pop() != tag:
            raise _Unsafe(f"</{tag}>")
        self.parts.append(format_html("</{}>", tag))

    def handle_data(self, data: str) -> None:
        if not self.open:
            raise _Unsafe("text outside <math>")
        self.parts.append(data)  # a str: escaped when joined

    def handle_comment(self, data: str) -> None:
        raise _Unsafe("a comment")

    def handle_decl(self, decl: str) -> None:
        raise _Unsafe("a declaration")

    def handle_pi(self, data: str) -> None:
        raise _Unsafe("a processing instruction")

    def unknown_decl(self, data: str) -> None:
        raise _Unsafe("a declaration")

    def result(self) -> SafeString:
        self.close()
        if self.open or not self.parts:
            raise _Unsafe("unclosed elements")
        return format_html_join("", "{}", ((part,) for part in self.parts))


def to_mathml(latex: str, *, display: bool) -> SafeString | None:
    """Safe MathML markup for one piece of LaTeX, or None if it cannot be rendered safely."""
    if not latex.strip() or len(latex) > MAX_PIECE:
        return None
    from latex2mathml.converter import convert

    try:
        sanitiser = _Sanitiser()
        sanitiser.feed(convert(latex, display="block" if display else "inline"))
        return sanitiser.result()
    except Exception:  # a failed conversion, an unsafe or malformed output, a too deep one
        return None


def render_math(text: Any) -> SafeString:
    """The text escaped, with each piece of math in it rendered as sanitised MathML (cached
    by the text's digest; an unreachable cache costs the rendering, not the page)."""
    source = "" if text is None else str(text)
    if "$" not in source and "\\" not in source:
        return format_html("{}", source)
    key = "thinkpool:math:" + hashlib.sha256(source.encode("utf-8", "surrogatepass")).hexdigest()
    try:
        cached = cache.get(key)
    except Exception:  # the cache backend's own errors (Redis down): render without it
        cached = None
    if cached is not None:
        return mark_safe(cached)  # noqa: S308 - our own sanitised output, stored by us below
    rendered = _render(source)
    try:
        cache.set(key, str(rendered), CACHE_S)
    except Exception:
        logger.warning("math rendering not cached (the cache is unreachable)")
    return rendered


def _render(source: str) -> SafeString:
    parts: list[SafeString | str] = []  # a str is escaped when joined, a SafeString is ours
    last = 0
    pieces = budget = 0
    for match in _MATH.finditer(source):
        parts.append(source[last : match.start()])
        last = match.end()
        markup = None
        latex = match.group(match.lastgroup or "id")
        if pieces < MAX_PIECES and budget + len(latex) <= MAX_LATEX:
            markup = to_mathml(latex, display=match.lastgroup in ("dd", "db"))
            pieces += 1
            budget += len(latex)
        parts.append(markup if markup is not None else match.group(0))
    parts.append(source[last:])
    return format_html_join("", "{}", ((part,) for part in parts))


@register.filter(name="math")
def math_filter(text: Any) -> SafeString:
    return render_math(text)
