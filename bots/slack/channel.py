"""The Slack channel: a slack-bolt app whose listeners translate events, slash commands and
button clicks into ``Delivery`` objects for the core's inbound pipeline, served over HTTP at
``/slack/events`` or, when ``SLACK_APP_TOKEN`` is set, over Socket Mode. It is also the
core's outbound port to Slack (``reply``, ``post``, ``edit``, ``send_file``).

Every request is acknowledged at once; the work runs afterwards in tracked tasks that
shutdown waits for ("ack fast, work lazily").

``/image`` and ``/edit`` run as turns of the conversation the command's place stands for (the
DM, or the channel as a whole, whose new threads take its mode and model): the picture is
posted there at the top level, and a later ``/edit`` in the same place finds it, or the
newest picture sent in the DM.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.authorization import AuthorizeResult
from slack_bolt.authorization.async_authorize import AsyncAuthorize
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from bots.pacing import FloodControl, FloodLimits
from bots.slack.endpoint import MAX_BODY_BYTES, SignedRequests
from bots.slack.events import (
    CHANNEL,
    SlackPlace,
    SlackTurn,
    command_key,
    plain_text,
    translate,
    user_ref,
)
from bots.slack.files import SlackFiles
from bots.slack.render import escape
from bots.slack.reply import NativeStreaming, SlackReply, SlashCommandReply
from bots.slack.retry import retry_handlers
from core.conversation.channel import Outbox, OutgoingFile, Reply
from core.conversation.commands import (
    COMMANDS,
    FILE_COMMANDS,
    TURN_COMMANDS,
    Command,
    parse_command,
)
from core.conversation.events import CommandReply
from core.conversation.messages import ConversationKey, IncomingMessage
from core.conversation.pipeline import Activity, Delivery, FetchFiles, InboundPipeline
from core.errors import ConfigError
from core.media.ports import Attachment
from core.metrics import Metrics, NullMetrics
from core.settings import Settings

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"
SHUTDOWN_GRACE_SECONDS = 10.0
ACK_PRIORITY_SECONDS = 0.5
ACK_SETTLE_SECONDS = 0.05
# About one message a second per channel (Slack's guidance), and a cap on all calls.
SLACK_LIMITS = FloodLimits(chat_per_second=1.0, chat_burst=1, overall_per_second=20)
ACTION_ID = "switchboard_choice"
# What the user sees at once (ephemerally) while a slash command's picture is being made.
WORKING = {"image": "🎨 Drawing…", "edit": "🎨 Editing the picture…"}

Next = Callable[[], Awaitable[BoltResponse]]
Headers = dict[str, str | Sequence[str]]


class SlackChannel:
    """Answers Slack DMs, mentions, threads and slash commands through the inbound pipeline,
    and is the core's way to post there; ``run`` until ``stop``."""

    name = CHANNEL

    def __init__(
        self,
        pipeline: InboundPipeline,
        outbox: Outbox,
        settings: Settings,
        *,
        flood: FloodControl | None = None,
        shutdown_grace: float = SHUTDOWN_GRACE_SECONDS,
        metrics: Metrics | None = None,
    ) -> None:
        settings.require("SLACK_BOT_TOKEN")
        if settings.slack_app_token is None:
            settings.require("SLACK_SIGNING_SECRET")
        assert settings.slack_bot_token is not None
        self._pipeline = pipeline
        self._outbox = outbox
        self._settings = settings
        throttled = metrics or NullMetrics()
        self._flood = flood or FloodControl(
            SLACK_LIMITS, on_throttled=lambda: throttled.platform_throttled(CHANNEL)
        )
        self.connected = False  # readiness, for the operations server
        self._grace = shutdown_grace
        self._tasks: set[asyncio.Task[None]] = set()
        self._acks = AcksFirst()
        self._streaming = NativeStreaming(enabled=settings.slack_native_streaming)
        self.client = AsyncWebClient(
            token=settings.slack_bot_token.get_secret_value(),
            base_url=settings.slack_api_url,
            retry_handlers=retry_handlers(self._flood),
        )
        self._files = SlackFiles(self.client, max_bytes=settings.max_file_mb * 1024 * 1024)
        secret = settings.slack_signing_secret
        self._identity = _Identity()
        self._verifier = SignatureVerifier(secret.get_secret_value()) if secret else None
        self._door = SignedRequests(secret.get_secret_value()) if secret else None
        self.app = AsyncApp(
            # Bolt's own client gets the token from the authorize result.
            client=AsyncWebClient(
                base_url=settings.slack_api_url, retry_handlers=retry_handlers(self._flood)
            ),
            authorize=self._identity,
            signing_secret=secret.get_secret_value() if secret else None,
            request_verification_enabled=secret is not None,
            process_before_response=True,  # listeners only acknowledge and hand work off
            # ``translate`` drops the bot's own messages; fewer hops keep acknowledgements fast.
            ignoring_self_events_enabled=False,
            ignoring_self_assistant_message_events_enabled=False,
            attaching_function_token_enabled=False,
            logger=log,
        )
        self._register()

    def _register(self) -> None:
        app = self.app
        app.event("app_mention")(self._on_event)
        app.event("message")(self._on_event)
        app.event(re.compile(".*"))(self._ignore)  # acknowledged, so Slack does not retry
        for name in COMMANDS:
            app.command(f"/{name}")(self._on_command)
        app.action(re.compile(f"^{ACTION_ID}:"))(self._on_choice)

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set, then finish or cleanly stop the replies in flight."""
        try:
            await self._serve(stop)
        finally:
            self._outbox.detach(self)
            await self._files.close()

    async def _serve(self, stop: asyncio.Event) -> None:
        try:
            identity = await self.client.auth_test()
        except SlackApiError as exc:
            raise ConfigError(
                f"SLACK_BOT_TOKEN was rejected by Slack ({exc.response.get('error')})"
            ) from exc
        self._identity.result = AuthorizeResult.from_auth_test_response(
            bot_token=self.client.token, auth_test_response=identity
        )
        self._outbox.attach(self)
        app_token = self._settings.slack_app_token
        if app_token is not None:
            try:
                # Socket Mode's client retries a refused app token forever: ask once first.
                await self.client.apps_connections_open(app_token=app_token.get_secret_value())
            except SlackApiError as exc:
                raise ConfigError(
                    f"SLACK_APP_TOKEN was rejected by Slack ({exc.response.get('error')})"
                ) from exc
            handler = AsyncSocketModeHandler(self.app, app_token.get_secret_value())
            await handler.connect_async()  # type: ignore[no-untyped-call]
            log.info("Slack bot @%s is running (Socket Mode)", identity.get("user"))
            self.connected = True
            await stop.wait()
            self.connected = False
            await handler.close_async()  # type: ignore[no-untyped-call]
            await self._drain()
            return
        runner = web.AppRunner(self.web_app(), access_log=None)
        await runner.setup()
        # A burst of events opens many connections at once; a short backlog would drop some
        # and the client would retry a second later.
        site = web.TCPSite(runner, "0.0.0.0", self._settings.slack_port, backlog=1024)
        await site.start()
        log.info(
            "Slack bot @%s is running (HTTP on port %d, path %s)",
            identity.get("user"),
            self._settings.slack_port,
            EVENTS_PATH,
        )
        try:
            self.connected = True
            await stop.wait()
            self.connected = False
            await site.stop()
            await self._drain()
        finally:
            await runner.cleanup()

    def web_app(self) -> web.Application:
        """The aiohttp application serving events, commands and interactivity."""

        async def handle(request: web.Request) -> web.Response:
            with self._acks.acknowledging():
                try:
                    raw = await request.read()
                except web.HTTPRequestEntityTooLarge:
                    log.warning("refused a Slack request: body too large (413)")
                    return web.Response(status=413)
                refused = self._door.refusal(raw, request.headers) if self._door else None
                if refused is not None:
                    return web.Response(status=refused.status)
                headers: Headers = {name: request.headers.getall(name) for name in request.headers}
                if self._signed_event(raw, request.headers):
                    # An event needs nothing but a 200: answer at once, let Bolt (which
                    # checks the signature again) dispatch it afterwards.
                    self._spawn(self._dispatch(raw, request.query_string, headers))
                    return web.Response(status=200)
                bolt_request = AsyncBoltRequest(
                    body=raw.decode(), query=request.query_string, headers=headers
                )
                response = await self.app.async_dispatch(bolt_request)
                return await to_aiohttp_response(response)

        web_app = web.Application(client_max_size=MAX_BODY_BYTES)
        web_app.router.add_post(EVENTS_PATH, handle)
        return web_app

    def _signed_event(self, raw: bytes, headers: Mapping[str, str]) -> bool:
        """Whether ``raw`` is an ``event_callback`` carrying a valid, fresh signature."""
        if self._verifier is None or b'"event_callback"' not in raw:
            return False
        try:
            kind = json.loads(raw).get("type")
        except (ValueError, AttributeError):
            return False
        return kind == "event_callback" and self._verifier.is_valid(
            body=raw,
            timestamp=headers.get("X-Slack-Request-Timestamp", ""),
            signature=headers.get("X-Slack-Signature", ""),
        )

    async def _dispatch(self, raw: bytes, query: str, headers: Headers) -> None:
        request = AsyncBoltRequest(body=raw.decode(), query=query, headers=headers)
        response = await self.app.async_dispatch(request)
        if response.status >= 400:
            log.warning("Slack event not handled (%d): %s", response.status, response.body[:200])

    async def _drain(self) -> None:
        """Give replies in flight a moment to finish, then stop them (their text is kept)."""
        await self._pipeline.drain(CHANNEL, self._grace)
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=self._grace)

    # --- the outbound port -------------------------------------------------------------

    def reply(self, key: ConversationKey) -> Reply:
        """A reply in the DM, channel or thread ``key`` names."""
        return SlackReply(self.client, _place(key), self._flood, self._streaming)

    async def post(self, key: ConversationKey, markdown: str) -> str:
        """Post ``markdown`` in ``key``; returns the message's ts."""
        return await SlackReply(self.client, _place(key), self._flood).post(markdown)

    async def edit(self, key: ConversationKey, platform_message_id: str, markdown: str) -> None:
        """Replace the text of the bot's message ``platform_message_id`` (its ts)."""
        reply = SlackReply(self.client, _place(key), self._flood)
        reply.adopt(platform_message_id)
        await reply.post(markdown)

    async def send_file(self, key: ConversationKey, file: OutgoingFile) -> str:
        """Upload ``file`` to ``key``; returns Slack's file id."""
        return await SlackReply(self.client, _place(key), self._flood).send_file(file)

    def direct(self, user_id: str) -> ConversationKey:
        """Posting to a Slack user id posts in the app's DM with them (its messages can be
        posted, not edited, by that id)."""
        identity = self._identity.result
        team = (identity.team_id or identity.enterprise_id or "") if identity else ""
        return ConversationKey(CHANNEL, place=user_id, scope=team)

    # --- inbound -------------------------------------------------------------------------

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(self._after_acks(work))
        self._tasks.add(task)
        task.add_done_callback(self._finished)

    async def _after_acks(self, work: Coroutine[Any, Any, None]) -> None:
        await self._acks.quiet()
        await work

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("error while handling a Slack request", exc_info=task.exception())

    async def _on_event(
        self, body: dict[str, Any], event: dict[str, Any], context: AsyncBoltContext
    ) -> None:
        # Redeliveries are recognised by event id after the acknowledgement: the database
        # is not on the path that must answer Slack within 3 seconds.
        event_id = body.get("event_id")
        turn = translate(
            event,
            team=_team(context),
            bot_user_id=_bot(context),
            event_id=event_id if isinstance(event_id, str) else None,
        )
        if turn is not None:
            self._spawn(self._answer(turn))

    async def _ignore(self) -> None:
        return None

    async def _answer(self, turn: SlackTurn) -> None:
        place = turn.place

        def open_reply(activity: Activity) -> Reply:
            return SlackReply(self.client, place, self._flood, self._streaming)

        # Redeliveries are recognised (by the pipeline) before the reply starts and files
        # are fetched, so a redelivery never shows a thinking note or downloads anything.
        message = replace(turn.message, event_id=turn.delivery_id)
        # A file shared with /batch or /finetune in its message: the file for that job.
        command = parse_command(message.text.strip()) if turn.files else None
        batch = command is not None and command.name in FILE_COMMANDS
        await self._pipeline.handle(
            Delivery(
                message,
                open_reply,
                command=command if batch else None,
                fetch=self._fetch(turn, any_kind=batch),
                follow_up=turn.follow_up,
            )
        )

    def _fetch(self, turn: SlackTurn, *, any_kind: bool = False) -> FetchFiles | None:
        if not turn.files:
            return None

        async def fetch() -> tuple[Attachment, ...]:
            return await self._files.fetch(
                turn.files[:1] if any_kind else turn.files, any_kind=any_kind
            )

        return fetch

    async def _on_command(
        self,
        ack: AsyncAck,
        command: dict[str, Any],
        respond: AsyncRespond,
        context: AsyncBoltContext,
    ) -> None:
        name = str(command.get("command", "")).removeprefix("/").lower()
        if name in TURN_COMMANDS and str(command.get("text", "")).strip():
            await ack(text=WORKING[name], response_type="ephemeral")
        else:
            await ack()
        parsed = _slash_command(command)
        if parsed is None:
            return
        team, channel = _team(context), str(command.get("channel_id", ""))
        self._spawn(self._slash(team, channel, str(command.get("user_id", "")), parsed, respond))

    async def _slash(
        self, team: str, channel: str, user: str, command: Command, respond: AsyncRespond
    ) -> None:
        """A slash command: it acts on the DM or the channel it was typed in; ``/image`` and
        ``/edit`` post their picture there for everyone, the rest answer only the caller."""
        key = command_key(team, channel)
        message = IncomingMessage(key, user_ref(user), plain_text(command.args))

        async def answer(reply: CommandReply) -> None:
            await respond(**_response(reply))

        def open_reply(activity: Activity) -> Reply:
            place = SlackPlace(team, channel, user)
            return SlashCommandReply(self.client, place, self._flood, answer)

        if command.name in TURN_COMMANDS:
            # A picture's prompt is for the model: mentions and links as readable text.
            command = Command(command.name, plain_text(command.args))
        await self._pipeline.handle(
            Delivery(message, open_reply, command=command, threaded=not _direct(key), private=True)
        )

    async def _on_choice(
        self,
        ack: AsyncAck,
        body: dict[str, Any],
        respond: AsyncRespond,
        context: AsyncBoltContext,
    ) -> None:
        await ack()
        actions = body.get("actions") or [{}]
        command = parse_command(str(actions[0].get("value") or ""))
        channel = (body.get("channel") or {}).get("id")
        if command is None or not isinstance(channel, str):
            return
        team = _team(context)
        user = str((body.get("user") or {}).get("id", ""))
        key = command_key(team, channel)
        message = IncomingMessage(key, user_ref(user), command.args)

        async def answer(reply: CommandReply) -> None:
            await respond(replace_original=True, **_response(reply))

        def open_reply(activity: Activity) -> Reply:
            return SlashCommandReply(
                self.client, SlackPlace(team, channel, user), self._flood, answer
            )

        self._spawn(
            self._pipeline.handle(
                Delivery(
                    message, open_reply, command=command, threaded=not _direct(key), private=True
                )
            )
        )


class AcksFirst:
    """Lets a burst of requests be acknowledged before the work they start competes with
    them for the event loop: work waits until no request has been answered for ``settle``
    seconds, or at most ``max_wait`` seconds (Slack wants every answer within 3 seconds)."""

    def __init__(
        self, max_wait: float = ACK_PRIORITY_SECONDS, settle: float = ACK_SETTLE_SECONDS
    ) -> None:
        self._max_wait = max_wait
        self._settle = settle
        self._answering = 0
        self._last = 0.0
        self._idle = asyncio.Event()
        self._idle.set()

    @contextlib.contextmanager
    def acknowledging(self) -> Iterator[None]:
        """Mark a request as being answered for the duration of the block."""
        self._answering += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._answering -= 1
            self._last = time.monotonic()
            if not self._answering:
                self._idle.set()

    async def quiet(self) -> None:
        """Wait until requests have stopped arriving for a moment (bounded by ``max_wait``)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._max_wait):
                while True:
                    await self._idle.wait()
                    calm = time.monotonic() - self._last
                    if calm >= self._settle:
                        return
                    await asyncio.sleep(self._settle - calm)


class _Identity(AsyncAuthorize):
    """The bot's identity from the one ``auth.test`` made at start-up, for every request
    (Bolt's default asks Slack during the first requests, once per request in a burst)."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.result: AuthorizeResult | None = None

    async def __call__(
        self,
        *,
        context: AsyncBoltContext,
        enterprise_id: str | None,
        team_id: str | None,
        user_id: str | None,
        actor_enterprise_id: str | None = None,
        actor_team_id: str | None = None,
        actor_user_id: str | None = None,
    ) -> AuthorizeResult:
        """The start-up identity, whoever sent the request (requests are served only once
        ``run`` has asked Slack)."""
        assert self.result is not None
        return self.result


def _response(answer: CommandReply) -> dict[str, Any]:
    """A command's answer as an ephemeral response, its choices as buttons."""
    text = escape(answer.text)
    blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]
    buttons = [
        {
            "type": "button",
            "action_id": f"{ACTION_ID}:{index}",
            "text": {"type": "plain_text", "text": choice.label[:75]},
            "value": choice.command,
        }
        for index, choice in enumerate(answer.choices)
    ]
    for start in range(0, len(buttons), 25):  # an actions block holds at most 25 elements
        blocks.append({"type": "actions", "elements": buttons[start : start + 25]})
    return {"text": text, "blocks": blocks, "response_type": "ephemeral"}


def _place(key: ConversationKey) -> SlackPlace:
    """Where a message the core sends on its own goes: ``key``'s channel and thread."""
    return SlackPlace(key.scope, key.place, "", key.thread or None)


def _direct(key: ConversationKey) -> bool:
    return key.place.startswith("D")


def _slash_command(payload: dict[str, Any]) -> Command | None:
    """The command a slash-command payload carries (None if it parses as none)."""
    return parse_command(f"{payload.get('command', '')} {payload.get('text', '')}".strip())


def _team(context: AsyncBoltContext) -> str:
    return context.team_id or context.enterprise_id or ""


def _bot(context: AsyncBoltContext) -> str:
    return context.bot_user_id or ""
