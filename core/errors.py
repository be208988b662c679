"""The one exception tree of Switchboard, and the one place that turns errors into replies.

SwitchboardError
├── ConfigError            a setting or data file is missing or malformed
│   └── PriceMissing       (core.money.prices) no price for a billable unit
├── UserInputError         the user's message or command cannot be acted on
│   ├── UnknownChoice      an unknown mode or model name
│   ├── BudgetExceeded     (core.money.budgets) a call does not fit in what a budget has left
│   ├── UnsupportedMedia   a picture or sound that cannot be read (corrupt, empty, unknown)
│   └── MediaTooLarge      a file over a platform's or the API's size limit
├── ToolError              a tool failed; its message goes back to the model
├── ChannelUnavailable     a chat platform the core wants to post to is not reachable here
├── InvalidWebhook         an OpenAI webhook whose signature does not verify
├── StorageUnavailable     the database cannot be reached: writes are retried, then spooled
└── UpstreamError          the model provider failed (vendor errors are translated to these)
    ├── RateLimited        429 without ``insufficient_quota``: retried with backoff
    ├── QuotaExhausted     the provider account is out of credit: never retried
    ├── ContextTooLong     the request did not fit the model's context window
    ├── UpstreamRejected   any other 4xx: the request itself was refused
    ├── UpstreamMisconfigured  the bot's own settings are wrong: no retry, tell an admin
    │   ├── ApiKeyRejected     401: OPENAI_API_KEY is wrong or revoked
    │   ├── AccessDenied       403: the key's project or region may not use this
    │   ├── EndpointNotFound   404 on the endpoint, HTML or non-API answers: OPENAI_BASE_URL
    │   └── ModelNotFound      the model does not exist (any more): its successor is tried
    └── UpstreamUnavailable 5xx (an outage): retried with backoff
        ├── UpstreamUnreachable  connection refused, DNS or TLS failure: retried
        ├── UpstreamTimeout      no answer within SWITCHBOARD_OPENAI_TIMEOUT_SECONDS: retried
        └── SessionCut           a realtime session ended before its answer was complete

Upstream messages are written for operators (they are logged, and name the setting to check);
``user_message`` gives chat users the short words instead.
"""

from __future__ import annotations


class SwitchboardError(Exception):
    """Root of every error Switchboard raises on purpose."""


class ConfigError(SwitchboardError):
    """A setting or data file is missing or malformed; the message names it."""


class UserInputError(SwitchboardError):
    """The user's input cannot be acted on; the message is safe to show them."""


class UnknownChoice(UserInputError):
    """A mode or model name that the registry does not know."""


class UnsupportedMedia(UserInputError):
    """A picture or sound file that cannot be read: corrupt, empty or of an unknown kind."""


class MediaTooLarge(UserInputError):
    """A file over a platform's or the API's size limit; the message says the limit."""


class ToolError(SwitchboardError):
    """A tool failed; the message is fed back to the model as the tool's result."""


class InvalidWebhook(SwitchboardError):
    """A webhook delivery that is not signed with ``OPENAI_WEBHOOK_SECRET`` (or is too old)."""


class ChannelUnavailable(SwitchboardError):
    """A chat platform the core wants to post to does not run in this process, or no
    longer knows the message to edit."""


class StorageUnavailable(SwitchboardError):
    """The database did not answer (down, unreachable, locked): a write may succeed later."""


class UpstreamError(SwitchboardError):
    """The model provider failed. ``request_id`` is the provider's id for the call, if known."""

    def __init__(self, message: str, *, request_id: str | None = None) -> None:
        super().__init__(message)
        self.request_id = request_id


class RateLimited(UpstreamError):
    """The provider asked us to slow down; ``retry_after`` is its hint in seconds."""

    def __init__(
        self, message: str, *, retry_after: float | None = None, request_id: str | None = None
    ) -> None:
        super().__init__(message, request_id=request_id)
        self.retry_after = retry_after


class QuotaExhausted(UpstreamError):
    """The provider account has no credit left (``insufficient_quota``)."""


class ContextTooLong(UpstreamError):
    """The request exceeded the model's context window."""


class UpstreamRejected(UpstreamError):
    """The provider refused the request for a reason other than its length."""


class UpstreamMisconfigured(UpstreamError):
    """The provider refused the bot's own configuration; retrying cannot help."""


class ApiKeyRejected(UpstreamMisconfigured):
    """401: the API key is wrong, revoked or lacks the permission the call needs."""


class AccessDenied(UpstreamMisconfigured):
    """403: the key's organisation, project or region may not use this model or endpoint."""


class EndpointNotFound(UpstreamMisconfigured):
    """The base URL does not lead to an OpenAI-compatible API (404, HTML, missing ``/v1``)."""


class ModelNotFound(UpstreamMisconfigured):
    """The provider says the model does not exist or the account cannot use it (a 404
    ``model_not_found``): it was shut down, or was never offered to this account."""


class UpstreamUnavailable(UpstreamError):
    """The provider could not be reached or failed on its side."""


class UpstreamUnreachable(UpstreamUnavailable):
    """No connection could be made: refused, unknown host, TLS failure."""


class UpstreamTimeout(UpstreamUnavailable):
    """The provider did not answer in time."""


class SessionCut(UpstreamUnavailable):
    """A realtime voice session closed before its answer was complete."""


def user_message(error: BaseException) -> str:
    """Return the short, friendly text a chat user sees for ``error``; never a traceback."""
    if isinstance(error, UserInputError):
        return str(error)
    if isinstance(error, QuotaExhausted):
        return "The assistant's OpenAI account is out of credit. Please tell an admin."
    if isinstance(error, RateLimited):
        return "The assistant is busy right now. Please try again in a minute."
    if isinstance(error, ContextTooLong):
        return "That conversation is too long for the model. Send /reset to start a new one."
    if isinstance(error, ModelNotFound):
        return (
            "The model for this is no longer offered by OpenAI. Choose another with /model, "
            "or tell an admin."
        )
    if isinstance(error, UpstreamMisconfigured):
        return "The assistant is misconfigured and cannot reach its model; an admin has been told."
    if isinstance(error, UpstreamRejected):
        return "The model could not answer that request. Try rephrasing it, or /reset."
    if isinstance(error, SessionCut):
        return "The voice connection was cut before the answer was complete. Please try again."
    if isinstance(error, UpstreamTimeout):
        return "The model took too long to answer. Please try again."
    if isinstance(error, UpstreamUnreachable):
        return "The model service cannot be reached right now. Please try again shortly."
    if isinstance(error, UpstreamUnavailable):
        return "The model service is not answering right now. Please try again shortly."
    if isinstance(error, StorageUnavailable):
        return (
            "I can't reach my database right now, so I couldn't take that message. "
            "Please send it again in a minute."
        )
    return "Something went wrong on our side. Please try again."
