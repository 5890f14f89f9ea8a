"""End to end on a live ``dev`` stack: a user message reaches the reference orchestrator as a
signed callback, and its reply streams back token by token and lands completed in the database.
"""

import sqlite3
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from websockets.sync.client import ClientConnection, connect

from tests.devstack_process import DevStackProcess

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStackProcess]:
    with DevStackProcess(tmp_path_factory.mktemp("e2e")) as stack:
        yield stack


@dataclass
class Turn:
    """What one user message produced, as a subscriber saw it."""

    user: dict[str, Any]
    reply: dict[str, Any]
    deltas: list[dict[str, Any]] = field(default_factory=list)
    delta_times: list[float] = field(default_factory=list)


@contextmanager
def subscribe(
    stack: DevStackProcess, token: str, conversation_id: str
) -> Iterator[ClientConnection]:
    """A client WebSocket subscribed to the conversation from now on."""
    with connect(f"ws://127.0.0.1:{stack.api_port}/api/v1/ws?token={token}") as socket:
        frame = {"type": "subscribe", "conversation_id": conversation_id}
        socket.send(orjson.dumps(frame).decode())
        while orjson.loads(socket.recv(timeout=10))["type"] != "subscribed":
            pass
        yield socket


def converse(
    stack: DevStackProcess, socket: ClientConnection, conversation_id: str, text: str
) -> Turn:
    """Send ``text`` and follow the events until the assistant's reply completes."""
    with stack.client() as client:
        sent = client.post(
            f"/api/v1/conversations/{conversation_id}/messages", json={"content": text}
        )
    assert sent.status_code == 201, sent.text
    user = sent.json()
    reply_id: str | None = None
    turn = Turn(user=user, reply={})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        frame = orjson.loads(socket.recv(timeout=30))
        data = frame.get("data") or {}
        message = data.get("message") or {}
        if frame["type"] == "message.created" and message.get("parent_id") == user["id"]:
            reply_id = message["id"]
            assert message["status"] == "streaming"
        elif frame["type"] == "message.delta" and data["message_id"] == reply_id:
            turn.deltas.append(data)
            turn.delta_times.append(time.monotonic())
        elif frame["type"] == "message.completed" and message.get("id") == reply_id:
            turn.reply = message
            return turn
    raise AssertionError(stack.describe(f"no completed reply to {text!r}"))


def stored(stack: DevStackProcess, message_id: str) -> tuple[str, str, str, str]:
    """(role, status, content, parent_id) of a message, read from the SQLite file itself."""
    with sqlite3.connect(stack.data_dir / "conversations.db") as db:
        row = db.execute(
            "SELECT role, status, content, parent_id FROM messages WHERE id = ?",
            (uuid.UUID(message_id).hex,),
        ).fetchone()
    assert row is not None
    return row[0], row[1], row[2], uuid.UUID(row[3]).hex


def _new_conversation(stack: DevStackProcess) -> str:
    """A conversation of the demo assistant, created through the stack's API."""
    with stack.client() as client:
        created = client.post("/api/v1/conversations", json={"agent_id": "demo-assistant"})
    conversation_id: str = created.json()["id"]
    return conversation_id


def test_reply_streams_token_by_token_and_lands_completed(stack: DevStackProcess) -> None:
    token = stack.token()
    conversation_id = _new_conversation(stack)
    with subscribe(stack, token, conversation_id) as socket:
        turn = converse(stack, socket, conversation_id, "Hi! My name is Ana and I love Lisbon.")

    indexes = [delta["index"] for delta in turn.deltas]
    assert indexes == list(range(len(indexes))), "every token once, in order"
    assert len(indexes) > 10
    streamed = "".join(delta["text"] for delta in turn.deltas)
    assert streamed == turn.reply["content"]
    assert turn.reply["content"].startswith("Hi Ana! I'm Demo Assistant.")
    gaps = [b - a for a, b in zip(turn.delta_times, turn.delta_times[1:], strict=False)]
    assert sum(gaps) / len(gaps) > 0.01, "paced like typing, not dumped at once"
    assert turn.reply["metadata"]["model"] == "demo-agent/1"
    assert stored(stack, turn.reply["id"]) == (
        "assistant",
        "completed",
        streamed,
        uuid.UUID(turn.user["id"]).hex,
    )


def test_reply_uses_earlier_turns_and_the_users_language(stack: DevStackProcess) -> None:
    token = stack.token()
    with stack.client() as client:
        created = client.post("/api/v1/conversations", json={"agent_id": "support-agent"})
    conversation_id = created.json()["id"]
    with subscribe(stack, token, conversation_id) as socket:
        first = converse(
            stack, socket, conversation_id, "Hola, me llamo Lucía y mi factura está mal."
        )
        second = converse(
            stack, socket, conversation_id, "¿Puedes revisar el importe del mes pasado?"
        )
        third = converse(stack, socket, conversation_id, "What's my name?")

    assert first.reply["content"].startswith("Hola Lucía, gracias por contactar con soporte.")
    assert first.reply["metadata"]["language"] == "es"
    assert (
        "Antes mencionaste «Hola, me llamo Lucía y mi factura está mal»" in second.reply["content"]
    )
    assert "Lucía" in second.reply["content"]
    assert "Your name is Lucía" in third.reply["content"]
    assert third.reply["metadata"]["language"] == "en"


def test_a_support_request_is_handed_to_the_support_agent_who_greets_by_name(
    stack: DevStackProcess,
) -> None:
    token = stack.token()
    conversation_id = _new_conversation(stack)
    with subscribe(stack, token, conversation_id) as socket:
        converse(stack, socket, conversation_id, "Hi! My name is Ana.")
        asked = converse(stack, socket, conversation_id, "I need support with my invoice.")
        frames: list[dict[str, Any]] = []
        greeting: dict[str, Any] | None = None
        deadline = time.monotonic() + 30
        while greeting is None and time.monotonic() < deadline:
            frame = orjson.loads(socket.recv(timeout=30))
            frames.append(frame)
            message = (frame.get("data") or {}).get("message") or {}
            if frame["type"] == "message.completed" and message.get("agent_id") == "support-agent":
                greeting = message
    assert greeting is not None, stack.describe("no greeting from the support agent")

    assert asked.reply["agent_id"] == "demo-assistant"
    assert "I'm handing you over to Support Agent" in asked.reply["content"]
    (changed,) = [f["data"] for f in frames if f["type"] == "conversation.agent_changed"]
    assert (changed["from_agent_id"], changed["to_agent_id"]) == ("demo-assistant", "support-agent")
    lines = [
        f["data"]["message"]
        for f in frames
        if f["type"] == "message.created" and f["data"]["message"]["role"] == "system"
    ]
    assert [line["metadata"]["type"] for line in lines] == ["handoff"]
    assert greeting["parent_id"] == lines[0]["id"]
    assert greeting["content"].startswith("Hi Ana, I'm Support Agent. Demo Assistant told me")
    with stack.client() as client:
        conversation = client.get(f"/api/v1/conversations/{conversation_id}").json()
    assert conversation["agent_id"] == "support-agent"
    assert conversation["agents"] == ["demo-assistant", "support-agent"]


def test_a_regenerated_reply_streams_back_as_a_sibling(stack: DevStackProcess) -> None:
    token = stack.token()
    conversation_id = _new_conversation(stack)
    with subscribe(stack, token, conversation_id) as socket:
        turn = converse(stack, socket, conversation_id, "Hi! My name is Ana and I love Lisbon.")
        with stack.client() as client:
            url = f"/api/v1/conversations/{conversation_id}/messages/{turn.reply['id']}/regenerate"
            asked = client.post(url)
        assert asked.status_code == 202, asked.text
        again: dict[str, Any] = {}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not again:
            frame = orjson.loads(socket.recv(timeout=30))
            message = (frame.get("data") or {}).get("message") or {}
            if frame["type"] == "message.completed" and message.get("id") != turn.reply["id"]:
                again = message
    assert again, stack.describe("no regenerated reply")
    assert again["parent_id"] == turn.user["id"]
    assert again["content"].startswith("Hi Ana!")
    with stack.client() as client:
        siblings = client.get(
            f"/api/v1/conversations/{conversation_id}/messages/{again['id']}/siblings"
        ).json()["data"]
    assert [m["id"] for m in siblings] == [turn.reply["id"], again["id"]]
