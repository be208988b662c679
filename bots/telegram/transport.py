"""The HTTP transport between python-telegram-bot and the Bot API, on aiohttp.

python-telegram-bot's own transport runs on httpx; aiohttp (already what the Slack adapter
and the fakes use) does the same request with about a third of the CPU, which matters
because every reply costs several Bot API calls (``sendMessage``, edits, the typing
indicator, ``getUpdates``). ``AiohttpRequest`` implements python-telegram-bot's documented
``BaseRequest`` interface: parameters go as an urlencoded form, uploads as multipart, and
timeouts and network failures become ``TimedOut`` and ``NetworkError`` as with httpx.

``getUpdates`` gets its own subclass that keeps one malformed update from stalling long
polling: python-telegram-bot parses a batch all at once; if any update in it cannot be
parsed, the whole batch fails, the offset never advances and polling retries the same batch
forever. ``TolerantBot`` parses the batch once, as python-telegram-bot does, and only when
that fails parses it update by update, replacing one that cannot be parsed with an empty
update of the same id (logged), so the offset moves past it.

The proxy from the environment (``HTTP(S)_PROXY``, ``NO_PROXY``) is looked up once per
host, not by aiohttp's ``trust_env`` on every request: that does two lookups in a worker
thread per request (the proxy, and ``~/.netrc``, which the Bot API — authenticated by the
token in the URL — does not use), a visible share of a short turn's CPU.
"""

from __future__ import annotations

import json
import logging
import urllib.request
from typing import Any

import aiohttp
from telegram import Update
from telegram.error import NetworkError, TimedOut
from telegram.ext import ExtBot
from telegram.request import BaseRequest, RequestData
from typing_extensions import override
from yarl import URL

log = logging.getLogger(__name__)


class AiohttpRequest(BaseRequest):
    """python-telegram-bot's ``BaseRequest`` on an aiohttp session.

    The defaults are python-telegram-bot's: 256 connections, 5 s to connect, write and read,
    1 s to wait for a free connection, 20 s to write an upload.
    """

    __slots__ = (
        "_connect",
        "_limit",
        "_media_write",
        "_pool",
        "_proxies",
        "_read",
        "_session",
        "_write",
    )

    def __init__(
        self,
        connection_pool_size: int = 256,
        *,
        read_timeout: float | None = 5.0,
        write_timeout: float | None = 5.0,
        connect_timeout: float | None = 5.0,
        pool_timeout: float | None = 1.0,
        media_write_timeout: float | None = 20.0,
    ) -> None:
        self._limit = connection_pool_size
        self._read = read_timeout
        self._write = write_timeout
        self._connect = connect_timeout
        self._pool = pool_timeout
        self._media_write = media_write_timeout
        self._session: aiohttp.ClientSession | None = None
        self._proxies: dict[tuple[str, str], _Proxy] = {}

    @property
    @override
    def read_timeout(self) -> float | None:
        return self._read

    @override
    async def initialize(self) -> None:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._limit)
            # HTTP(S)_PROXY and NO_PROXY apply, as they did with httpx (``_proxy``).
            self._session = aiohttp.ClientSession(connector=connector)
            self._proxies.clear()

    @override
    async def shutdown(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    @override
    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: Any = BaseRequest.DEFAULT_NONE,
        write_timeout: Any = BaseRequest.DEFAULT_NONE,
        connect_timeout: Any = BaseRequest.DEFAULT_NONE,
        pool_timeout: Any = BaseRequest.DEFAULT_NONE,
    ) -> tuple[int, bytes]:
        """Send one request; answer the HTTP status and the body."""
        session = self._session
        if session is None or session.closed:
            raise RuntimeError("This AiohttpRequest is not initialized!")
        uploads = request_data is not None and request_data.contains_files
        read = _given(read_timeout, self._read)
        write = _given(write_timeout, self._media_write if uploads else self._write)
        connect = _given(connect_timeout, self._connect)
        pool = _given(pool_timeout, self._pool)
        proxy, proxy_auth = self._proxy(url)
        timeout = aiohttp.ClientTimeout(
            # aiohttp has no separate write timeout: the whole exchange gets the sum.
            total=_sum(connect, pool, write, read),
            connect=_sum(connect, pool),
            sock_connect=connect,
            sock_read=read,
        )
        try:
            async with session.request(
                method,
                url,
                data=_body(request_data),
                headers={"User-Agent": self.USER_AGENT},
                timeout=timeout,
                proxy=proxy,
                proxy_auth=proxy_auth,
            ) as response:
                return response.status, await response.read()
        except TimeoutError as exc:
            raise TimedOut from exc
        except aiohttp.ClientError as exc:
            raise NetworkError(f"aiohttp.{type(exc).__name__}: {exc}") from exc

    def _proxy(self, url: str) -> _Proxy:
        """The proxy the environment names for ``url``'s host (none if ``NO_PROXY``
        exempts it), looked up once per scheme and host."""
        parsed = URL(url)
        key = (parsed.scheme, parsed.host or "")
        found = self._proxies.get(key)
        if found is None:
            found = self._proxies[key] = _proxy_from_environment(*key)
        return found


_Proxy = tuple[URL | None, aiohttp.BasicAuth | None]


def _proxy_from_environment(scheme: str, host: str) -> _Proxy:
    """``scheme``'s proxy from the environment, its credentials apart, unless ``host`` is
    exempt — the rules aiohttp's ``trust_env`` applies."""
    proxy = urllib.request.getproxies().get(scheme)
    if proxy is None or not host or urllib.request.proxy_bypass(host):
        return None, None
    address = URL(proxy)
    if address.user is None:
        return address, None
    credentials = aiohttp.BasicAuth(address.user, address.password or "")
    return address.with_user(None), credentials


class TolerantUpdatesRequest(AiohttpRequest):
    """The ``getUpdates`` transport: one connection (python-telegram-bot's own choice for
    it), keeping its last successful answer for ``TolerantBot``."""

    __slots__ = ("last_answer",)

    def __init__(self) -> None:
        super().__init__(connection_pool_size=1)
        self.last_answer = b""

    @override
    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: Any = BaseRequest.DEFAULT_NONE,
        write_timeout: Any = BaseRequest.DEFAULT_NONE,
        connect_timeout: Any = BaseRequest.DEFAULT_NONE,
        pool_timeout: Any = BaseRequest.DEFAULT_NONE,
    ) -> tuple[int, bytes]:
        """Send the request; a successful answer is kept."""
        code, payload = await super().do_request(
            url, method, request_data, read_timeout, write_timeout, connect_timeout, pool_timeout
        )
        if code == 200:
            self.last_answer = payload
        return code, payload


class _QuietParseFailure(logging.Filter):
    """Drops python-telegram-bot's record of a batch of updates it could not parse (the
    whole answer, users' messages included, at CRITICAL): ``TolerantBot`` recovers the
    batch and logs each update it skips."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Error while parsing updates!")


_QUIET = _QuietParseFailure()


class TolerantBot(ExtBot[None]):
    """python-telegram-bot's bot whose long polling survives an update it cannot parse.

    python-telegram-bot parses a batch all at once; if any update in it cannot be parsed,
    the whole batch fails, the offset never advances and polling retries the same batch
    forever. Here the batch is parsed as usual — once; only when that fails is the answer
    (kept by ``TolerantUpdatesRequest``) parsed update by update, each one that cannot be
    replaced by an empty update of the same id (logged), so the offset moves past it.
    """

    def __init__(self, token: str, *, updates_request: TolerantUpdatesRequest, **kwargs: Any):
        super().__init__(token, get_updates_request=updates_request, **kwargs)
        self._updates_request = updates_request
        for name in ("telegram", "telegram.ext.ExtBot"):  # Bot's logger, and ExtBot's
            library_log = logging.getLogger(name)
            if _QUIET not in library_log.filters:
                library_log.addFilter(_QUIET)

    @override
    async def get_updates(self, *args: Any, **kwargs: Any) -> tuple[Update, ...]:
        """The next updates, as python-telegram-bot gets them; malformed ones neutralised."""
        try:
            return await super().get_updates(*args, **kwargs)
        except _PARSE_ERRORS:
            updates = tuple(self._tolerant(self._updates_request.last_answer))
        for update in updates:
            self.insert_callback_data(update)
        return updates

    def _tolerant(self, payload: bytes) -> list[Update]:
        updates: list[Update] = []
        for raw in json.loads(payload)["result"]:
            try:
                updates.append(Update.de_json(raw, self))
            except _PARSE_ERRORS:
                update_id = raw.get("update_id") if isinstance(raw, dict) else None
                log.warning("skipping a malformed Telegram update (id %s)", update_id)
                if isinstance(update_id, int):
                    updates.append(Update(update_id))
        return updates


_PARSE_ERRORS = (ValueError, KeyError, TypeError, AttributeError)


def _given(value: Any, default: float | None) -> float | None:
    """A timeout passed to ``do_request``, or the default when none was."""
    return default if value is BaseRequest.DEFAULT_NONE else value


def _sum(*parts: float | None) -> float | None:
    """The sum of timeouts; none when any of them is unlimited."""
    total = 0.0
    for part in parts:
        if part is None:
            return None
        total += part
    return total


def _body(request_data: RequestData | None) -> aiohttp.FormData | dict[str, str] | None:
    """Parameters as a form, with the files as multipart parts when there are any."""
    if request_data is None:
        return None
    fields = request_data.json_parameters
    if not request_data.contains_files:
        return fields
    form = aiohttp.FormData(fields)
    for name, (filename, content, mimetype) in request_data.multipart_data.items():
        form.add_field(name, content, filename=filename, content_type=mimetype)
    return form
