"""Switchboard's channel-agnostic core: conversations, tools, models and the ports they use."""
