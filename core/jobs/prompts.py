"""Reading a batch's prompts — lines after ``/batch``, or a ``.txt`` (one prompt a line),
``.jsonl`` (a ``prompt`` field per line) or ``.csv`` (a ``prompt`` column) file, other
fields kept as labels — and writing the Batch API's JSONL request file from them, one
line at a time, so memory stays flat in the number of prompts."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from core.errors import UserInputError
from core.jobs.problems import problems_by_line
from core.models.registry import ModelSpec, ModeSpec

MAX_REQUESTS = 50_000
"""The Batch API's limit on requests per batch."""
MAX_FILE_BYTES = 200 * 1024 * 1024
"""The Batch API's limit on the size of a batch's input file."""
SUFFIXES = (".txt", ".jsonl", ".csv")
ENDPOINTS = {"responses": "/v1/responses", "chat": "/v1/chat/completions"}


class BatchInputError(UserInputError):
    """A batch file or prompt list that cannot be sent; the message lists the problems."""


@dataclass(frozen=True, slots=True)
class Prompt:
    """One prompt of a batch with its line in the source and its labels."""

    line: int
    text: str
    labels: dict[str, str] = field(default_factory=dict)


def read_prompts(data: bytes, filename: str) -> Iterator[Prompt]:
    """The prompts of a file (by its suffix) or of the text after ``/batch`` (``filename``
    empty); blank lines are skipped. Raises ``BatchInputError`` for a file it cannot read."""
    suffix = Path(filename).suffix.lower()
    if filename and suffix not in SUFFIXES:
        raise BatchInputError(
            f"I can take a batch as a .txt, .jsonl or .csv file, not {Path(filename).name!r}."
        )
    try:
        text = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8-sig", newline="")
        if suffix == ".jsonl":
            yield from _jsonl(text)
        elif suffix == ".csv":
            yield from _csv(text)
        else:
            for number, line in enumerate(text, start=1):
                if line.strip():
                    yield Prompt(number, line.strip())
    except UnicodeDecodeError:
        raise BatchInputError("That file is not UTF-8 text.") from None


def _jsonl(text: IO[str]) -> Iterator[Prompt]:
    for number, line in enumerate(text, start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError:
            raise BatchInputError(f"line {number}: not valid JSON.") from None
        if not isinstance(item, dict) or not isinstance(item.get("prompt"), str):
            raise BatchInputError(f'line {number}: needs a "prompt" text field.')
        labels = {str(k): _label(v) for k, v in item.items() if k != "prompt"}
        yield Prompt(number, item["prompt"].strip(), labels)


def _csv(text: IO[str]) -> Iterator[Prompt]:
    reader = csv.DictReader(text)
    if reader.fieldnames is None or "prompt" not in reader.fieldnames:
        raise BatchInputError('The CSV file needs a header row with a "prompt" column.')
    for row in reader:
        prompt = row.get("prompt") or ""
        extra = row.pop(None, None) or []  # the cells of a row longer than the header
        if not prompt.strip() and not any((v or "").strip() for v in [*row.values(), *extra]):
            continue  # a blank row
        labels = {k: v or "" for k, v in row.items() if k != "prompt"}
        yield Prompt(reader.line_num, prompt.strip(), labels)


def _label(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class BuiltBatch:
    """A request file written for the Batch API, and what was counted while writing it."""

    path: Path
    endpoint: str
    requests: int
    input_tokens: int
    output_cap: int
    size: int
    labels: dict[str, dict[str, str]]
    """Labels by request number, only for prompts that have any."""


def build_requests(
    prompts: Iterator[Prompt],
    path: Path,
    *,
    model: ModelSpec,
    mode: ModeSpec,
    output_cap: int,
    count_tokens: Callable[[str], int],
) -> BuiltBatch:
    """Write one request line per prompt to ``path`` (custom ids ``1``, ``2``, … in the
    order submitted), counting input tokens with ``count_tokens``; raises
    ``BatchInputError`` with the problems by line (empty prompts, too many, too large)."""
    problems: list[str] = []
    requests = 0
    input_tokens = 0
    size = 0
    labels: dict[str, dict[str, str]] = {}
    instructions_tokens = count_tokens(mode.system_prompt)
    with path.open("w", encoding="utf-8") as out:
        for prompt in prompts:
            if not prompt.text:
                problems.append(f"line {prompt.line}: the prompt is empty.")
                continue
            requests += 1
            if requests > MAX_REQUESTS:
                raise BatchInputError(
                    f"A batch takes at most {MAX_REQUESTS:,} prompts; this one has more."
                )
            custom_id = str(requests)
            if prompt.labels:
                labels[custom_id] = prompt.labels
            line = json.dumps(
                {
                    "custom_id": custom_id,
                    "method": "POST",
                    "url": ENDPOINTS[model.api],
                    "body": _body(model, mode, prompt.text, output_cap),
                },
                ensure_ascii=False,
            )
            size += len(line.encode()) + 1
            if size > MAX_FILE_BYTES:
                raise BatchInputError("The batch would be over the Batch API's 200 MB limit.")
            out.write(line + "\n")
            input_tokens += instructions_tokens + count_tokens(prompt.text)
    if problems:
        raise BatchInputError(problems_by_line("I can't send that batch:", problems))
    if not requests:
        raise BatchInputError(
            "There are no prompts to send. Put one prompt a line after /batch, or send a "
            ".txt, .jsonl or .csv file with /batch as its caption."
        )
    return BuiltBatch(path, ENDPOINTS[model.api], requests, input_tokens, output_cap, size, labels)


def _body(model: ModelSpec, mode: ModeSpec, prompt: str, output_cap: int) -> dict[str, Any]:
    """The request body the model's API takes, as the gateway sends it for a turn."""
    if model.api == "responses":
        return {
            "model": model.id,
            "instructions": mode.system_prompt,
            "input": prompt,
            "max_output_tokens": output_cap,
            "store": False,
        }
    return {
        "model": model.id,
        "messages": [
            {"role": "system", "content": mode.system_prompt},
            {"role": "user", "content": prompt},
        ],
        "max_completion_tokens": output_cap,
    }


def prompt_of(body: dict[str, Any]) -> str:
    """The prompt of a request line's body (either API)."""
    if isinstance(body.get("input"), str):
        return str(body["input"])
    messages = body.get("messages") or []
    return str(messages[-1].get("content", "")) if messages else ""
