"""In-process fakes of external services used by the test suite and benchmarks."""

from tests.fakes.openai_server import FakeOpenAI, RecordedRequest, Scripted

__all__ = ["FakeOpenAI", "RecordedRequest", "Scripted"]
