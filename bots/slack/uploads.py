"""Putting a file (a drawn picture, a spoken reply) into a Slack channel or thread with the
v2 upload flow, paced like a message; 429s are waited out by the client's retry handler."""

from __future__ import annotations

import logging

import aiohttp
from slack_sdk.errors import SlackApiError, SlackRequestError
from slack_sdk.web.async_client import AsyncWebClient

from bots.pacing import FloodControl
from bots.slack.events import SlackPlace
from bots.slack.render import literal
from core.media.ports import GeneratedImage

log = logging.getLogger(__name__)

ALT_TEXT_LIMIT = 1000  # Slack's limit for an image's alt text
PICTURE_TITLE = "Picture"


async def upload_file(
    client: AsyncWebClient,
    flood: FloodControl,
    place: SlackPlace,
    *,
    data: bytes,
    filename: str,
    title: str,
    comment: str | None = None,
    alt_text: str | None = None,
) -> str | None:
    """Share ``data`` as ``filename`` in ``place`` with an optional mrkdwn ``comment``;
    returns the file's id, or None (and a log line) when Slack did not take it."""
    await flood.acquire(place.channel, group=False)
    try:
        response = await client.files_upload_v2(
            file=data,
            filename=filename,
            title=title,
            alt_txt=alt_text[:ALT_TEXT_LIMIT] if alt_text else None,
            channel=place.channel,
            thread_ts=place.thread_ts,
            initial_comment=comment or None,
        )
    except SlackApiError as exc:
        error = exc.response.get("error") if exc.response is not None else None
        log.warning("uploading %s to %s failed: %s", filename, place.channel, error)
        return None
    except (SlackRequestError, aiohttp.ClientError, TimeoutError) as exc:
        log.warning("uploading %s to %s failed: %s", filename, place.channel, exc)
        return None
    files = response.get("files") or [{}]
    return str(files[0].get("id") or filename)


async def upload_picture(
    client: AsyncWebClient,
    flood: FloodControl,
    place: SlackPlace,
    picture: GeneratedImage,
    caption: str | None,
) -> str | None:
    """Share a drawn picture in ``place``, the prompt the API used (``caption``) as its
    comment and alt text; its file id, or None when Slack did not take it."""
    return await upload_file(
        client,
        flood,
        place,
        data=picture.image.data,
        filename=f"picture{picture.image.suffix}",
        title=PICTURE_TITLE,
        comment=literal(caption) if caption else None,
        alt_text=caption,
    )
