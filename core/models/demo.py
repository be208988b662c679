"""The demo model: the ``LLMGateway`` port answered on this machine, without a key, so that
anyone can watch every feature work before paying for a model (``--demo``).

It understands no language. It streams a labelled answer word by word, calls the
calculator when a message holds arithmetic, the clock for the time or date, and the image
tool when asked to draw; it describes pictures from their pixels and answers voice notes
with what the demo transcriber heard.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from collections.abc import AsyncIterator, Sequence

from core.media.demo_media import describe_picture
from core.models.llm import (
    ChatTurn,
    Completion,
    ContextItem,
    LLMEvent,
    LLMRequest,
    TextChunk,
    ToolCall,
    ToolOutput,
    Usage,
)

LABEL = "(demo model)"
CALCULATOR = "calculator"
CLOCK = "current_time"
DRAW = "generate_image"
WORD_DELAY_SECONDS = 0.02
SCAN_CHARS = 1000
"""How much of a message is searched for arithmetic (the search is quadratic in length)."""

_ARITHMETIC = re.compile(r"[-+(]*\d[\d.,\s]*(?:[-+*/%^\u00d7\u00f7][-+(\s]*\d[\d.,\s)]*)+")
_WHEN = re.compile(r"\b(time|date|day|today|clock)\b", re.IGNORECASE)
_DRAWING = re.compile(r"\b(?:draw|paint|sketch)\b(?:\s+me)?\s*(.*)", re.IGNORECASE | re.DOTALL)
_HEARD = "(demo transcript:"


class DemoGateway:
    """Streams the demo model's answers; ``word_delay`` paces the words like a model."""

    def __init__(self, *, timezone: str = "UTC", word_delay: float = WORD_DELAY_SECONDS) -> None:
        self._timezone = timezone
        self._word_delay = word_delay
        self._ids = itertools.count(1)

    async def stream(self, request: LLMRequest) -> AsyncIterator[LLMEvent]:
        """Answer ``request``: tool calls, or text in small pieces ending in a completion."""
        words_in = sum(len(_text(item).split()) for item in request.items)
        words_in += len(request.instructions.split())
        calls = self._tool_calls(request)
        if calls:
            yield Completion("", tool_calls=calls, usage=Usage(words_in, 0, len(calls)))
            return
        answer = await self._answer(request.items)
        for piece in re.findall(r"\S+\s*", answer):
            await asyncio.sleep(self._word_delay)
            yield TextChunk(piece)
        yield Completion(answer, usage=Usage(words_in, 0, len(answer.split())))

    def _tool_calls(self, request: LLMRequest) -> tuple[ToolCall, ...]:
        """The tools the newest message asks for, unless they have answered already."""
        if not request.items or not isinstance(request.items[-1], ChatTurn):
            return ()
        text = request.items[-1].text
        offered = {tool.name for tool in request.tools}
        wanted: list[tuple[str, dict[str, str]]] = []
        drawing = _DRAWING.search(text)
        if DRAW in offered and drawing:
            wanted.append((DRAW, {"prompt": drawing.group(1).strip(" .!?") or "a sunny day"}))
        sums = _ARITHMETIC.search(text[:SCAN_CHARS])
        if CALCULATOR in offered and sums and not drawing:
            expression = sums.group().strip().replace(",", "").replace("^", "**")
            expression = expression.replace("\u00d7", "*").replace("\u00f7", "/")
            wanted.append((CALCULATOR, {"expression": expression}))
        if CLOCK in offered and _WHEN.search(text) and not drawing:
            wanted.append((CLOCK, {"timezone": self._timezone}))
        return tuple(
            ToolCall(f"demo_call_{next(self._ids)}", name, json.dumps(arguments))
            for name, arguments in wanted
        )

    async def _answer(self, items: Sequence[ContextItem]) -> str:
        """The text answer: what the tools said, else about the newest message."""
        if items and isinstance(items[-1], ToolOutput):
            return f"{LABEL} {_tool_report(items)}"
        turn = next((i for i in reversed(items) if isinstance(i, ChatTurn)), None)
        if turn is None:
            return f"{LABEL} Hello!"
        parts: list[str] = []
        for number, image in enumerate(turn.images, start=1):
            described = await asyncio.to_thread(describe_picture, image)
            which = f"Picture {number}" if len(turn.images) > 1 else "Your picture"
            parts.append(f"{which} is {described}.")
        if _HEARD in turn.text:
            parts.append(
                "I got your voice note; the demo can't recognise speech, it only measures "
                f"the recording: {turn.text.strip()}"
            )
        elif not turn.images:
            quoted = " ".join(turn.text.split())
            quoted = quoted if len(quoted) <= 200 else quoted[:199] + "…"
            parts.append(
                f"You said: “{quoted}”. I'm a stand-in built into Switchboard and don't "
                "understand language, but everything around me is real: try “what is "
                "12*7?”, “what time is it?”, “draw a red house”, a picture, a voice note, "
                "/voice on, /model or /usage. Set OPENAI_API_KEY (and drop --demo) to talk "
                "to a real model."
            )
        return f"{LABEL} {' '.join(parts)}"


def _tool_report(items: Sequence[ContextItem]) -> str:
    """What the tools of the last round said, one sentence each."""
    outputs: list[ToolOutput] = []
    for item in reversed(items):
        if not isinstance(item, ToolOutput):
            break
        outputs.insert(0, item)
    calls = {item.call_id: item for item in items if isinstance(item, ToolCall)}
    sentences = []
    for output in outputs:
        call = calls.get(output.call_id)
        name = call.name if call else "a tool"
        arguments = json.loads(call.arguments) if call else {}
        if output.output.startswith("error:"):
            sentences.append(f"The {name} tool failed: {output.output.removeprefix('error:')}")
        elif name == CALCULATOR:
            sentences.append(
                f"The calculator says {arguments.get('expression')} = {output.output}."
            )
        elif name == CLOCK:
            sentences.append(f"The clock says it is {output.output}.")
        elif name == DRAW:
            sentences.append("Here is my drawing (simple shapes: the demo can't really draw).")
        else:
            sentences.append(f"The {name} tool answered: {output.output}")
    return " ".join(sentences)


def _text(item: ContextItem) -> str:
    if isinstance(item, ChatTurn):
        return item.text
    return item.arguments if isinstance(item, ToolCall) else item.output
