"""Slack channel."""
