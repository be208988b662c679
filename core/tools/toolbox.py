"""Function-calling tools: typed Python functions whose JSON schema is derived with pydantic,
a registry that runs them safely, the context a tool may ask for, and loading of operators'
own tool modules."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, get_type_hints, overload

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from core.conversation.events import ReplyEvent
from core.conversation.messages import ConversationKey, UserRef
from core.conversation.store import UsageRecord
from core.errors import ConfigError, SwitchboardError, ToolError, user_message
from core.media.ports import PreparedImage
from core.models.llm import ToolCall, ToolOutput, ToolSchema
from core.money.metering import Charge

log = logging.getLogger(__name__)

MAX_TOOL_OUTPUT = 16_000

ToolFunction = Callable[..., Awaitable[object] | object]


@dataclass(frozen=True)
class ToolContext:
    """The turn a tool runs in, for tools that declare a ``ToolContext`` parameter: who
    asked, in which conversation, who pays (``charge``), a way to show the user something
    (``emit`` a reply event, such as a picture), and what the turn keeps: usage rows for
    calls the tool paid for, pictures to store with the reply."""

    key: ConversationKey
    caller: UserRef
    charge: Charge
    emit: Callable[[ReplyEvent], Awaitable[None]]
    usage: list[UsageRecord]
    images: list[PreparedImage]


@dataclass(frozen=True)
class Tool:
    """A callable the model may use; ``arguments`` validates what the model sends;
    ``context_parameter`` names the parameter that receives the ``ToolContext``, if any."""

    name: str
    description: str
    arguments: type[BaseModel]
    function: ToolFunction
    context_parameter: str | None = None

    def schema(self) -> ToolSchema:
        """The tool as the API sees it; strict when every argument is required."""
        parameters = self.arguments.model_json_schema()
        parameters.pop("title", None)
        for prop in parameters.get("properties", {}).values():
            prop.pop("title", None)
        required = set(parameters.get("required", []))
        strict = required == set(parameters.get("properties", {})) and "$defs" not in parameters
        parameters["additionalProperties"] = False
        return ToolSchema(self.name, self.description, parameters, strict)


@overload
def tool(function: ToolFunction, *, name: str | None = None) -> Tool: ...


@overload
def tool(function: None = None, *, name: str | None = None) -> Callable[[ToolFunction], Tool]: ...


def tool(
    function: ToolFunction | None = None, *, name: str | None = None
) -> Tool | Callable[[ToolFunction], Tool]:
    """Make a ``Tool`` of a typed function; its docstring is the description.

    Use as ``@tool`` or ``@tool(name="...")``. Parameters may carry
    ``Annotated[..., Field(description=...)]`` for richer schemas.
    """

    def wrap(func: ToolFunction) -> Tool:
        hints = get_type_hints(func, include_extras=True)
        fields: dict[str, Any] = {}
        context_parameter: str | None = None
        for parameter in inspect.signature(func).parameters.values():
            annotation = hints.get(parameter.name, str)
            if annotation is ToolContext:
                context_parameter = parameter.name
                continue
            default = ... if parameter.default is inspect.Parameter.empty else parameter.default
            fields[parameter.name] = (annotation, default)
        tool_name = name or func.__name__
        model = create_model(
            f"{tool_name}_arguments", __config__=ConfigDict(extra="forbid"), **fields
        )
        description = inspect.cleandoc(func.__doc__ or tool_name)
        return Tool(tool_name, description, model, func, context_parameter)

    return wrap(function) if function is not None else wrap


class ToolRegistry:
    """The tools this process knows, by name; runs calls with a timeout and never raises."""

    def __init__(self, tools: Iterable[Tool] = (), *, timeout: float = 20.0) -> None:
        self._tools: dict[str, Tool] = {}
        self._schemas: dict[str, ToolSchema] = {}
        self._timeout = timeout
        for item in tools:
            self.register(item)

    def register(self, item: Tool) -> None:
        """Add ``item``; a second tool of the same name is a configuration error."""
        if item.name in self._tools:
            raise ConfigError(f"two tools are named {item.name!r}")
        self._tools[item.name] = item
        self._schemas[item.name] = item.schema()

    def names(self) -> list[str]:
        """Names of every registered tool."""
        return list(self._tools)

    def schemas(self, names: Sequence[str]) -> list[ToolSchema]:
        """Schemas of the tools called ``names`` that exist (unknown names are skipped)."""
        return [self._schemas[name] for name in names if name in self._schemas]

    async def run(
        self, call: ToolCall, context: ToolContext | None = None
    ) -> tuple[ToolOutput, bool]:
        """Run ``call`` in ``context`` (the turn that asked for it); a failure or timeout
        becomes an error text for the model."""
        try:
            result = await asyncio.wait_for(self._invoke(call, context), self._timeout)
        except TimeoutError:
            return ToolOutput(call.call_id, f"error: {call.name} timed out"), False
        except ToolError as exc:
            return ToolOutput(call.call_id, f"error: {exc}"), False
        except SwitchboardError as exc:
            return ToolOutput(call.call_id, f"error: {user_message(exc)}"), False
        except Exception as exc:
            log.exception("tool %s failed", call.name)
            return ToolOutput(
                call.call_id, f"error: {call.name} failed ({type(exc).__name__})"
            ), False
        return ToolOutput(call.call_id, result[:MAX_TOOL_OUTPUT]), True

    async def _invoke(self, call: ToolCall, context: ToolContext | None) -> str:
        item = self._tools.get(call.name)
        if item is None:
            raise ToolError(f"there is no tool named {call.name!r}")
        try:
            raw = json.loads(call.arguments or "{}")
            arguments = item.arguments.model_validate(raw)
        except json.JSONDecodeError:
            raise ToolError("arguments are not valid JSON") from None
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
            )
            raise ToolError(f"invalid arguments: {problems}") from None
        values = {field: getattr(arguments, field) for field in type(arguments).model_fields}
        if item.context_parameter is not None:
            if context is None:
                raise ToolError(f"{call.name} can only run in a conversation")
            values[item.context_parameter] = context
        if inspect.iscoroutinefunction(item.function):
            result = await item.function(**values)
        else:
            result = await asyncio.to_thread(item.function, **values)
        return result if isinstance(result, str) else json.dumps(result, default=str)


def load_tool_modules(specs: Sequence[str]) -> list[Tool]:
    """Import operator tools: ``module`` (all its ``Tool`` objects) or ``module:attribute``."""
    found: list[Tool] = []
    for spec in specs:
        module_name, _, attribute = spec.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ConfigError(
                f"SWITCHBOARD_TOOL_MODULES: cannot import {module_name!r}: {exc}"
            ) from None
        if attribute:
            value = getattr(module, attribute, None)
            candidates = list(value) if isinstance(value, list | tuple) else [value]
        else:
            candidates = list(vars(module).values())
        tools = [item for item in candidates if isinstance(item, Tool)]
        if not tools or (attribute and len(tools) != len(candidates)):
            raise ConfigError(f"SWITCHBOARD_TOOL_MODULES: {spec!r} names no tools")
        found.extend(tools)
    return found
