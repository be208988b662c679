"""Offline token counting (SPEC §4): a conservative estimate, tiktoken only from its local
cache, and never a download."""

from __future__ import annotations

import hashlib
import math
import socket
from pathlib import Path

import pytest
import tiktoken.load
import tiktoken_ext.openai_public  # type: ignore[import-untyped]

from core.conversation.tokens import EstimatingCounter, TokenCounters, tiktoken_cache_file

ENGLISH = (
    "Switchboard puts OpenAI models where people already talk. The quick brown fox jumps "
    "over the lazy dog, and then it asks the assistant what 17 times 23 is."
)
CJK = "你好世界。今天天气很好我们去公园散步吧。" * 10
CODE = "def f(x):\n    return {k: v for k, v in x.items() if v is not None}\n" * 5


@pytest.fixture
def network_attempts(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Make every connection attempt fail loudly, and record it."""
    attempts: list[object] = []

    def refuse(*args: object, **kwargs: object) -> None:
        attempts.append(args)
        raise OSError("tests never reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return attempts


@pytest.mark.parametrize("text", [ENGLISH, CJK, CODE, "👍🏽 ok", "a"], ids=repr)
def test_estimate_never_counts_fewer_than_a_token_per_three_bytes(text: str) -> None:
    count = EstimatingCounter().count(text)

    assert count >= math.ceil(len(text.encode("utf-8")) / 3)


def test_estimate_is_above_the_usual_four_characters_per_token_for_english() -> None:
    assert EstimatingCounter().count(ENGLISH) >= len(ENGLISH) / 4


def test_estimate_gives_cjk_at_least_one_token_per_character() -> None:
    assert EstimatingCounter().count(CJK) >= len(CJK)


def test_estimate_of_nothing_is_zero_and_grows_with_text() -> None:
    counter = EstimatingCounter()

    assert counter.count("") == 0
    assert counter.count(ENGLISH + ENGLISH) > counter.count(ENGLISH) > 0


def test_uncached_encoding_falls_back_to_the_estimate_offline(
    network_attempts: list[object],
) -> None:
    counter = TokenCounters().for_encoding("o200k_base")

    assert isinstance(counter, EstimatingCounter)
    assert counter.count(ENGLISH) == EstimatingCounter().count(ENGLISH)
    assert network_attempts == []


@pytest.mark.parametrize("encoding", [None, "no_such_encoding"])
def test_unknown_or_no_encoding_is_the_estimate(
    network_attempts: list[object], encoding: str | None
) -> None:
    assert isinstance(TokenCounters().for_encoding(encoding), EstimatingCounter)
    assert network_attempts == []


def test_disabled_tiktoken_cache_is_the_estimate(
    monkeypatch: pytest.MonkeyPatch, network_attempts: list[object]
) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")

    assert tiktoken_cache_file("o200k_base") is None
    assert isinstance(TokenCounters().for_encoding("o200k_base"), EstimatingCounter)
    assert network_attempts == []


def test_corrupt_cache_file_is_not_replaced_by_a_download(
    network_attempts: list[object],
) -> None:
    cached = tiktoken_cache_file("o200k_base")
    assert cached is not None
    cached.write_bytes(b"half a download")

    counter = TokenCounters().for_encoding("o200k_base")

    assert isinstance(counter, EstimatingCounter)
    assert network_attempts == []
    assert cached.exists()


def test_counters_are_cached_per_encoding() -> None:
    counters = TokenCounters()

    assert counters.for_encoding("o200k_base") is counters.for_encoding("o200k_base")
    assert counters.for_encoding(None) is counters.for_encoding(None)


def test_cache_file_is_where_tiktoken_looks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The product predicts tiktoken's cache path; check it against the installed tiktoken."""
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    requested: list[str] = []

    def record(blobpath: str, expected_hash: str | None = None) -> bytes:
        requested.append(blobpath)
        raise OSError("stop before reading anything")

    monkeypatch.setattr(tiktoken.load, "read_file_cached", record)
    with pytest.raises(OSError, match="stop before"):
        tiktoken_ext.openai_public.o200k_base()

    assert requested
    expected = tmp_path / hashlib.sha1(requested[0].encode()).hexdigest()
    assert tiktoken_cache_file("o200k_base") == expected


def test_cache_dir_falls_back_to_data_gym(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TIKTOKEN_CACHE_DIR")
    monkeypatch.setenv("DATA_GYM_CACHE_DIR", str(tmp_path))

    cached = tiktoken_cache_file("cl100k_base")

    assert cached is not None
    assert cached.parent == tmp_path


def test_preload_resolves_every_encoding_up_front(network_attempts: list[object]) -> None:
    counters = TokenCounters()
    counters.preload(["o200k_base", "cl100k_base", None])
    # Nothing is left to resolve on a turn (the cache itself is what preload fills).
    assert set(counters._counters) == {"o200k_base", "cl100k_base", None}
    assert isinstance(counters.for_encoding("o200k_base"), EstimatingCounter)  # offline
    assert network_attempts == []
