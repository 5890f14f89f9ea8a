"""The per-conversation event log: event types, the publisher and the Redis stream it writes.

Imported by the services (which decide what to publish) and by ``websocket/`` (which replays and
fans events out to viewers); it imports nothing of either.
"""
