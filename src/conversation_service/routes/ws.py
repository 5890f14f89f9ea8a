"""WebSocket endpoints: ``/api/v1/ws`` for users and ``/internal/v1/ws/stream`` for agents.

The protocols, frames and close codes are documented in ``websocket.handlers`` and
``websocket.agent``.
"""

from fastapi import APIRouter, WebSocket

from conversation_service.resources import Resources
from conversation_service.websocket import agent, handlers

router = APIRouter()


def _resources(websocket: WebSocket) -> Resources:
    resources: Resources = websocket.app.state.resources
    return resources


@router.websocket("/api/v1/ws")
async def client_socket(websocket: WebSocket) -> None:
    """Realtime events of the user's conversations (subscribe/resume by event id)."""
    await handlers.serve_client(websocket, _resources(websocket))


@router.websocket("/internal/v1/ws/stream")
async def agent_socket(websocket: WebSocket) -> None:
    """One connection for many streaming operations (create, delta, complete, fail)."""
    await agent.serve_agent(websocket, _resources(websocket))
