"""Reading a fine-tuning training file (JSON Lines of chat examples) and checking it before
anything is uploaded: JSON on every line, a ``messages`` list of system, user and assistant
messages with text, at least one assistant message per example, at least ``MIN_EXAMPLES``
examples; tokens counted with the counter context building uses. Every problem is reported
by its line."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from core.conversation.tokens import MESSAGE_OVERHEAD
from core.errors import UserInputError

MIN_EXAMPLES = 10
"""The fewest examples OpenAI fine-tunes on."""
ROLES = ("system", "user", "assistant")
MAX_PROBLEMS_SHOWN = 10


class TrainingFileError(UserInputError):
    """A training file that cannot be used; the message lists its problems by line."""


@dataclass(frozen=True, slots=True)
class TrainingSet:
    """What a valid training file holds: how many examples, their tokens, the largest."""

    examples: int
    tokens: int
    largest: int
    """Tokens of the longest example."""


def check_training_file(
    data: bytes, count: Callable[[str], int], *, max_example_tokens: int | None = None
) -> TrainingSet:
    """Check the JSONL training file ``data``; raises ``TrainingFileError`` listing the
    problems by line (the first ``MAX_PROBLEMS_SHOWN`` of them)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise TrainingFileError("The training file is not UTF-8 text.") from None
    problems: list[str] = []
    examples = tokens = largest = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        found, example_tokens = _check_line(line, count)
        if found:
            problems += [f"line {number}: {problem}" for problem in found]
            continue
        examples += 1
        tokens += example_tokens
        largest = max(largest, example_tokens)
        if max_example_tokens is not None and example_tokens > max_example_tokens:
            problems.append(
                f"line {number}: {example_tokens} tokens, more than the model's "
                f"{max_example_tokens} per example"
            )
    if not problems and examples < MIN_EXAMPLES:
        problems.append(
            f"the file has {examples} example{'s' if examples != 1 else ''}; "
            f"fine-tuning needs at least {MIN_EXAMPLES}"
        )
    if problems:
        shown = problems[:MAX_PROBLEMS_SHOWN]
        more = len(problems) - len(shown)
        lines = [f"• {problem}" for problem in shown]
        if more:
            lines.append(f"• … and {more} more")
        raise TrainingFileError(
            "The training file has problems; nothing was uploaded:\n" + "\n".join(lines)
        )
    return TrainingSet(examples, tokens, largest)


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
    problems: list[str] = []
    tokens = 0
    for index, message in enumerate(messages, start=1):
        if not isinstance(message, dict):
            problems.append(f"message {index} is not an object")
            continue
        role = message.get("role")
        if role not in ROLES:
            problems.append(
                f"message {index} has role {json.dumps(role)}; use system, user or assistant"
            )
        content = message.get("content")
        if not isinstance(content, str) or not content.strip():
            problems.append(f"message {index} has no text content")
            continue
        tokens += count(content) + MESSAGE_OVERHEAD
    if not any(isinstance(m, dict) and m.get("role") == "assistant" for m in messages):
        problems.append("no assistant message: each example needs the answer to learn")
    return problems, tokens
