"""What the channels' Markdown renderers share: the parser of model Markdown, and the
monospace widths that line up table columns."""

from __future__ import annotations

import functools
import unicodedata

from markdown_it import MarkdownIt


class _Markdown(MarkdownIt):
    """CommonMark with tables and strikethrough, raw HTML off, every link target parsed.

    Raw HTML is off so tags the model writes show as text. Link targets are all accepted
    here and judged by each renderer, so an unsafe link still shows its text rather than
    its Markdown source.
    """

    def __init__(self) -> None:
        super().__init__("commonmark", {"html": False})
        self.enable(["table", "strikethrough"])

    def validateLink(self, url: str) -> bool:
        return True


@functools.cache
def parser() -> MarkdownIt:
    """The one Markdown parser (built once; parsing does not change it)."""
    return _Markdown()


def display_width(text: str) -> int:
    """Columns ``text`` takes in a monospace font: wide characters 2, marks and joiners 0."""
    return sum(
        0
        if unicodedata.category(char) in ("Mn", "Me", "Cf")
        else 2
        if unicodedata.east_asian_width(char) in ("W", "F")
        else 1
        for char in text
    )


def pad(text: str, width: int, align: str) -> str:
    """``text`` padded to ``width`` columns, aligned ``left``, ``right`` or ``center``."""
    gap = width - display_width(text)
    if align == "right":
        return " " * gap + text
    if align == "center":
        return " " * (gap // 2) + text + " " * (gap - gap // 2)
    return text + " " * gap
