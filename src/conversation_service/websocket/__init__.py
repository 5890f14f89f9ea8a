"""Realtime delivery: the event log, the per-process live hub and the WebSocket handlers."""
