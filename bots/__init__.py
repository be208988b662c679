"""Switchboard's entry points: the composition root, the channels and the command line."""
