"""The LLM gateway port: a neutral, streaming view of a model call with tools."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from core.media.ports import PreparedImage
from core.models.registry import ModelSpec

MIN_OUTPUT_TOKENS = 16
"""The fewest output tokens a call may be capped to (the Responses API refuses fewer)."""


@dataclass(frozen=True, slots=True)
class ChatTurn:
    """A user or assistant message in the context sent to the model, with any pictures the
    user sent in it (sent inline, as data URLs)."""

    role: Literal["user", "assistant"]
    text: str
    images: tuple[PreparedImage, ...] = ()


@dataclass(frozen=True, slots=True)
class ToolCall:
    """The model's request to run a tool; ``arguments`` is the JSON text it produced."""

    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class ToolOutput:
    """A tool's result, sent back to the model for ``call_id``."""

    call_id: str
    output: str


ContextItem = ChatTurn | ToolCall | ToolOutput


@dataclass(frozen=True, slots=True)
class ToolSchema:
    """A function the model may call, as JSON schema."""

    name: str
    description: str
    parameters: dict[str, object]
    strict: bool


@dataclass(frozen=True, slots=True)
class LLMRequest:
    """One model call: instructions, context items and the tools on offer; the answer is
    cut off after ``max_output_tokens`` (at least ``MIN_OUTPUT_TOKENS``) when it is set."""

    model: ModelSpec
    instructions: str
    items: Sequence[ContextItem]
    tools: Sequence[ToolSchema] = ()
    max_output_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts the API reported for one call."""

    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0


@dataclass(frozen=True, slots=True)
class TextChunk:
    """Reply text as it streams in."""

    text: str


@dataclass(frozen=True, slots=True)
class Completion:
    """The end of one call: the full text, any tool calls, reported usage and request id."""

    text: str
    tool_calls: tuple[ToolCall, ...] = ()
    usage: Usage | None = None
    request_id: str | None = None


LLMEvent = TextChunk | Completion


class LLMGateway(Protocol):
    """Streams one model call; raises ``core.errors.UpstreamError`` subclasses on failure.

    The stream ends with exactly one ``Completion``. Retries happen inside the gateway and
    only before any text was yielded.
    """

    def stream(self, request: LLMRequest) -> AsyncIterator[LLMEvent]:
        """Start the call and yield its events."""
