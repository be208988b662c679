"""The shipped Slack app manifest declares exactly what the bot uses."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

import bots.slack
from bots.slack.channel import EVENTS_PATH
from core.conversation.commands import COMMANDS

MANIFEST = Path(bots.slack.__file__).parent / "manifest.yaml"
# The scope each subscribed event needs (Slack's event reference).
EVENT_SCOPES = {
    "app_mention": "app_mentions:read",
    "message.channels": "channels:history",
    "message.groups": "groups:history",
    "message.im": "im:history",
}


def manifest() -> dict[str, Any]:
    loaded = yaml.safe_load(MANIFEST.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def test_every_chat_command_is_a_slash_command_at_the_events_path() -> None:
    commands = manifest()["features"]["slash_commands"]

    assert [c["command"] for c in commands] == [f"/{name}" for name in COMMANDS]
    assert {urlparse(c["url"]).path for c in commands} == {EVENTS_PATH}
    assert all(c["description"] and len(c["description"]) <= 100 for c in commands)


def test_events_and_interactivity_go_to_the_events_path() -> None:
    settings = manifest()["settings"]

    assert urlparse(settings["event_subscriptions"]["request_url"]).path == EVENTS_PATH
    assert settings["interactivity"]["is_enabled"] is True
    assert urlparse(settings["interactivity"]["request_url"]).path == EVENTS_PATH


def test_scopes_are_exactly_what_the_events_and_replies_need() -> None:
    data = manifest()
    events = data["settings"]["event_subscriptions"]["bot_events"]
    scopes = data["oauth_config"]["scopes"]["bot"]

    assert set(events) == set(EVENT_SCOPES)
    # Replies, slash commands, and files: downloading what users send, uploading pictures
    # and spoken replies.
    used = {"chat:write", "commands", "files:read", "files:write"}
    assert sorted(scopes) == sorted({*EVENT_SCOPES.values(), *used})
    assert data["features"]["app_home"]["messages_tab_enabled"] is True  # DMs reach the bot
