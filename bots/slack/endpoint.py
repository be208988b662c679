"""The checks at the door of the Slack HTTP endpoint, made before Bolt sees a request:
the signature and the freshness of its timestamp (``X-Slack-Signature``,
``X-Slack-Request-Timestamp``) over the raw bytes, then that the body is what Bolt can
parse. Anyone can post to a public URL: what fails gets 400 or 401 and one log line, never
a traceback, and costs no more than an HMAC."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024  # Slack's payloads are a few kilobytes
MAX_AGE_SECONDS = 5 * 60  # Slack's own advice against replays


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request is refused, and the status it gets."""

    status: int
    reason: str


class SignedRequests:
    """Checks requests against the app's signing secret."""

    def __init__(self, signing_secret: str, clock: Callable[[], float] = time.time) -> None:
        self._secret = signing_secret.encode()
        self._clock = clock

    def refusal(self, raw: bytes, headers: Mapping[str, str]) -> Refusal | None:
        """None when ``raw`` is signed, fresh and parseable; else why it is refused (also
        logged, in one line)."""
        refused = self._check(raw, headers)
        if refused is not None:
            log.warning("refused a Slack request: %s (%d)", refused.reason, refused.status)
        return refused

    def _check(self, raw: bytes, headers: Mapping[str, str]) -> Refusal | None:
        timestamp = headers.get("X-Slack-Request-Timestamp")
        signature = headers.get("X-Slack-Signature")
        if not timestamp or not signature:
            return Refusal(401, "unsigned")
        if not (timestamp.isascii() and timestamp.isdigit()):
            return Refusal(400, "malformed timestamp")
        if abs(self._clock() - int(timestamp)) > MAX_AGE_SECONDS:
            return Refusal(401, "stale timestamp")
        digest = hmac.new(self._secret, f"v0:{timestamp}:".encode() + raw, hashlib.sha256)
        expected = f"v0={digest.hexdigest()}".encode()
        if not hmac.compare_digest(expected, signature.encode("utf-8", "replace")):
            return Refusal(401, "bad signature")
        try:
            body = raw.decode("utf-8")
        except UnicodeDecodeError:
            return Refusal(400, "body is not UTF-8")
        if not _parseable(body, headers.get("Content-Type")):
            return Refusal(400, "malformed body")
        return None


def _parseable(body: str, content_type: str | None) -> bool:
    """Whether Bolt's parser reads ``body`` as an object (a JSON body or form payload
    that is not one makes it fail)."""
    if not body:
        return True
    try:
        if content_type == "application/json" or body.startswith("{"):
            return isinstance(json.loads(body), dict)
        if "payload" in body:
            payload = dict(parse_qsl(body, keep_blank_values=True)).get("payload")
            return payload is None or isinstance(json.loads(payload), dict)
    except ValueError:
        return False
    return True
