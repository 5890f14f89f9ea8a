"""Operators' metrics of background work: queue depth and oldest job, the outbox backlog and
readiness on the API's ``/metrics``; jobs and callback deliveries on a worker's own port."""

import asyncio
import uuid

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import create_conversation
from tests.live_server import free_port
from tests.queue.conftest import QueueEnv

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_metrics_show_each_queue_and_the_outbox_backlog(queue_env: QueueEnv) -> None:
    cid = (await create_conversation(queue_env.client))["id"]
    for content in ("one", "two"):
        response = await queue_env.client.post(
            f"/api/v1/conversations/{cid}/messages", json={"content": content}
        )
        assert response.status_code == 201
    waiting = await queue_env.jobs(status="pending")
    await queue_env.wait_dispatched(*(job["id"] for job in waiting))
    levels = ("high", "default", "low")
    by_queue = {level: sum(job["queue"] == level for job in waiting) for level in levels}

    samples = parse((await queue_env.client.get("/metrics")).text)
    for level, count in by_queue.items():
        assert samples[("conversation_queue_depth", (("queue", level),))] == count
    assert samples[("conversation_queue_depth", (("queue", "high"),))] >= 2
    for level, count in by_queue.items():
        age = samples[("conversation_queue_oldest_job_age_seconds", (("queue", level),))]
        assert age >= 0 if count else age == 0
    assert samples[("conversation_outbox_jobs", (("status", "pending"),))] == len(waiting)
    assert samples[("conversation_outbox_jobs", (("status", "queued"),))] == 0
    assert samples[("conversation_outbox_oldest_age_seconds", (("status", "pending"),))] >= 0
    for dependency in ("database", "redis"):
        assert samples[("conversation_dependency_up", (("dependency", dependency),))] == 1

    await queue_env.run_worker()
    drained = parse((await queue_env.client.get("/metrics")).text)
    assert drained[("conversation_queue_depth", (("queue", "high"),))] == 0
    assert drained[("conversation_outbox_jobs", (("status", "pending"),))] == 0


async def test_a_worker_serves_job_and_callback_metrics_on_its_port(queue_env: QueueEnv) -> None:
    queue_env.receiver.statuses = [503]  # the first delivery attempt fails, the retry lands
    port = free_port()
    queue_env.start_worker(CONVERSATION_WORKER_METRICS_PORT=str(port))
    cid = (await create_conversation(queue_env.client))["id"]
    await queue_env.client.post(f"/api/v1/conversations/{cid}/messages", json={"content": "hi"})

    async def delivered() -> bool:
        jobs = await queue_env.jobs(conversation_id=uuid.UUID(cid), kind="deliver_callback")
        return bool(jobs) and all(job["status"] == "finished" for job in jobs)

    await queue_env.wait_until(delivered, what="the callback to be delivered")
    samples: Samples = {}
    # The message's sentiment job (a follow-up of its processing) publishes sentiment.updated.
    sentiment = ("conversation_events_published_total", (("type", "sentiment.updated"),))
    async with httpx.AsyncClient() as http:
        for _ in range(1500):  # the worker records a job's outcome just after its row
            samples = parse((await http.get(f"http://127.0.0.1:{port}/metrics")).text)
            if samples.get(
                ("conversation_callback_attempts_total", (("outcome", "delivered"),))
            ) and samples.get(sentiment):
                break
            await asyncio.sleep(0.02)

    def jobs(kind: str, outcome: str) -> float:
        return samples.get(("conversation_jobs_total", (("kind", kind), ("outcome", outcome))), 0)

    assert jobs("process_message", "finished") >= 1
    assert jobs("deliver_callback", "retried") == 1
    assert jobs("deliver_callback", "finished") >= 1
    key = ("kind", "deliver_callback"), ("outcome", "finished")
    assert samples[("conversation_job_duration_seconds_count", key)] >= 1
    assert samples[("conversation_callback_attempts_total", (("outcome", "retrying"),))] == 1
    assert samples[("conversation_callback_attempts_total", (("outcome", "delivered"),))] >= 1
    # message.created took two attempts: a delivery's attempts are observed when it ends.
    outcome = (("outcome", "delivered"),)
    at_once = samples[("conversation_callback_delivery_attempts_bucket", (("le", "1.0"), *outcome))]
    assert at_once < samples[("conversation_callback_delivery_attempts_count", outcome)]
    assert samples[("conversation_callback_latency_seconds_count", (("outcome", "retrying"),))] == 1
    assert samples[sentiment] >= 1
