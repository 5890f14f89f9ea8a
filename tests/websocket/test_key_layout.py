"""The Redis key layout: every key of one conversation in one cluster slot, so that each script
runs on one node; per-user keys tagged by the user they count."""

import uuid

from redis.crc import key_slot

from conversation_service.events.log import (
    events_key,
    live_channel,
    partial_key,
    summary_lock_key,
)
from conversation_service.services.rate_limits import tag, ws_slots_key
from conversation_service.services.sessions import context_key


def test_every_key_and_the_channel_of_a_conversation_share_one_slot() -> None:
    cid, mid = uuid.uuid4(), uuid.uuid4()
    names = [
        events_key(cid),
        live_channel(cid),
        partial_key(cid, mid),
        partial_key(cid, uuid.uuid4()),
        summary_lock_key(cid),
    ]
    assert all("{" + str(cid) + "}" in name for name in names)
    assert len({key_slot(name.encode()) for name in names}) == 1


def test_per_user_and_per_session_keys_are_tagged_by_what_they_count() -> None:
    session = uuid.uuid4()
    assert context_key(session).endswith("{" + str(session) + "}")
    assert ws_slots_key("abc123").endswith("{abc123}")
    assert tag("abc123") == "{abc123}"  # rate counters: a user's requests and appends, one slot
