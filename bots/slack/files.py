"""Files users send with a Slack message, fetched for the core as bytes.

Only pictures and sound (Slack's audio and video clips included) are fetched, each checked
against the size limit first. The bot token goes only to Slack's own hosts (``*.slack.com``
over HTTPS, or the origin of ``SLACK_API_URL``), redirects included; the core never sees a
Slack URL.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from core.errors import MediaTooLarge, UnsupportedMedia
from core.media.ports import Attachment, media_kind

log = logging.getLogger(__name__)

SLACK_DOMAIN = "slack.com"
MAX_REDIRECTS = 3
CHUNK_BYTES = 64 * 1024
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
# Types that say nothing about the content: the file name decides instead.
_VAGUE_TYPES = frozenset({"", "application/octet-stream", "binary/octet-stream"})
_MEGABYTE = 1024 * 1024


@dataclass(frozen=True, slots=True)
class SlackFile:
    """What a message event says about one of its files."""

    file_id: str
    name: str
    mime_type: str | None
    size: int | None
    url: str | None

    @property
    def wanted(self) -> bool:
        """Whether the core takes this kind of file (a picture or sound)."""
        return media_kind(self.name, self.mime_type) is not None


def files_of(event: Mapping[str, Any]) -> tuple[SlackFile, ...]:
    """The files of a ``message`` or ``app_mention`` event, in order."""
    found = event.get("files")
    if not isinstance(found, list):
        return ()
    return tuple(parse_file(item) for item in found if isinstance(item, dict) and item.get("id"))


def parse_file(data: Mapping[str, Any]) -> SlackFile:
    """A Slack file object as a ``SlackFile``; a name without a suffix gets the file type's."""
    name = str(data.get("name") or data.get("title") or "file")
    filetype = str(data.get("filetype") or "")
    if "." not in name and filetype.isalnum():
        name = f"{name}.{filetype}"
    mime = str(data.get("mimetype") or "").lower()
    size = data.get("size")
    url = data.get("url_private_download") or data.get("url_private")
    return SlackFile(
        file_id=str(data["id"]),
        name=name,
        mime_type=None if mime in _VAGUE_TYPES else mime,
        size=size if isinstance(size, int) and not isinstance(size, bool) else None,
        url=url if isinstance(url, str) and url else None,
    )


def is_slack_url(url: str, api_url: str) -> bool:
    """Whether the bot token may be sent to ``url``: HTTPS on ``slack.com`` or a subdomain
    (or of the API's own domain), or exactly the origin of ``api_url`` (a test or proxy)."""
    target = urlsplit(url)
    api = urlsplit(api_url)
    try:
        target_port, api_port = target.port, api.port
    except ValueError:
        return False
    host = (target.hostname or "").lower()
    if not host or target.username is not None or target.password is not None:
        return False
    if (target.scheme, host, target_port) == (api.scheme, (api.hostname or "").lower(), api_port):
        return True
    if target.scheme != "https" or target_port not in (None, 443):
        return False
    domains = {SLACK_DOMAIN}
    if api.scheme == "https" and api.hostname:
        domains.add(api.hostname.lower())
    return any(host == domain or host.endswith(f".{domain}") for domain in domains)


class SlackFiles:
    """Fetches message files with the bot token of ``client`` (and its proxy, TLS and
    timeout settings); ``close`` when done."""

    def __init__(self, client: AsyncWebClient, *, max_bytes: int) -> None:
        self._client = client
        self._max_bytes = max_bytes
        self._session: aiohttp.ClientSession | None = None

    async def fetch(
        self, files: Sequence[SlackFile], *, any_kind: bool = False
    ) -> tuple[Attachment, ...]:
        """Download ``files`` as attachments, in order.

        Raises ``UnsupportedMedia`` for a kind of file the bot does not read (unless
        ``any_kind``: a batch's prompts file, which the core checks) or one it could not
        fetch, and ``MediaTooLarge`` over the limit; nothing is downloaded unless every file
        passes the checks that can be made beforehand.
        """
        for file in files:
            if file.url is not None:
                self._check(file, any_kind=any_kind)
        resolved = [await self._resolve(file, any_kind=any_kind) for file in files]
        return tuple(
            [Attachment(await self._download(file), file.name, file.mime_type) for file in resolved]
        )

    async def close(self) -> None:
        """Close the HTTP session (a later ``fetch`` opens a new one)."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    def _check(self, file: SlackFile, *, any_kind: bool = False) -> None:
        if not file.wanted and not any_kind:
            raise UnsupportedMedia(
                f"I can look at pictures and listen to audio, but I can't open “{file.name}”."
            )
        if file.size is not None and file.size > self._max_bytes:
            raise MediaTooLarge(self._too_large(file, file.size))

    async def _resolve(self, file: SlackFile, *, any_kind: bool = False) -> SlackFile:
        """``file`` with its download URL, checked: some events (Slack Connect channels) give
        only the file's id, and ``files.info`` tells the rest."""
        if file.url is not None:
            return file
        try:
            response = await self._client.files_info(file=file.file_id)
        except SlackApiError as exc:
            log.warning("files.info for %s failed: %s", file.file_id, exc.response.get("error"))
            raise self._unavailable(file) from exc
        data = response.get("file")
        if not isinstance(data, dict) or not data.get("id"):
            raise self._unavailable(file)
        resolved = parse_file(data)
        self._check(resolved, any_kind=any_kind)
        if resolved.url is None:
            raise self._unavailable(file)
        return resolved

    async def _download(self, file: SlackFile) -> bytes:
        assert file.url is not None
        url = file.url
        try:
            for _ in range(MAX_REDIRECTS + 1):
                if not is_slack_url(url, self._client.base_url):
                    # The URL itself is not logged: it names the workspace's private files.
                    log.warning("not fetching %s: its URL is not on Slack's hosts", file.file_id)
                    raise self._unavailable(file)
                async with self._get(url) as response:
                    location = response.headers.get("Location")
                    if response.status in _REDIRECTS and location:
                        url = urljoin(url, location)
                        continue
                    return await self._read(file, response)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("download of %s failed: %s", file.file_id, type(exc).__name__)
            raise self._unavailable(file) from exc
        log.warning("download of %s failed: too many redirects", file.file_id)
        raise self._unavailable(file)

    def _get(self, url: str) -> AbstractAsyncContextManager[aiohttp.ClientResponse]:
        if self._session is None:
            wait = self._client.timeout
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(sock_connect=wait, sock_read=wait)
            )
        return self._session.get(
            url,
            headers={"Authorization": f"Bearer {self._client.token}"},
            allow_redirects=False,
            proxy=self._client.proxy,
            ssl=self._client.ssl if self._client.ssl is not None else True,
        )

    async def _read(self, file: SlackFile, response: aiohttp.ClientResponse) -> bytes:
        if response.status != 200:
            log.warning("download of %s failed: HTTP %d", file.file_id, response.status)
            raise self._unavailable(file)
        if response.content_type == "text/html" and file.mime_type != "text/html":
            # Slack's sign-in page: the token may not read files (no files:read scope?).
            log.warning("Slack answered a sign-in page for %s (files:read?)", file.file_id)
            raise self._unavailable(file)
        declared = response.content_length
        if declared is not None and declared > self._max_bytes:
            raise MediaTooLarge(self._too_large(file, declared))
        data = bytearray()
        async for chunk in response.content.iter_chunked(CHUNK_BYTES):
            data += chunk
            if len(data) > self._max_bytes:  # the event said less, or nothing
                raise MediaTooLarge(self._too_large(file, None))
        return bytes(data)

    def _too_large(self, file: SlackFile, size: int | None) -> str:
        limit = f"{self._max_bytes / _MEGABYTE:g} MB"
        if size is None:
            return f"“{file.name}” is over the {limit} I can take. Please send a smaller one."
        return (
            f"“{file.name}” is {size / _MEGABYTE:.1f} MB, but I can take files up to {limit}. "
            "Please send a smaller one."
        )

    @staticmethod
    def _unavailable(file: SlackFile) -> UnsupportedMedia:
        return UnsupportedMedia(
            f"I couldn't get “{file.name}” from Slack. Please try sending it again."
        )
