"""Text cleaning shared by every input format: Unicode repair, whitespace, Markdown noise, PDF page boilerplate.

Cleaned text is a list of paragraphs joined by a blank line; inside a paragraph words are separated by single spaces.
QA answers go through the same `clean_text` so that they can be found verbatim in cleaned passages.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter

import ftfy

_SPACES = re.compile(r"[^\S\n]+")  # whitespace other than newlines (tabs, NBSP after NFKC, ...)
_BLANK_LINES = re.compile(r"\n\s*\n")
_HYPHEN_WRAP = re.compile(r"(?<=[a-z])-\n(?=[a-z])")  # "engi-\nneering": a word hyphenated at a PDF line end

# Markdown: block-level markers (whole lines) and inline syntax.
_FRONT_MATTER = re.compile(r"\A---\n.*?\n(?:---|\.\.\.)\n", re.S)
_FENCE = re.compile(r"^\s*(```|~~~)")
_ATX_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$")
_SETEXT_UNDERLINE = re.compile(r"^\s{0,3}(=+|-+)\s*$")
_RULE = re.compile(r"^\s{0,3}([-*_])(\s*\1){2,}\s*$")
_BULLET = re.compile(r"^\s*(?:[-*+]|\d{1,9}[.)])\s+")
_QUOTE = re.compile(r"^\s*(?:>\s?)+")
_TABLE_SEPARATOR = re.compile(r"^\s*\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?\s*$")
_LINK_DEFINITION = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*\S+")
_INLINE = [
    (re.compile(r"<!--.*?-->", re.S), ""),
    (re.compile(r"!\[([^\]]*)\]\([^)]*\)"), r"\1"),  # image: keep the alt text
    (re.compile(r"\[([^\]]+)\]\([^)]*\)"), r"\1"),  # link: keep the text
    (re.compile(r"\[([^\]]+)\]\[[^\]]*\]"), r"\1"),  # reference link
    (re.compile(r"<(https?://[^>\s]+)>"), r"\1"),  # autolink
    (re.compile(r"</?[A-Za-z][^>]*>"), ""),  # inline HTML tags
    (re.compile(r"`+([^`]+?)`+"), r"\1"),
    (re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1"), r"\2"),
    (re.compile(r"(?<![\w*])\*(?=\S)(.+?)(?<=\S)\*(?![\w*])"), r"\1"),
    (re.compile(r"(?<!\w)_(?=\S)(.+?)(?<=\S)_(?!\w)"), r"\1"),  # not inside snake_case words
    (re.compile(r"~~(.+?)~~"), r"\1"),
    (re.compile(r"\\([\\`*_{}\[\]()#+\-.!|>~])"), r"\1"),  # backslash escapes
]

# A line that is only a page number: "7", "- 7 -", "Page 7", "page 7 of 12", "7/12", "vii" (roman up to 39).
_PAGE_NUMBER = re.compile(
    r"^[-\s]*(?:page\s*)?(?:\d{1,5}(?:\s*(?:of|/)\s*\d{1,5})?|(?=[ivx])x{0,3}(?:ix|iv|v?i{0,3}))[-\s]*$", re.I)
_EDGE_LINES = 3  # headers and footers live in the first and last lines of a page


def repair_unicode(text: str) -> str:
    """Fix mojibake and odd characters (ftfy), then NFKC: ligatures, full-width forms and NBSP become plain text."""
    return unicodedata.normalize("NFKC", ftfy.fix_text(text))


def clean_text(text: str, *, lines_are_paragraphs: bool = False, markdown: bool = False,
               dehyphenate: bool = False) -> str:
    """Repair, strip syntax noise and normalise whitespace.

    Args:
        text: raw text.
        lines_are_paragraphs: every line is a paragraph (trafilatura's output); otherwise paragraphs are separated
            by blank lines and single newlines are line wraps.
        markdown: remove Markdown syntax, keeping heading, link and emphasis text.
        dehyphenate: join words hyphenated at a line end (PDF text).

    Returns:
        Paragraphs joined by "\\n\\n"; "" when nothing is left.
    """
    text = repair_unicode(text)
    if markdown:
        text = strip_markdown(text)
    if dehyphenate:
        text = _HYPHEN_WRAP.sub("", text)
    blocks = text.split("\n") if lines_are_paragraphs else _BLANK_LINES.split(text)
    paragraphs = (_SPACES.sub(" ", block.replace("\n", " ")).strip() for block in blocks)
    return "\n\n".join(p for p in paragraphs if p)


def clean_line(text: str) -> str:
    """`clean_text` on one line (titles, answers): all whitespace becomes single spaces."""
    return " ".join(repair_unicode(text).split())


def strip_markdown(text: str) -> str:
    """Markdown to plain text: headings, list items, table rows and quotes become their own paragraphs.

    Fence lines, rules, link definitions and table separators are dropped; fenced code is kept as text.
    """
    text = _FRONT_MATTER.sub("", text)
    out: list[str] = []
    for line in text.split("\n"):
        if _FENCE.match(line) or _LINK_DEFINITION.match(line) or _TABLE_SEPARATOR.match(line):
            continue
        if _RULE.match(line) or (_SETEXT_UNDERLINE.match(line) and out and out[-1].strip()):
            out.append("")  # a paragraph break (a setext underline ends its heading's paragraph)
            continue
        heading = _ATX_HEADING.match(line)
        if heading or _BULLET.match(line) or "|" in line:
            line = heading.group(1) if heading else _BULLET.sub("", line, count=1)
            line = " ; ".join(c.strip() for c in line.strip().strip("|").split("|")) if "|" in line else line
            out.extend(["", line, ""])  # its own paragraph, not glued to the next line
            continue
        out.append(_QUOTE.sub("", line))
    plain = "\n".join(out)
    for pattern, repl in _INLINE:
        plain = pattern.sub(repl, plain)
    return plain


def markdown_title(text: str) -> str:
    """The text of the first `# ` (level-1) heading, cleaned; "" when there is none."""
    for line in _FRONT_MATTER.sub("", text).split("\n"):
        if re.match(r"^\s{0,3}#\s+\S", line):
            return clean_line(strip_markdown(line))
    return ""


def drop_page_boilerplate(pages: list[str]) -> list[str]:
    """Remove running headers/footers and page numbers from the pages of one document.

    A line near the top or bottom of a page (within `_EDGE_LINES`) is boilerplate when it is a page number, or when
    the same line, digits ignored ("Report 2024 — page 3"), sits near the edge of at least half of the pages (and of
    two at least: a one-page document has no running header to tell apart from its content).

    Args:
        pages: the raw text of each page, lines separated by "\\n".

    Returns:
        The pages with those lines removed, in order.
    """
    split = [[line.strip() for line in page.split("\n")] for page in pages]
    split = [[line for line in lines if line] for lines in split]
    edges: Counter[str] = Counter()
    for lines in split:
        edges.update({_digitless(line) for line in lines[:_EDGE_LINES] + lines[-_EDGE_LINES:]})
    needed = max(2, math.ceil(len(pages) / 2))
    repeated = {line for line, count in edges.items() if count >= needed}
    kept_pages = []
    for lines in split:
        n = len(lines)
        kept = [line for i, line in enumerate(lines)
                if not ((i < _EDGE_LINES or i >= n - _EDGE_LINES)
                        and (_PAGE_NUMBER.match(line) or _digitless(line) in repeated))]
        kept_pages.append("\n".join(kept))
    return kept_pages


def _digitless(line: str) -> str:
    return re.sub(r"\d+", "#", line.casefold())
