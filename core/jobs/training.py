"""Reading a fine-tuning training file (JSON Lines of chat examples) and checking it against
OpenAI's chat fine-tuning format before anything is uploaded: JSON on every line, a
``messages`` list of system, user, assistant and tool messages, text content (or an
assistant's ``tool_calls``), ``weight`` 0 or 1 on assistant messages only, at least one
assistant message to learn from per example, no example over the base model's limit, and at
least ``MIN_EXAMPLES`` examples. Tokens are counted with the counter context building uses.
Every problem is reported by its line."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from core.conversation.tokens import MESSAGE_OVERHEAD
from core.errors import UserInputError
from core.jobs.problems import problems_by_line

MIN_EXAMPLES = 10
"""The fewest examples OpenAI fine-tunes on."""
ROLES = ("system", "user", "assistant", "tool")
MESSAGE_KEYS = frozenset({"role", "content", "name", "weight", "tool_calls", "tool_call_id"})
"""The keys a training message may have (the chat format's, and ``weight``)."""
EXAMPLE_KEYS = frozenset({"messages", "tools", "parallel_tool_calls"})
"""The keys an example may have besides its messages: the tools its assistant may call."""
MAX_FILE_BYTES = 512 * 1024 * 1024
"""The largest file OpenAI's Files API takes for fine-tuning."""


class TrainingFileError(UserInputError):
    """A training file that cannot be used; the message lists its problems by line."""


@dataclass(frozen=True, slots=True)
class TrainingSet:
    """What a valid training file holds: how many examples, and their tokens."""

    examples: int
    tokens: int


def check_training_file(
    data: bytes,
    count: Callable[[str], int],
    *,
    max_example_tokens: int | None = None,
    max_bytes: int = MAX_FILE_BYTES,
) -> TrainingSet:
    """Check the JSONL training file ``data``; raises ``TrainingFileError`` listing the
    problems by line (the first few: ``problems_by_line``), or saying it is over
    ``max_bytes``."""
    if len(data) > max_bytes:
        raise TrainingFileError(
            f"The training file is {len(data):,} bytes; OpenAI takes at most {max_bytes:,} bytes."
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise TrainingFileError("The training file is not UTF-8 text.") from None
    problems: list[str] = []
    examples = tokens = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        found, example_tokens = _check_line(line, count)
        if found:
            problems += [f"line {number}: {problem}" for problem in found]
            continue
        examples += 1
        tokens += example_tokens
        if max_example_tokens is not None and example_tokens > max_example_tokens:
            problems.append(
                f"line {number}: {example_tokens:,} tokens, more than the model's "
                f"{max_example_tokens:,} per example"
            )
    if not problems and examples < MIN_EXAMPLES:
        problems.append(
            f"the file has {examples} example{'s' if examples != 1 else ''}; "
            f"fine-tuning needs at least {MIN_EXAMPLES}"
        )
    if problems:
        raise TrainingFileError(
            problems_by_line("The training file has problems; nothing was uploaded:", problems)
        )
    return TrainingSet(examples, tokens)


def _check_line(line: str, count: Callable[[str], int]) -> tuple[list[str], int]:
    """The problems of one example, and its tokens when it has none."""
    try:
        item = json.loads(line)
    except ValueError:
        return ["not valid JSON"], 0
    if not isinstance(item, dict):
        return ['expected a JSON object with a "messages" list'], 0
    messages = item.get("messages")
    if not isinstance(messages, list) or not messages:
        return ['needs a "messages" list of chat messages'], 0
    problems = [f"unknown key {json.dumps(key)}" for key in item if key not in EXAMPLE_KEYS]
    tools = item.get("tools")
    if tools is not None and not isinstance(tools, list):
        problems.append('"tools" must be a list of tool definitions')
    # The tool definitions are part of what the model reads, so they are trained tokens too.
    tokens = count(json.dumps(tools)) if tools else 0
    learned = False
    for index, message in enumerate(messages, start=1):
        if not isinstance(message, dict):
            problems.append(f"message {index} is not an object")
            continue
        found, message_tokens = _check_message(index, message, count)
        problems += found
        tokens += message_tokens
        learned = learned or (message.get("role") == "assistant" and message.get("weight") != 0)
    if not learned:
        problems.append(
            "no assistant message to learn from: each example needs an answer (weight 1)"
        )
    return problems, tokens


def _check_message(
    index: int, message: dict[str, Any], count: Callable[[str], int]
) -> tuple[list[str], int]:
    """The problems of the ``index``-th message of an example, and its tokens."""
    problems = [
        f"message {index} has an unknown key {json.dumps(key)}"
        for key in message
        if key not in MESSAGE_KEYS
    ]
    role = message.get("role")
    if role not in ROLES:
        problems.append(
            f"message {index} has role {json.dumps(role)}; use system, user, assistant or tool"
        )
    if "weight" in message and (role != "assistant" or message["weight"] not in (0, 1)):
        problems.append(f"message {index}: weight must be 0 or 1, on assistant messages only")
    tool_calls = message.get("tool_calls")
    if tool_calls is not None and (role != "assistant" or not isinstance(tool_calls, list)):
        problems.append(f"message {index}: tool_calls must be a list, on assistant messages only")
    content = message.get("content")
    text = _text(content)
    if isinstance(content, list) and text is None:
        problems.append(f"message {index}: only non-empty text parts are supported in content")
    elif text is None and not (role == "assistant" and tool_calls):
        problems.append(f"message {index} has no text content")
    tokens = MESSAGE_OVERHEAD + (count(text) if text else 0)
    if tool_calls:
        tokens += count(json.dumps(tool_calls))
    return problems, tokens


def _text(content: object) -> str | None:
    """A message's text: a string, or a list of ``text`` parts; None if there is none."""
    if isinstance(content, str):
        return content if content.strip() else None
    if isinstance(content, list) and content:
        parts = [
            part.get("text")
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        ]
        if len(parts) == len(content) and all(isinstance(p, str) and p.strip() for p in parts):
            return "\n".join(str(p) for p in parts)
    return None
