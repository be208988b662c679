"""Problems of a file the user sent (a batch's prompts, a training file), reported by line
in one message: the first few, then how many more."""

from __future__ import annotations

from collections.abc import Sequence

MAX_PROBLEMS_SHOWN = 10
"""How many problems one message lists."""


def problems_by_line(heading: str, problems: Sequence[str]) -> str:
    """``heading``, then the first ``MAX_PROBLEMS_SHOWN`` of ``problems`` (each naming its
    line), one a line, and ``… and N more`` for the rest."""
    shown = problems[:MAX_PROBLEMS_SHOWN]
    lines = [heading, *(f"• {problem}" for problem in shown)]
    if more := len(problems) - len(shown):
        lines.append(f"• … and {more} more")
    return "\n".join(lines)
