"""Model Markdown to Telegram's HTML parse mode, and splitting it into messages that fit.

Telegram accepts a small set of tags and rejects a message whose tags do not nest or close
(400 "can't parse entities"), so the HTML is built from markdown-it's syntax tree rather than
patched together from text: the output is well formed for any input, including a half
streamed answer. Message length is counted as Telegram counts it, in UTF-16 code units of
the text left after entity parsing.
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from markdown_it.tree import SyntaxTreeNode

from bots.markdown import display_width, pad, parser

__all__ = [
    "TELEGRAM_TEXT_LIMIT",
    "escape",
    "html_chunks",
    "plain_chunks",
    "split_html",
    "to_html",
    "truncate",
    "visible_length",
]

TELEGRAM_TEXT_LIMIT = 4096
"""Most UTF-16 code units of visible text one Telegram message may carry."""

_HORIZONTAL_RULE = "———"
_BULLET = "•"
_INDENT = "  "
_LINK_SCHEMES = frozenset({"http", "https", "tg", "mailto"})
_LANGUAGE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_+#-]{0,31}")
_TAG = re.compile(r"<[^>]*>")
_TAG_NAME = re.compile(r"</?([A-Za-z-]+)")
_PRE = re.compile(r"(<pre>.*?</pre>)", re.DOTALL)
# A newline followed (past any tags) by more text on its line: it starts a line to indent.
_LINE_START = re.compile(r"\n(?=(?:<[^>]*>)*[^\n<])")
_EMPTY_ELEMENT = re.compile(r"<([a-z-]+)(?: [^>]*)?></\1>")
_STRONG_TAGS = {"strong": "b", "em": "i", "s": "s"}
# Characters that belong to the character before them; a hard cut never lands on one.
_JOINERS = frozenset("\u200d\ufe0e\ufe0f")


def escape(text: str) -> str:
    """Escape text (a user's message, a transcript) for Telegram's HTML parse mode."""
    return html.escape(text, quote=False)


def to_html(markdown: str) -> str:
    """Render a whole Markdown document as Telegram HTML, with no length limit.

    Any text, including a prefix of a document cut anywhere, gives well-formed HTML.
    """
    return _Renderer(plain=False).document(markdown)


def html_chunks(markdown: str, limit: int = TELEGRAM_TEXT_LIMIT) -> list[str]:
    """Render Markdown as Telegram HTML messages, each with at most ``limit`` visible units.

    Cuts fall between blocks where possible, else at a line break, else at a space, else
    anywhere between characters; tags open at a cut are closed and reopened in the next
    chunk, so every chunk is valid alone. Chunks with no visible text are dropped.
    """
    return _split(_Renderer(plain=False).document(markdown), limit)


def plain_chunks(markdown: str, limit: int = TELEGRAM_TEXT_LIMIT) -> list[str]:
    """Render Markdown as readable plain-text messages, cut by the rules of :func:`html_chunks`.

    The fallback for when Telegram rejects the formatting: markup is removed, link targets are
    written after their text, quotes are marked with ``> `` and code is kept verbatim.
    """
    return [
        _visible_text(chunk) for chunk in _split(_Renderer(plain=True).document(markdown), limit)
    ]


def split_html(html_text: str, limit: int = TELEGRAM_TEXT_LIMIT) -> list[str]:
    """Cut ready-made Telegram HTML (an escaped transcript in a tag) into messages by the
    rules of :func:`html_chunks`."""
    return _split(html_text, limit)


def truncate(text: str, limit: int) -> str:
    """``text`` shortened with "…" to at most ``limit`` UTF-16 units (a caption's limit),
    cut at a space when one is near the end."""
    if _utf16_length(text) <= limit:
        return text
    kept: list[str] = []
    used = 1  # the ellipsis
    for char in text:
        used += _units(char)
        if used > limit:
            break
        kept.append(char)
    cut = "".join(kept)
    space = cut.rfind(" ")
    if space >= len(cut) * 0.8:
        cut = cut[:space]
    return cut.rstrip() + "…"


def visible_length(html_text: str) -> int:
    """Count the UTF-16 code units of the text Telegram shows for this HTML."""
    return _utf16_length(_visible_text(html_text))


def _utf16_length(text: str) -> int:
    return len(text) + sum(1 for char in text if ord(char) > 0xFFFF)


def _visible_text(html_text: str) -> str:
    return html.unescape(_TAG.sub("", html_text))


def _safe_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    if parts.scheme.lower() not in _LINK_SCHEMES:
        return False
    if parts.scheme.lower() in ("http", "https", "tg"):
        return bool(parts.netloc)
    return bool(parts.path)


def _escape_attribute(value: str) -> str:
    return html.escape(value, quote=True).replace("&#x27;", "'")


def _prefix_lines(html_text: str, prefix: str) -> str:
    """Put ``prefix`` before every line after the first that has text, outside ``<pre>``."""
    parts = _PRE.split(html_text)
    return "".join(
        part if index % 2 else _LINE_START.sub("\n" + prefix, part)
        for index, part in enumerate(parts)
    )


def _quote_lines(html_text: str, marker: str) -> str:
    """Mark every line, code included, with ``marker`` as a plain-text quote."""
    return "\n".join(marker + line if line else marker.rstrip() for line in html_text.split("\n"))


class _Renderer:
    """Turns markdown-it's syntax tree into Telegram HTML (or tagged plain text).

    In plain mode the output still carries ``<pre>`` and formatting tags so the splitter
    can keep code intact; :func:`plain_chunks` strips them afterwards.
    """

    def __init__(self, *, plain: bool) -> None:
        self._plain = plain

    def document(self, markdown: str) -> str:
        root = SyntaxTreeNode(parser().parse(markdown))
        return self._blocks(root.children, in_quote=False, separator="\n\n")

    def _blocks(self, nodes: Iterable[SyntaxTreeNode], *, in_quote: bool, separator: str) -> str:
        rendered = (self._block(node, in_quote=in_quote) for node in nodes)
        return separator.join(text for text in rendered if text)

    def _block(self, node: SyntaxTreeNode, *, in_quote: bool) -> str:
        kind = node.type
        if kind == "paragraph":
            return self._inline_children(node, frozenset())
        if kind == "heading":
            title = self._inline_children(node, frozenset({"b"}))
            return f"<b>{title}</b>" if title else ""
        if kind in ("bullet_list", "ordered_list"):
            return self._list(node, in_quote=in_quote)
        if kind == "blockquote":
            return self._blockquote(node, in_quote=in_quote)
        if kind == "fence":
            return self._code(node.content, node.info)
        if kind == "code_block":
            return self._code(node.content, "")
        if kind == "hr":
            return _HORIZONTAL_RULE
        if kind == "table":
            return self._table(node)
        if node.children:
            return self._blocks(node.children, in_quote=in_quote, separator="\n\n")
        return escape(node.content.rstrip("\n"))

    def _blockquote(self, node: SyntaxTreeNode, *, in_quote: bool) -> str:
        inner = self._blocks(node.children, in_quote=True, separator="\n\n")
        if self._plain or in_quote:
            # Telegram cannot nest quotes, and plain text has no quote at all.
            return _quote_lines(inner, escape("> "))
        return f"<blockquote>{inner}</blockquote>" if inner else ""

    def _list(self, node: SyntaxTreeNode, *, in_quote: bool) -> str:
        ordered = node.type == "ordered_list"
        number = int(node.attrs.get("start", 1)) if ordered else 1
        tight = all(
            child.hidden
            for item in node.children
            for child in item.children
            if child.type == "paragraph"
        )
        separator = "\n" if tight else "\n\n"
        items = []
        for offset, item in enumerate(node.children):
            marker = f"{number + offset}." if ordered else _BULLET
            body = self._blocks(item.children, in_quote=in_quote, separator=separator)
            items.append(f"{marker} {_prefix_lines(body, _INDENT)}" if body else marker)
        return separator.join(items)

    def _code(self, content: str, info: str) -> str:
        code = escape(content.removesuffix("\n"))
        words = info.split(maxsplit=1)
        if words and _LANGUAGE.fullmatch(words[0]):
            return f'<pre><code class="language-{words[0]}">{code}</code></pre>'
        return f"<pre>{code}</pre>"

    def _table(self, node: SyntaxTreeNode) -> str:
        # Telegram has no tables: align the columns in monospace instead.
        rows = [row for section in node.children for row in section.children]
        if not rows:
            return ""
        aligns = [
            str(cell.attrs.get("style", "")).removeprefix("text-align:")
            for cell in rows[0].children
        ]
        texts = [[self._cell_text(cell) for cell in row.children] for row in rows]
        # markdown-it pads or trims body rows to the header's width; guard anyway.
        columns = len(aligns)
        texts = [(row + [""] * columns)[:columns] for row in texts]
        widths = [max(display_width(row[column]) for row in texts) for column in range(columns)]
        lines = [
            " | ".join(
                pad(text, width, align)
                for text, width, align in zip(row, widths, aligns, strict=True)
            ).rstrip()
            for row in texts
        ]
        lines.insert(1, "-+-".join("-" * width for width in widths))
        return f"<pre>{escape(chr(10).join(lines))}</pre>"

    def _cell_text(self, cell: SyntaxTreeNode) -> str:
        return " ".join(_visible_text(self._inline_children(cell, frozenset())).split())

    def _inline_children(self, node: SyntaxTreeNode, active: frozenset[str]) -> str:
        # Paragraphs, headings and cells hold one "inline" node with the actual content.
        return "".join(self._inline(child.children, active) for child in node.children)

    def _inline(self, nodes: Sequence[SyntaxTreeNode], active: frozenset[str]) -> str:
        return "".join(self._inline_node(node, active) for node in nodes)

    def _inline_node(self, node: SyntaxTreeNode, active: frozenset[str]) -> str:
        kind = node.type
        if kind == "text":
            return escape(node.content)
        if kind in ("softbreak", "hardbreak"):
            return "\n"
        if kind == "code_inline":
            # Telegram does not allow code inside a link; the link matters more.
            return escape(node.content) if "a" in active else f"<code>{escape(node.content)}</code>"
        if kind in _STRONG_TAGS:
            tag = _STRONG_TAGS[kind]
            inner = self._inline(node.children, active | {tag})
            return inner if tag in active or not inner else f"<{tag}>{inner}</{tag}>"
        if kind == "link":
            return self._link(str(node.attrs.get("href", "")), node.children, node.markup, active)
        if kind == "image":
            return self._link(str(node.attrs.get("src", "")), node.children, "", active)
        return escape(node.content)

    def _link(
        self, url: str, children: Sequence[SyntaxTreeNode], markup: str, active: frozenset[str]
    ) -> str:
        inner = self._inline(children, active | {"a"})
        safe = _safe_url(url)
        if not safe or "a" in active:
            return inner
        text = _visible_text(inner)
        if not text.strip():
            inner, text = escape(url), url
        if not self._plain:
            return f'<a href="{_escape_attribute(url)}">{inner}</a>'
        if markup == "autolink" or text in (url, url.removeprefix("mailto:")):
            return inner
        return f"{inner} ({escape(url)})"


@dataclass(frozen=True, slots=True)
class _Tag:
    raw: str
    name: str
    closing: bool


_Item = _Tag | str
"""A tag, or one visible character (unescaped)."""


def _items(html_text: str) -> list[_Item]:
    items: list[_Item] = []
    position = 0
    for match in _TAG.finditer(html_text):
        items.extend(html.unescape(html_text[position : match.start()]))
        raw = match.group()
        name = _TAG_NAME.match(raw)
        items.append(_Tag(raw, name.group(1) if name else "", raw.startswith("</")))
        position = match.end()
    items.extend(html.unescape(html_text[position:]))
    return items


def _units(char: str) -> int:
    return 2 if ord(char) > 0xFFFF else 1


def _replay(stack: list[_Tag], items: Sequence[_Item]) -> list[_Tag]:
    stack = list(stack)
    for item in items:
        if isinstance(item, _Tag):
            if item.closing:
                stack.pop()
            else:
                stack.append(item)
    return stack


def _find_cut(
    items: Sequence[_Item], start: int, stack: Sequence[_Tag], limit: int
) -> tuple[int, int]:
    """Choose where the chunk starting at ``start`` ends: (end of chunk, start of the next).

    Returns ``(len(items), len(items))`` when the rest fits.
    """
    depth = len(stack)
    used = 0
    block = line = space = -1
    index = start
    while index < len(items):
        item = items[index]
        if isinstance(item, _Tag):
            depth += -1 if item.closing else 1
            index += 1
            continue
        if item == "\n":
            line = index
            if depth == 0 and index + 1 < len(items) and items[index + 1] == "\n":
                block = index
        elif item == " ":
            space = index
        used += _units(item)
        if used > limit:
            break
        index += 1
    else:
        return len(items), len(items)
    for cut in (block, line, space):
        if cut > start:
            return cut, cut + 1
    cut = _hard_cut(items, start, index)
    return cut, cut


def _hard_cut(items: Sequence[_Item], start: int, index: int) -> int:
    """Step back from ``index`` so a cut does not part a character from its modifiers."""
    cut = index
    while cut > start and _clings(items, cut):
        cut -= 1
    if any(isinstance(item, str) for item in items[start:cut]):
        return cut
    return index


def _clings(items: Sequence[_Item], index: int) -> bool:
    """Whether the character at ``index`` belongs with the one before it (emoji sequences)."""
    item, before = items[index], items[index - 1]
    if isinstance(item, _Tag):
        return False
    return (
        bool(unicodedata.combining(item))
        or item in _JOINERS
        or 0x1F3FB <= ord(item) <= 0x1F3FF
        or before == "\u200d"
    )


def _render_items(items: Iterable[_Item]) -> str:
    return "".join(item.raw if isinstance(item, _Tag) else escape(item) for item in items)


def _split(html_text: str, limit: int) -> list[str]:
    if limit < 2:
        raise ValueError(f"limit must be at least 2 UTF-16 code units, not {limit}")
    items = _items(html_text)
    chunks: list[str] = []
    stack: list[_Tag] = []
    start = 0
    while start < len(items):
        end, resume = _find_cut(items, start, stack, limit)
        while end > start and items[end - 1] == "\n":
            end -= 1
        closing = _replay(stack, items[start:end])
        chunk = (
            "".join(tag.raw for tag in stack)
            + _render_items(items[start:end])
            + "".join(f"</{tag.name}>" for tag in reversed(closing))
        )
        chunk = _drop_empty_elements(chunk)
        if _visible_text(chunk).strip():
            chunks.append(chunk)
        stack = closing
        while resume < len(items) and items[resume] == "\n":
            resume += 1
        start = resume
    return chunks


def _drop_empty_elements(html_text: str) -> str:
    while True:
        tidy = _EMPTY_ELEMENT.sub("", html_text)
        if tidy == html_text:
            return tidy
        html_text = tidy
