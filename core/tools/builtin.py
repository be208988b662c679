"""The tools Switchboard ships: the current date and time, and a safe calculator."""

from __future__ import annotations

from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field

from core.clock import Clock
from core.errors import ToolError
from core.tools.calculator import evaluate
from core.tools.toolbox import Tool, tool


def builtin_tools(clock: Clock) -> list[Tool]:
    """The built-in tools, reading time from ``clock``."""

    @tool(name="current_time")
    def current_time(
        timezone: Annotated[str, Field(description="IANA time zone, such as Europe/Paris or UTC")],
    ) -> str:
        """The current date, time and weekday in a time zone."""
        try:
            zone = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ToolError(f"unknown time zone {timezone!r}") from None
        now = clock.now().astimezone(zone)
        return now.strftime("%A %Y-%m-%d %H:%M:%S %Z (UTC%z)")

    @tool(name="calculator")
    def calculator(
        expression: Annotated[str, Field(description="Arithmetic, e.g. (2+3)*sqrt(16)/7")],
    ) -> str:
        """Evaluate an arithmetic expression exactly; use it for any non-trivial sum."""
        return str(evaluate(expression))

    return [current_time, calculator]
