"""Conversations: the inbound steps, running turns, context, history, the store port,
commands and reply events."""
