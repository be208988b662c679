"""Benchmark: CPU per streamed model call, the openai SDK's typed events against reading the
same stream as plain JSON (what ``core.models.openai_gateway`` does), with a 100-item context.

    python -m bench.sdk_stream_parsing
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable

from openai import AsyncOpenAI

from bench.common import API_KEY, fake_openai_process, table

CALLS = 300
CONTEXT = [
    {"role": "user" if i % 2 == 0 else "assistant", "content": "the quick brown fox " * 6}
    for i in range(100)
]


async def measure(base_url: str) -> list[list[object]]:
    client = AsyncOpenAI(api_key=API_KEY, base_url=base_url, max_retries=0)
    body = {"input": CONTEXT, "instructions": "Be brief."}

    async def sdk_typed_input() -> None:
        stream = await client.responses.create(
            model="bench", stream=True, input=CONTEXT, instructions="Be brief."
        )
        async with stream:
            async for _ in stream:
                pass

    async def sdk_typed_events() -> None:
        stream = await client.responses.create(model="bench", stream=True, extra_body=body)
        async with stream:
            async for _ in stream:
                pass

    async def plain_json() -> None:
        async with client.responses.with_streaming_response.create(
            model="bench", stream=True, extra_body=body
        ) as response:
            async for line in response.iter_lines():
                if line.startswith("data:"):
                    json.loads(line[5:])

    variants: list[tuple[str, Callable[[], Awaitable[None]]]] = [
        ("SDK transforms the input and types the events", sdk_typed_input),
        ("input as extra_body, SDK types the events", sdk_typed_events),
        ("input as extra_body, events read as JSON (Switchboard)", plain_json),
    ]
    rows: list[list[object]] = []
    for name, call in variants:
        for _ in range(20):
            await call()
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(CALLS):
            await call()
        rows.append(
            [
                name,
                (time.process_time() - cpu) / CALLS * 1000,
                (time.perf_counter() - wall) / CALLS * 1000,
            ]
        )
    await client.close()
    return rows


def main() -> None:
    with fake_openai_process() as base_url:
        rows = asyncio.run(measure(base_url))
    print(table(["variant", "CPU ms/call", "wall ms/call"], rows))


if __name__ == "__main__":
    main()
