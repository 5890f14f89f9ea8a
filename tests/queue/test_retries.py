"""Retries recorded in the job row: ids per attempt, and only the RQ job a row waits for runs it.

The recovery of a retry after Redis and the worker die is in
``tests/faults/test_retry_after_faults.py``.
"""

import uuid
from types import SimpleNamespace

from conversation_service.queue.consumer import retry_delay, run_job
from conversation_service.services import processing
from conversation_service.services.outbox import JobKind, JobSpec, spec_from_row
from tests.conftest import create_conversation, make_settings
from tests.queue.conftest import QueueEnv


async def test_an_rq_job_the_row_does_not_wait_for_cannot_run_it(queue_env: QueueEnv) -> None:
    cid = (await create_conversation(queue_env.client))["id"]
    response = await queue_env.client.post(
        f"/api/v1/conversations/{cid}/messages", json={"content": "Good morning!"}
    )
    [row] = await queue_env.jobs(message_id=uuid.UUID(response.json()["id"]))
    spec = spec_from_row(SimpleNamespace(**row))
    job_id, settings = str(row["id"]), queue_env.settings

    # A late copy of another attempt (a retry a scheduler moved after the sweep replaced it).
    stale = await run_job(job_id, processing.process_message, settings, rq_job_id=spec.rq_job_id(1))
    assert stale == {"skipped": True}
    [untouched] = await queue_env.jobs(id=row["id"])
    assert (untouched["status"], untouched["attempts"]) == ("pending", 0)

    done = await run_job(job_id, processing.process_message, settings, rq_job_id=spec.rq_job_id())
    assert "language" in done
    [finished] = await queue_env.jobs(id=row["id"])
    assert (finished["status"], finished["attempts"]) == ("finished", 1)


def test_rq_ids_are_deterministic_per_attempt_and_per_rescue() -> None:
    spec = JobSpec(
        kind=JobKind.DELIVER_CALLBACK,
        queue="high",
        tenant_id="t",
        conversation_id=None,
        id=uuid.UUID(int=7),
    )
    first = spec.rq_job_id()
    assert first == f"deliver_callback-{uuid.UUID(int=7).hex}"
    # After failed claim 1, the retry's id; a rescue of it by the sweep, and another.
    assert spec.next_rq_job_id(1, first) == f"{first}-r1"
    assert spec.next_rq_job_id(1, f"{first}-r1") == f"{first}-r1-s1"
    assert spec.next_rq_job_id(1, f"{first}-r1-s1") == f"{first}-r1-s2"
    # A pending row the relay dispatched under its first id, rescued.
    assert spec.next_rq_job_id(0, first) == f"{first}-s1"
    assert spec.next_rq_job_id(2, f"{first}-r1-s2") == f"{first}-r2"


def test_retry_delays_follow_the_configured_intervals(database_url: str) -> None:
    settings = make_settings(
        database_url,
        "redis://127.0.0.1:1/0",
        job_retry_intervals="2,10",
        callback_retry_intervals="1",
    )
    assert [retry_delay(settings, "process_message", n) for n in (1, 2, 3)] == [2, 10, 10]
    assert [retry_delay(settings, "deliver_callback", n) for n in (1, 4)] == [1, 1]
