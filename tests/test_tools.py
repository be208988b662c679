"""Function-calling tools (SPEC §5): derived schemas, safe running, operator tool modules,
and the built-in current-time and calculator tools."""

from __future__ import annotations

import asyncio
import json
import sys
import textwrap
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Literal

import pytest
from pydantic import Field

from core.errors import ConfigError, ToolError
from core.models.llm import ToolCall, ToolOutput
from core.tools.builtin import builtin_tools
from core.tools.toolbox import MAX_TOOL_OUTPUT, Tool, ToolRegistry, load_tool_modules, tool


class FixedClock:
    """A clock stopped at 2024-03-10 12:00 UTC, a Sunday."""

    def now(self) -> datetime:
        return datetime(2024, 3, 10, 12, 0, 0, tzinfo=UTC)


@tool
async def forecast(
    city: Annotated[str, Field(description="City name, such as Lisbon")],
    days: int,
    metric: bool,
    threshold: float,
    tags: list[str],
    kind: Literal["rain", "sun"],
) -> dict[str, object]:
    """Forecast the weather
    for a city."""
    return {"city": city, "days": days, "kind": kind}


@tool(name="greet")
def greeting(name: str, punctuation: str = "!", times: int | None = None) -> str:
    return f"Hello, {name}{punctuation}" * (times or 1)


@tool
def failing() -> str:
    """Always fails with a message that must not reach the model."""
    raise RuntimeError("database password is hunter2")


@tool
def refusing() -> str:
    """Fails on purpose with a message for the model."""
    raise ToolError("the shop is closed on Sundays")


@tool
def chatty() -> str:
    """Returns more text than the model is given."""
    return "x" * (MAX_TOOL_OUTPUT + 500)


def call(name: str, arguments: str, call_id: str = "call-1") -> ToolCall:
    return ToolCall(call_id=call_id, name=name, arguments=arguments)


async def run(registry: ToolRegistry, name: str, arguments: str) -> tuple[str, bool]:
    output, ok = await registry.run(call(name, arguments))
    assert output.call_id == "call-1"
    return output.output, ok


# --- schemas -------------------------------------------------------------------------------


def test_schema_derives_types_descriptions_and_strictness() -> None:
    schema = forecast.schema()

    assert schema.name == "forecast"
    assert schema.description == "Forecast the weather\nfor a city."
    assert schema.strict is True
    assert schema.parameters == {
        "type": "object",
        "properties": {
            "city": {"type": "string", "description": "City name, such as Lisbon"},
            "days": {"type": "integer"},
            "metric": {"type": "boolean"},
            "threshold": {"type": "number"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "kind": {"type": "string", "enum": ["rain", "sun"]},
        },
        "required": ["city", "days", "metric", "threshold", "tags", "kind"],
        "additionalProperties": False,
    }


def test_schema_with_optional_parameters_is_not_strict() -> None:
    schema = greeting.schema()

    assert schema.name == "greet"
    assert schema.description == "greet"
    assert schema.strict is False
    assert schema.parameters["required"] == ["name"]
    assert schema.parameters["additionalProperties"] is False
    properties = schema.parameters["properties"]
    assert isinstance(properties, dict)
    assert set(properties) == {"name", "punctuation", "times"}


def test_schema_is_json_serialisable_without_titles() -> None:
    text = json.dumps(forecast.schema().parameters)

    assert '"title"' not in text


def test_registry_lists_schemas_for_known_names_only() -> None:
    registry = ToolRegistry([forecast, greeting])

    assert registry.names() == ["forecast", "greet"]
    assert [s.name for s in registry.schemas(["greet", "nope", "forecast"])] == [
        "greet",
        "forecast",
    ]


def test_two_tools_with_one_name_are_a_config_error() -> None:
    with pytest.raises(ConfigError, match="greet"):
        ToolRegistry([greeting, greeting])


# --- running -------------------------------------------------------------------------------


async def test_run_good_call_returns_json_of_a_non_string_result() -> None:
    registry = ToolRegistry([forecast])
    arguments = json.dumps(
        {
            "city": "Lisbon",
            "days": 3,
            "metric": True,
            "threshold": 0.5,
            "tags": ["a"],
            "kind": "sun",
        }
    )

    output, ok = await registry.run(call("forecast", arguments, call_id="call-7"))

    assert ok
    assert output == ToolOutput("call-7", json.dumps({"city": "Lisbon", "days": 3, "kind": "sun"}))


async def test_run_sync_tool_with_defaults() -> None:
    registry = ToolRegistry([greeting])

    assert await run(registry, "greet", '{"name": "Ada"}') == ("Hello, Ada!", True)
    assert await run(registry, "greet", '{"name": "Ada", "times": 2}') == (
        "Hello, Ada!Hello, Ada!",
        True,
    )


async def test_run_invalid_json_is_an_error_result() -> None:
    output, ok = await run(ToolRegistry([greeting]), "greet", '{"name": "Ada"')

    assert not ok
    assert output.startswith("error:")
    assert "JSON" in output


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ('{"name": "Ada", "times": "many"}', "times"),
        ('{"punctuation": "?"}', "name"),
        ('{"name": "Ada", "shout": true}', "shout"),
        ("[]", "invalid arguments"),
    ],
    ids=["wrong-type", "missing", "unexpected", "not-an-object"],
)
async def test_run_invalid_arguments_are_an_error_result(arguments: str, field: str) -> None:
    output, ok = await run(ToolRegistry([greeting]), "greet", arguments)

    assert not ok
    assert output.startswith("error: invalid arguments")
    assert field in output


async def test_run_unknown_tool_is_an_error_result() -> None:
    output, ok = await run(ToolRegistry([greeting]), "launch_rockets", "{}")

    assert not ok
    assert "launch_rockets" in output


async def test_run_tool_raising_is_an_error_result_without_its_message(
    caplog: pytest.LogCaptureFixture,
) -> None:
    output, ok = await run(ToolRegistry([failing]), "failing", "{}")

    assert not ok
    assert output == "error: failing failed (RuntimeError)"
    assert "hunter2" not in output
    assert any(record.exc_info for record in caplog.records), "the failure is logged"


async def test_run_tool_error_message_goes_to_the_model() -> None:
    output, ok = await run(ToolRegistry([refusing]), "refusing", "{}")

    assert not ok
    assert output == "error: the shop is closed on Sundays"


async def test_run_slow_async_tool_times_out_and_is_cancelled() -> None:
    cancelled = asyncio.Event()

    @tool
    async def slow() -> str:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "too late"

    async with asyncio.timeout(5):
        output, ok = await run(ToolRegistry([slow], timeout=0.05), "slow", "{}")

    assert not ok
    assert output == "error: slow timed out"
    assert cancelled.is_set()


async def test_run_blocking_sync_tool_times_out_without_blocking_the_loop() -> None:
    release = threading.Event()

    @tool
    def stuck() -> str:
        release.wait(10)
        return "done"

    try:
        async with asyncio.timeout(5):
            output, ok = await run(ToolRegistry([stuck], timeout=0.05), "stuck", "{}")
    finally:
        release.set()

    assert not ok
    assert output == "error: stuck timed out"


async def test_sync_tools_run_off_the_event_loop_thread() -> None:
    threads: list[int] = []

    @tool
    def where() -> str:
        threads.append(threading.get_ident())
        return "ok"

    assert await run(ToolRegistry([where]), "where", "{}") == ("ok", True)
    assert threads
    assert threads[0] != threading.get_ident()


async def test_output_is_truncated_to_the_limit() -> None:
    output, ok = await run(ToolRegistry([chatty]), "chatty", "{}")

    assert ok
    assert output == "x" * MAX_TOOL_OUTPUT


# --- operator tool modules ----------------------------------------------------------------

OPERATOR_MODULE = '''
from core.tools.toolbox import tool


@tool
def shout(text: str) -> str:
    """Upper-case the text."""
    return text.upper()


@tool(name="count_letters")
def letters(text: str) -> int:
    """Count the letters."""
    return sum(ch.isalpha() for ch in text)


TOOLS = [shout, letters]
NOT_A_TOOL = 42
'''


@pytest.fixture
def module_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A directory on ``sys.path``; modules written there are forgotten afterwards."""
    directory = tmp_path / "operator_tools"
    directory.mkdir()
    monkeypatch.syspath_prepend(str(directory))
    before = set(sys.modules)
    yield directory
    for name in set(sys.modules) - before:
        del sys.modules[name]


def write_module(directory: Path, source: str) -> str:
    name = f"sb_tools_{uuid.uuid4().hex}"
    (directory / f"{name}.py").write_text(textwrap.dedent(source), encoding="utf-8")
    return name


def test_load_module_takes_every_tool_in_it(module_dir: Path) -> None:
    name = write_module(module_dir, OPERATOR_MODULE)

    tools = load_tool_modules([name])

    assert sorted(item.name for item in tools) == ["count_letters", "shout"]


def test_load_module_attribute_takes_that_tool(module_dir: Path) -> None:
    name = write_module(module_dir, OPERATOR_MODULE)

    tools = load_tool_modules([f"{name}:shout"])

    assert [item.name for item in tools] == ["shout"]


def test_load_module_attribute_may_be_a_list(module_dir: Path) -> None:
    name = write_module(module_dir, OPERATOR_MODULE)

    tools = load_tool_modules([f"{name}:TOOLS"])

    assert [item.name for item in tools] == ["shout", "count_letters"]


async def test_loaded_tools_run_in_the_registry(module_dir: Path) -> None:
    name = write_module(module_dir, OPERATOR_MODULE)
    registry = ToolRegistry(load_tool_modules([f"{name}:TOOLS"]))

    assert await run(registry, "shout", '{"text": "hi"}') == ("HI", True)
    assert await run(registry, "count_letters", '{"text": "a1b2"}') == ("2", True)


def test_load_missing_module_is_a_config_error(module_dir: Path) -> None:
    with pytest.raises(ConfigError, match=r"SWITCHBOARD_TOOL_MODULES.*no_such_tools_module"):
        load_tool_modules(["no_such_tools_module"])


@pytest.mark.parametrize(
    "spec_suffix", ["", ":NOT_A_TOOL", ":missing"], ids=["module", "not-a-tool", "missing-attr"]
)
def test_load_without_tools_is_a_config_error(module_dir: Path, spec_suffix: str) -> None:
    source = OPERATOR_MODULE if spec_suffix else "VALUE = 1\n"
    name = write_module(module_dir, source)

    with pytest.raises(ConfigError, match="SWITCHBOARD_TOOL_MODULES"):
        load_tool_modules([f"{name}{spec_suffix}"])


# --- built-in tools ------------------------------------------------------------------------


@pytest.fixture
def builtins() -> ToolRegistry:
    return ToolRegistry(builtin_tools(FixedClock()))


def test_builtin_tools_have_strict_schemas() -> None:
    tools: list[Tool] = builtin_tools(FixedClock())

    assert {item.name for item in tools} == {"current_time", "calculator"}
    for item in tools:
        schema = item.schema()
        assert schema.strict
        assert schema.description


@pytest.mark.parametrize(
    ("zone", "expected"),
    [
        ("UTC", "Sunday 2024-03-10 12:00:00 UTC (UTC+0000)"),
        ("Europe/Paris", "Sunday 2024-03-10 13:00:00 CET (UTC+0100)"),
        ("America/New_York", "Sunday 2024-03-10 08:00:00 EDT (UTC-0400)"),
        ("Pacific/Kiritimati", "Monday 2024-03-11 02:00:00 +14 (UTC+1400)"),
    ],
)
async def test_current_time_in_a_time_zone(
    builtins: ToolRegistry, zone: str, expected: str
) -> None:
    output, ok = await run(builtins, "current_time", json.dumps({"timezone": zone}))

    assert ok
    assert output == expected


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "../../etc/passwd", ""])
async def test_current_time_unknown_zone_is_an_error_result(
    builtins: ToolRegistry, zone: str
) -> None:
    output, ok = await run(builtins, "current_time", json.dumps({"timezone": zone}))

    assert not ok
    assert output == f"error: unknown time zone {zone!r}"


async def test_calculator_tool(builtins: ToolRegistry) -> None:
    assert await run(builtins, "calculator", '{"expression": "(2+3)*2^3"}') == ("40", True)


async def test_calculator_tool_refuses_code(builtins: ToolRegistry) -> None:
    output, ok = await run(builtins, "calculator", json.dumps({"expression": "__import__('os')"}))

    assert not ok
    assert output.startswith("error: ")
