"""The reference Agent Orchestrator: how a real orchestrator integrates with the service.

It is a separate program (``conversation-service orchestrator``) that talks to the Conversation
Service only over HTTP, exactly as the platform's orchestrator does:

1. it receives the signed ``message.created`` callback and verifies its Standard Webhooks
   signature (``webhook-id``, ``webhook-timestamp``, ``webhook-signature``), dropping repeats
   by ``webhook-id`` (delivery is at least once);
2. it reads the conversation (``GET /internal/v1/conversations/{id}``: which agent) and the
   context window (``GET …/{id}/context``: recent messages, summary, session and tracked
   context);
3. it opens a streaming assistant message (``POST …/{id}/messages`` with
   ``status: streaming``), sends the reply token by token (``POST …/messages/{mid}/deltas``,
   one indexed chunk per call, so a retried call is harmless) and completes it
   (``POST …/messages/{mid}/complete``), or fails it (``…/fail``) if anything goes wrong;
4. it serves ``GET /agents/{agent_id}``, which the service asks before it creates a
   conversation (Agent Management goes through the orchestrator).

The replies come from a small rule-based, bilingual demo agent (``agent.py``): no model is
downloaded. Nothing in ``conversation_service``'s core imports this package.
"""
