"""Model Markdown to Slack mrkdwn, and splitting it into section blocks and messages that fit.

Slack renders whatever it is sent and has no escape for its markers, so text patched into
mrkdwn can show stray asterisks, swallow the rest of a reply into a code block or notify a
whole channel. Here the output is built from markdown-it's syntax tree as lines of styled
spans, each line closing its own formatting: any input, including a half streamed answer,
gives balanced fences and whole links, and a long reply can be cut between any two lines.

Where mrkdwn cannot say what Markdown says:

- Slack reads ``*``, ``_`` and ``~`` as markers only where they do not touch a letter, so a
  zero-width space goes between a marker and a letter or digit outside it: ``foo**bar**``
  still shows "bar" in bold.
- A backtick cannot be escaped, so literal backticks in text and inline code become a
  modifier letter grave accent (U+02CB), and runs of them in code blocks are parted by
  zero-width spaces: no text can open or close code.
- ``@here``, ``@channel``, ``@everyone`` and ``@group`` get a word joiner (U+2060) after the
  ``@``: Slack turns them into mentions in text that is not verbatim, and a model's reply must
  never notify a channel. ``<!here>`` cannot form because ``<`` is always escaped.
- Tables become a code block with aligned columns; images become links to their URL.
"""

from __future__ import annotations

import itertools
import re
import string
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from urllib.parse import quote, urlsplit

from markdown_it.tree import SyntaxTreeNode

from bots.markdown import display_width, pad, parser

__all__ = [
    "BLOCKS_PER_MESSAGE",
    "MESSAGE_TEXT_LIMIT",
    "SECTION_TEXT_LIMIT",
    "escape",
    "fallback_text",
    "literal",
    "message_blocks",
    "mrkdwn_chunks",
    "plain_chunks",
    "to_mrkdwn",
]

SECTION_TEXT_LIMIT = 3000
"""Most characters in the text of one section block."""

MESSAGE_TEXT_LIMIT = 12000
"""Most mrkdwn characters put in one Slack message, across its blocks."""

BLOCKS_PER_MESSAGE = 50
"""Most blocks Slack accepts in one message."""

_ZERO_WIDTH_SPACE = "\u200b"
_WORD_JOINER = "\u2060"
_ZERO_WIDTH_JOINER = "\u200d"
_TICK_STAND_IN = "\u02cb"
_BAR_STAND_IN = "\u2223"
_RULE = "———"
_BULLETS = ("•", "◦", "▪")
_MARKERS = {"strong": "*", "em": "_", "s": "~"}
_FENCE = "```"
_ELLIPSIS = "…"
# Reserved URL characters kept as they are; "|", "<", ">", quotes and spaces are encoded.
_URL_SAFE = "!#$%&'()*+,-./:;=?@[]_~"
_MASS_MENTION = re.compile(r"@(?=here|channel|everyone|group)", re.IGNORECASE)
_TICK_BEFORE_TICK = re.compile(r"`(?=`)")
_ENTITY = re.compile(r"(&(?:amp|lt|gt);)")
# What may touch a marker and leave it a marker for Slack.
_BOUNDARY = frozenset(string.whitespace + string.punctuation) - frozenset("*_~`")
# Enough for one character in every style inside code, escaped ("&amp;"), or a code line
# with its two fences.
_MIN_LIMIT = 16


def escape(text: str) -> str:
    """Escape text (a user's message, a transcript) for mrkdwn: ``&``, ``<`` and ``>`` only."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def literal(text: str) -> str:
    """Plain text (a picture's caption, a transcript's notification line) for a field Slack
    reads as mrkdwn: escaped, with mass mentions kept quiet."""
    return _quiet(escape(text))


def to_mrkdwn(markdown: str) -> str:
    """Render a whole Markdown document as Slack mrkdwn, with no length limit.

    Any text, including a prefix of a document cut anywhere, gives balanced code fences,
    well-formed links and no mass mention.
    """
    return _serialize(_render(markdown), plain=False)


def mrkdwn_chunks(markdown: str, limit: int = SECTION_TEXT_LIMIT) -> list[str]:
    """Render Markdown as mrkdwn pieces of at most ``limit`` characters, each valid alone.

    Cuts fall between paragraphs where possible, else between lines, else at a space, else
    between grapheme clusters; never inside a link or an entity (a link longer than ``limit``
    shows as its text). A code block that is cut is closed and reopened. Length is counted in
    code points, as Slack counts characters. Empty or blank Markdown gives no pieces; a
    ``limit`` below 16 is refused.
    """
    return _chunks(_render(markdown), limit, plain=False)


def plain_chunks(markdown: str, limit: int = SECTION_TEXT_LIMIT) -> list[str]:
    """Render Markdown as readable plain text, cut by the rules of :func:`mrkdwn_chunks`.

    The fallback for when Slack rejects the blocks: markers and fences are removed, link
    targets follow their text, quotes are marked with ``>``. Slack still parses text fields,
    so ``&``, ``<`` and ``>`` are escaped and mass mentions stay quiet.
    """
    return _chunks(_render(markdown), limit, plain=True)


def message_blocks(markdown: str) -> list[list[dict[str, object]]]:
    """Render Markdown as Slack messages, each a list of mrkdwn section blocks.

    Each message has at most :data:`BLOCKS_PER_MESSAGE` blocks and
    :data:`MESSAGE_TEXT_LIMIT` characters of text; empty Markdown gives no messages.
    """
    return [
        [{"type": "section", "text": {"type": "mrkdwn", "text": chunk}} for chunk in message]
        for message in _messages(mrkdwn_chunks(markdown))
    ]


def fallback_text(markdown: str, limit: int = 3000) -> str:
    """Summarise Markdown as one line of plain text for a message's ``text`` (notifications).

    Longer text is cut at a word boundary, or failing that between grapheme clusters, and
    ends with "…"; the result has at most ``limit`` (at least 1) characters.
    """
    if limit < 1:
        raise ValueError(f"limit must be at least 1 character, not {limit}")
    text = " ".join(_serialize(_render(markdown), plain=True).split())
    if len(text) <= limit:
        return text
    end = text.rfind(" ", 0, limit)
    if end <= 0:
        end = _boundary_before(text, limit - len(_ELLIPSIS))
    return text[:end] + _ELLIPSIS


@dataclass(frozen=True, slots=True)
class _Span:
    """Unescaped text with one look: inside ``styles`` (outermost first), code, or a link."""

    text: str
    styles: tuple[str, ...] = ()
    code: bool = False
    url: str = ""


@dataclass(frozen=True, slots=True)
class _Line:
    """One output line: its spans, quote depth, list marker or indentation, and code block.

    ``block`` numbers the code block the line belongs to (0 outside code), so neighbouring
    code blocks stay apart and a chunk knows where to put its fences.
    """

    spans: tuple[_Span, ...] = ()
    quote: int = 0
    lead: str = ""
    block: int = 0

    @property
    def blank(self) -> bool:
        """A paragraph break: no text, no list marker, not code."""
        return not (self.spans or self.lead or self.block)


def _render(markdown: str) -> list[_Line]:
    return _Renderer().document(markdown)


class _Renderer:
    """Turns markdown-it's block structure into lines; numbers the code blocks it meets."""

    def __init__(self) -> None:
        self._code_blocks = itertools.count(1)

    def document(self, markdown: str) -> list[_Line]:
        root = SyntaxTreeNode(parser().parse(markdown))
        return self._blocks(root.children, loose=True, depth=0)

    def _blocks(self, nodes: Iterable[SyntaxTreeNode], *, loose: bool, depth: int) -> list[_Line]:
        lines: list[_Line] = []
        for node in nodes:
            block = self._block(node, depth)
            if block and lines and loose:
                lines.append(_Line())
            lines.extend(block)
        return lines

    def _block(self, node: SyntaxTreeNode, depth: int) -> list[_Line]:
        kind = node.type
        if kind in ("paragraph", "heading"):
            # Slack has no headings: a heading is a bold line.
            return _paragraph(node, ("*",) if kind == "heading" else ())
        if kind in ("bullet_list", "ordered_list"):
            return self._list(node, depth)
        if kind == "blockquote":
            inner = self._blocks(node.children, loose=True, depth=depth)
            return [replace(line, quote=line.quote + 1) for line in inner]
        if kind in ("fence", "code_block"):
            # Slack ignores a fence's language, so the info string is dropped.
            return self._code(node.content.removesuffix("\n").split("\n"))
        if kind == "hr":
            return [_Line((_Span(_RULE),))]
        # With raw HTML off, the only block type left is a table.
        return self._code(_table(node))

    def _list(self, node: SyntaxTreeNode, depth: int) -> list[_Line]:
        ordered = node.type == "ordered_list"
        first = int(node.attrs.get("start", 1)) if ordered else 1
        tight = all(
            child.hidden
            for item in node.children
            for child in item.children
            if child.type == "paragraph"
        )
        lines: list[_Line] = []
        for number, item in enumerate(node.children, first):
            marker = f"{number}." if ordered else _BULLETS[depth % len(_BULLETS)]
            if lines and not tight:
                lines.append(_Line())
            body = self._blocks(item.children, loose=not tight, depth=depth + 1)
            lines.extend(_hang(body, f"{marker} "))
        return lines

    def _code(self, texts: list[str]) -> list[_Line]:
        if not "".join(texts).strip():
            return []
        block = next(self._code_blocks)
        return [_Line(_tidy([_Span(text)]), block=block) for text in texts]


def _paragraph(node: SyntaxTreeNode, styles: tuple[str, ...]) -> list[_Line]:
    lines: list[list[_Span]] = [[]]
    for inline in node.children:
        _inline(inline.children, styles, lines)
    return [_Line(_tidy(spans)) for spans in lines if any(span.text.strip() for span in spans)]


def _inline(
    nodes: Iterable[SyntaxTreeNode], styles: tuple[str, ...], lines: list[list[_Span]]
) -> None:
    """Append inline content to ``lines``; every line break starts a new line."""
    for node in nodes:
        kind = node.type
        if kind in ("softbreak", "hardbreak"):
            lines.append([])
        elif kind in _MARKERS:
            marker = _MARKERS[kind]
            # Slack cannot nest a style in itself; once is enough.
            _inline(node.children, styles if marker in styles else (*styles, marker), lines)
        elif kind in ("link", "image"):
            attribute = "src" if kind == "image" else "href"
            url = _link_target(str(node.attrs.get(attribute, "")))
            if url is None:
                _inline(node.children, styles, lines)
            else:
                lines[-1].append(_Span(_label(node.children) or url, styles, url=url))
        else:
            lines[-1].append(_Span(node.content, styles, code=kind == "code_inline"))


def _label(nodes: Iterable[SyntaxTreeNode]) -> str:
    """The text of inline nodes on one line, without formatting (link labels, table cells)."""
    return " ".join(_text_of(nodes).split())


def _text_of(nodes: Iterable[SyntaxTreeNode]) -> str:
    return "".join(
        " "
        if node.type in ("softbreak", "hardbreak")
        else _text_of(node.children)
        if node.children
        else node.content
        for node in nodes
    )


def _link_target(url: str) -> str | None:
    """The URL as it may stand in ``<url|label>``, or None if it is not safe to link."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if (scheme in ("http", "https") and parts.netloc) or (scheme == "mailto" and parts.path):
        return quote(url, safe=_URL_SAFE)
    return None


def _hang(lines: list[_Line], lead: str) -> list[_Line]:
    """Put a list marker before an item's first line and indent its other lines under it."""
    if not lines:
        return [_Line(lead=lead.rstrip())]
    indent = " " * len(lead)
    first, *rest = lines
    return [
        replace(first, lead=lead + first.lead),
        *(line if line.blank else replace(line, lead=indent + line.lead) for line in rest),
    ]


def _table(node: SyntaxTreeNode) -> list[str]:
    """A table as lines of monospace text: columns padded to their display width."""
    rows = [row for section in node.children for row in section.children]
    aligns = [
        str(cell.attrs.get("style", "")).removeprefix("text-align:") for cell in rows[0].children
    ]
    # markdown-it gives every row as many cells as the header has.
    cells = [[_label(cell.children) for cell in row.children] for row in rows]
    widths = [max(display_width(row[column]) for row in cells) for column in range(len(aligns))]
    lines = [
        "  ".join(
            pad(text, width, align) for text, width, align in zip(row, widths, aligns, strict=True)
        ).rstrip()
        for row in cells
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return lines


def _tidy(spans: Iterable[_Span]) -> tuple[_Span, ...]:
    """Drop empty spans, merge neighbours that look alike (never links), quieten @here."""
    merged: list[_Span] = []
    alike = itertools.groupby(
        (span for span in spans if span.text), key=lambda span: (span.url, span.styles, span.code)
    )
    for (url, styles, code), group in alike:
        if url:
            merged.extend(_Span(_quiet(span.text), styles, url=url) for span in group)
        else:
            merged.append(_Span(_quiet("".join(span.text for span in group)), styles, code))
    return tuple(merged)


def _quiet(text: str) -> str:
    return _MASS_MENTION.sub("@" + _WORD_JOINER, text)


# --- Writing lines out ---------------------------------------------------------------------


def _serialize(lines: Sequence[_Line], *, plain: bool) -> str:
    parts: list[str] = []
    for index, line in enumerate(lines):
        fenced = bool(line.block) and not plain
        if fenced and (index == 0 or lines[index - 1].block != line.block):
            parts.append(_opening_fence(line))
        parts.append(_text(line, plain=plain))
        if fenced and (index + 1 == len(lines) or lines[index + 1].block != line.block):
            parts.append(_closing_fence(line))
    return "\n".join(parts)


def _cost(previous: _Line | None, line: _Line, *, plain: bool) -> int:
    """Characters ``line`` adds to :func:`_serialize`'s output after ``previous``.

    The first line of a code block pays for both of its fences.
    """
    cost = len(_text(line, plain=plain)) + (previous is not None)
    if line.block and not plain and (previous is None or previous.block != line.block):
        cost += len(_opening_fence(line)) + len(_closing_fence(line)) + 2
    return cost


def _quote_marks(line: _Line, *, plain: bool) -> str:
    if plain:
        return "&gt; " * line.quote
    if not line.quote:
        return ""
    # Slack cannot nest quotes: deeper levels show as text, except in code, which must start
    # a line and would show them as code.
    return "> " if line.block else "> " + "&gt; " * (line.quote - 1)


def _opening_fence(line: _Line) -> str:
    return _quote_marks(line, plain=False) + line.lead + _FENCE


def _closing_fence(line: _Line) -> str:
    return _quote_marks(line, plain=False) + _FENCE


def _text(line: _Line, *, plain: bool) -> str:
    """The line as sent, without the fences around a code block."""
    marks = _quote_marks(line, plain=plain)
    if line.block and not plain:
        code = escape("".join(span.text for span in line.spans))
        return marks + _TICK_BEFORE_TICK.sub("`" + _ZERO_WIDTH_SPACE, code)
    body = "".join(map(_plain_span, line.spans)) if plain else _mrkdwn_spans(line.spans)
    text = marks + line.lead + body
    return text if line.block else text.rstrip()


def _plain_span(span: _Span) -> str:
    text = escape(span.text)
    if span.url and span.text not in (span.url, span.url.removeprefix("mailto:")):
        return f"{text} ({escape(span.url)})"
    return text


def _mrkdwn_spans(spans: Sequence[_Span]) -> str:
    """Spans as mrkdwn: markers opened and closed around runs, glued to no letter."""
    tokens: list[tuple[str, str]] = []  # ("open" | "close" | "text", text)
    stack: tuple[str, ...] = ()
    for span in (*spans, _Span("")):
        shared = 0
        while shared < min(len(stack), len(span.styles)) and stack[shared] == span.styles[shared]:
            shared += 1
        tokens.extend(("close", marker) for marker in reversed(stack[shared:]))
        tokens.extend(("open", marker) for marker in span.styles[shared:])
        stack = span.styles
        if span.url:
            tokens.append(("text", _mrkdwn_link(span)))
        elif span.code:
            tokens += [("open", "`"), ("text", _untick(span.text)), ("close", "`")]
        elif span.text:
            tokens.append(("text", _untick(span.text)))
    out: list[str] = []
    for index, (kind, text) in enumerate(tokens):
        if kind == "open" and _sticks(tokens, index - 1, -1):
            out.append(_ZERO_WIDTH_SPACE)
        out.append(text)
        if kind == "close" and _sticks(tokens, index + 1, 0):
            out.append(_ZERO_WIDTH_SPACE)
    return "".join(out)


def _sticks(tokens: Sequence[tuple[str, str]], index: int, side: int) -> bool:
    """Whether token ``index`` is text whose character on ``side`` would glue to a marker."""
    if not 0 <= index < len(tokens):
        return False
    kind, text = tokens[index]
    return kind == "text" and text[side] not in _BOUNDARY


def _untick(text: str) -> str:
    return escape(text).replace("`", _TICK_STAND_IN)


def _mrkdwn_link(span: _Span) -> str:
    target = escape(span.url)
    if span.text == span.url:
        return f"<{target}>"
    # The first "|" ends the target; a stand-in keeps any in the label from moving it.
    return f"<{target}|{_untick(span.text).replace('|', _BAR_STAND_IN)}>"


# --- Cutting into chunks and messages ------------------------------------------------------


def _chunks(lines: list[_Line], limit: int, *, plain: bool) -> list[str]:
    if limit < _MIN_LIMIT:
        raise ValueError(f"limit must be at least {_MIN_LIMIT} characters, not {limit}")
    lines = list(lines)
    chunks: list[str] = []
    start = 0
    while start < len(lines):
        if lines[start].blank:
            start += 1
            continue
        end, size = start, 0
        while end < len(lines) and _floor(lines[end]) <= limit - size:
            size += _cost(lines[end - 1] if end > start else None, lines[end], plain=plain)
            if size > limit:
                break
            end += 1
        if end == start:
            lines[start : start + 1] = _split_line(lines[start], limit, plain=plain)
            continue
        if end < len(lines):
            # Prefer the last paragraph break; else cut after the last line that fits.
            end = next((index for index in range(end - 1, start, -1) if lines[index].blank), end)
        if any(_shows_text(line) for line in lines[start:end]):
            chunks.append(_serialize(lines[start:end], plain=plain))
        start = end
    return chunks


def _floor(line: _Line) -> int:
    """A cheap lower bound of a line's cost, so a very long line is not written out to learn
    that it does not fit."""
    return len("".join(span.text for span in line.spans).rstrip())


def _shows_text(line: _Line) -> bool:
    return bool(line.lead.strip()) or any(span.text.strip() for span in line.spans)


def _split_line(line: _Line, limit: int, *, plain: bool) -> list[_Line]:
    """Cut a line too long for a chunk into a head that fits and the rest.

    If not one grapheme fits beside the line's quote marks and list marker, those go on a
    line of their own (and a list marker becomes text if even that line is too long); if a
    single grapheme cluster or link is still too long, it is cut between code points (a link
    becomes its text).
    """
    units, rest = _units(line.spans, limit + 1)
    if not units:
        # Nothing but marks, and they do not fit: keep a list marker as text.
        return [_Line(_tidy([_Span(line.lead.strip())]))]
    count = _fitting(line, units, limit, plain=plain)
    if count:
        return _cut(line, units, rest, count)
    marks = [replace(line, spans=(), block=0)] if line.quote or line.lead else []
    bare = replace(line, quote=0, lead="")
    count = _fitting(bare, units, limit, plain=plain)
    if not count:
        first = units[0]
        units[:1] = [_Span(char, first.styles, first.code) for char in first.text]
        count = max(1, _fitting(bare, units, limit, plain=plain))
    return marks + _cut(bare, units, rest, count)


def _units(spans: Sequence[_Span], most: int) -> tuple[list[_Span], list[_Span]]:
    """The first ``most`` pieces a line may be cut between (grapheme clusters, whole links),
    and the spans after them; only as much of a long line is taken apart as one cut needs."""
    units: list[_Span] = []
    for index, span in enumerate(spans):
        if span.url:
            units.append(span)
        else:
            clusters, left = _clusters(span.text, most - len(units))
            units.extend(_Span(cluster, span.styles, span.code) for cluster in clusters)
            if left:
                return units, [replace(span, text=left), *spans[index + 1 :]]
        if len(units) == most:
            return units, list(spans[index + 1 :])
    return units, []


def _fitting(line: _Line, units: Sequence[_Span], limit: int, *, plain: bool) -> int:
    """How many leading units fit in one chunk as ``line`` (0 if not even one)."""
    low, high = 0, min(len(units), limit)
    while low < high:
        middle = (low + high + 1) // 2
        head = replace(line, spans=_tidy(units[:middle]))
        if _cost(None, head, plain=plain) <= limit:
            low = middle
        else:
            high = middle - 1
    return low


def _cut(line: _Line, units: Sequence[_Span], rest: Sequence[_Span], count: int) -> list[_Line]:
    """Cut ``line`` at the last space within its first ``count`` units, else after them."""
    if count >= len(units):
        return [replace(line, spans=_tidy([*units, *rest]))]
    # Code keeps the space it is cut after; text drops it, and the spaces after it. Either
    # way the head needs more than indentation.
    keep = 1 if line.block else 0
    indent = next((index for index, unit in enumerate(units) if not _is_space(unit)), count)
    space = next((index for index in range(count - keep, indent, -1) if _is_space(units[index])), 0)
    end, resume = (space + keep, space + 1) if space else (count, count)
    while not line.block and resume < len(units) and _is_space(units[resume]):
        resume += 1
    head = replace(line, spans=_tidy(units[:end]))
    tail = _tidy([*units[resume:], *rest])
    if not tail:
        return [head]
    return [head, replace(line, spans=tail, lead=" " * len(line.lead))]


def _is_space(unit: _Span) -> bool:
    return unit.text == " " and not unit.url


def _clusters(text: str, most: int) -> tuple[list[str], str]:
    """The first ``most`` grapheme clusters of ``text`` (close to UAX #29 for emoji, marks
    and flags), and the text after them."""
    clusters: list[str] = []
    for position, char in enumerate(text):
        if clusters and _continues(clusters[-1], char):
            clusters[-1] += char
        elif len(clusters) == most:
            return clusters, text[position:]
        else:
            clusters.append(char)
    return clusters, ""


def _continues(cluster: str, char: str) -> bool:
    code = ord(char)
    return (
        unicodedata.category(char) in ("Mn", "Mc", "Me")  # marks, variation selectors
        or char == _ZERO_WIDTH_JOINER
        or cluster.endswith(_ZERO_WIDTH_JOINER)
        or 0x1F3FB <= code <= 0x1F3FF  # skin tones
        or 0xE0020 <= code <= 0xE007F  # tags, as in subdivision flags
        or (len(cluster) == 1 and _regional(cluster) and _regional(char))  # a flag's pair
    )


def _regional(char: str) -> bool:
    return 0x1F1E6 <= ord(char) <= 0x1F1FF


def _boundary_before(text: str, end: int) -> int:
    """The last place at or before ``end`` that parts no entity and no grapheme cluster."""
    pieces = (
        piece
        for part in _ENTITY.split(text)
        for piece in ([part] if _ENTITY.fullmatch(part) else _clusters(part, len(part))[0])
    )
    return max((stop for stop in itertools.accumulate(map(len, pieces)) if stop <= end), default=0)


def _messages(chunks: Iterable[str]) -> list[list[str]]:
    """Group chunks, in order, into messages within Slack's per-message limits."""
    messages: list[list[str]] = []
    size = 0
    for chunk in chunks:
        if (
            not messages
            or len(messages[-1]) == BLOCKS_PER_MESSAGE
            or size + len(chunk) > MESSAGE_TEXT_LIMIT
        ):
            messages.append([])
            size = 0
        messages[-1].append(chunk)
        size += len(chunk)
    return messages
