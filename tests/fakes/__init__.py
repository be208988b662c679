"""In-process fakes of external services used by the test suite and benchmarks.

Names are imported lazily so that ``python -m tests.fakes.openai_server`` does not
import the server module twice (once as a package member, once as ``__main__``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.fakes.openai_server import FakeOpenAI, RecordedRequest, Scripted

__all__ = ["FakeOpenAI", "RecordedRequest", "Scripted"]


def __getattr__(name: str) -> object:
    """Resolve the public names from :mod:`tests.fakes.openai_server` on first use."""
    if name in __all__:
        module = importlib.import_module("tests.fakes.openai_server")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
