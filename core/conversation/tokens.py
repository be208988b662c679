"""Token counting that works offline: tiktoken when its encoding file is already cached
locally, otherwise a conservative estimate. It never downloads anything."""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol

# Each message costs a few tokens of framing on top of its text (role, separators).
MESSAGE_OVERHEAD = 4
_TIKTOKEN_BLOB = "https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"
# SHA-256 of tiktoken's published encoding files. tiktoken re-downloads a cached file whose
# hash does not match, so a file is only handed to tiktoken once it is known to be good.
_TIKTOKEN_SHA256 = {
    "r50k_base": "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930",
    "p50k_base": "94b5ca7dff4d00767bc256fdd1b27e5b17361d7b8a5f968547f9f23eb70d2069",
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
}


class TokenCounter(Protocol):
    """Counts the tokens a text costs for one encoding."""

    def count(self, text: str) -> int:
        """Tokens in ``text``, never fewer than the model would count."""


class EstimatingCounter:
    """A conservative estimate: about three bytes of UTF-8 per token, rounded up.

    Real BPE encodings average close to four bytes per token on prose and fewer on code or
    non-Latin scripts, so three over-counts slightly, which keeps context budgets safe.
    """

    def count(self, text: str) -> int:
        """Estimated tokens in ``text``."""
        return math.ceil(len(text.encode("utf-8")) / 3)


class TiktokenCounter:
    """Exact counts with a tiktoken encoding that was found in the local cache."""

    def __init__(self, encode: Callable[[str], list[int]]) -> None:
        self._encode = encode

    def count(self, text: str) -> int:
        """Tokens in ``text`` as the model counts them."""
        return len(self._encode(text))


def tiktoken_cache_file(encoding: str) -> Path | None:
    """Where tiktoken keeps ``encoding`` in its cache, or None when caching is disabled."""
    cache_dir = os.environ.get("TIKTOKEN_CACHE_DIR", os.environ.get("DATA_GYM_CACHE_DIR"))
    if cache_dir is None:
        cache_dir = os.path.join(tempfile.gettempdir(), "data-gym-cache")
    if not cache_dir:
        return None
    key = hashlib.sha1(_TIKTOKEN_BLOB.format(name=encoding).encode()).hexdigest()
    return Path(cache_dir) / key


class TokenCounters:
    """Hands out one counter per encoding name, loading tiktoken only from its local cache,
    and only for the published encodings whose files it can verify."""

    def __init__(self) -> None:
        self._counters: dict[str | None, TokenCounter] = {}
        self._estimate = EstimatingCounter()

    def preload(self, encodings: Iterable[str | None]) -> None:
        """Load ``encodings`` now (blocking: call it off the event loop, at start-up), so
        that no turn pays for reading and hashing a multi-megabyte encoding file."""
        for encoding in encodings:
            self.for_encoding(encoding)

    def for_encoding(self, encoding: str | None) -> TokenCounter:
        """The counter for ``encoding``; the estimate when it is unknown or not cached."""
        counter = self._counters.get(encoding)
        if counter is None:
            counter = self._load(encoding)
            self._counters[encoding] = counter
        return counter

    def _load(self, encoding: str | None) -> TokenCounter:
        expected = _TIKTOKEN_SHA256.get(encoding or "")
        cached = tiktoken_cache_file(encoding) if encoding else None
        if expected is None or cached is None or not cached.is_file():
            return self._estimate
        if hashlib.sha256(cached.read_bytes()).hexdigest() != expected:
            return self._estimate
        import tiktoken

        try:
            return TiktokenCounter(tiktoken.get_encoding(str(encoding)).encode_ordinary)
        except (ValueError, OSError):
            return self._estimate
