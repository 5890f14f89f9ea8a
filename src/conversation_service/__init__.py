"""Conversation Service: history, context windows, sessions, streaming and background work."""

__version__ = "0.1.0"
