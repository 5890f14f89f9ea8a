"""Task requests, job status, priorities, summaries and recovery from a killed worker."""

import uuid

from tests.conftest import create_conversation, new_caller
from tests.queue.conftest import QueueEnv, kill_tree

# Ten user messages long enough that a summary_buffer window of 120 tokens must summarise.
TRIP_FACTS = [
    "I am planning a trip to Japan in April with my wife.",
    "We want to visit Kyoto temples and see the cherry blossoms.",
    "Our budget is about four thousand dollars for two weeks.",
    "We prefer traditional ryokan hotels over modern chains.",
    "My wife is vegetarian, so restaurants need vegetarian options.",
    "We land in Tokyo Narita airport on April third in the morning.",
    "I would like one night in a capsule hotel just for the experience.",
    "We both enjoy hiking, so a mountain trail near Kyoto would be great.",
    "Please avoid very early trains, we are not morning people.",
    "Our anniversary is on April tenth, so a special dinner that night.",
]


async def test_task_request_runs_and_notifies_its_callback(queue_env: QueueEnv) -> None:
    cid = (await create_conversation(queue_env.client))["id"]
    await queue_env.client.post(
        f"/api/v1/conversations/{cid}/messages", json={"content": "This is terrible, I hate it."}
    )
    response = await queue_env.client.post(
        f"/internal/v1/conversations/{cid}/tasks",
        json={"kind": "sentiment", "priority": "high", "callback_url": queue_env.receiver.url},
        headers=queue_env.service,
    )
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["status"] == "pending"
    assert job["queue"] == "high"
    await queue_env.run_worker()
    status = (
        await queue_env.client.get(f"/internal/v1/jobs/{job['id']}", headers=queue_env.service)
    ).json()
    assert status["status"] == "finished"
    assert status["result"]["label"] == "negative"
    public = await queue_env.client.get(f"/api/v1/jobs/{job['id']}")
    assert public.json()["status"] == "finished"
    stranger = await queue_env.client.get(f"/api/v1/jobs/{job['id']}", headers=new_caller().headers)
    assert stranger.status_code == 404
    completed = [r for r in queue_env.receiver.received if r.event_type == "task.completed"]
    # Sent to the task's callback_url and the orchestrator's (here the same receiver URL,
    # deduplicated: one delivery).
    assert len(completed) == 1
    assert completed[0].verified
    assert completed[0].body["data"]["job_id"] == job["id"]


async def test_high_jobs_run_before_waiting_low_jobs(queue_env: QueueEnv) -> None:
    cid = (await create_conversation(queue_env.client))["id"]
    for i in range(3):
        await queue_env.client.post(
            f"/api/v1/conversations/{cid}/messages", json={"content": f"m {i}"}
        )
    low = [
        (
            await queue_env.client.post(
                f"/internal/v1/conversations/{cid}/tasks",
                json={"kind": "sentiment", "priority": "low"},
                headers=queue_env.service,
            )
        ).json()
        for _ in range(3)
    ]
    high = (
        await queue_env.client.post(
            f"/internal/v1/conversations/{cid}/tasks",
            json={"kind": "process", "priority": "high"},
            headers=queue_env.service,
        )
    ).json()
    assert {j["queue"] for j in low} == {"low"}
    await queue_env.wait_dispatched(high["id"], *(j["id"] for j in low))
    await queue_env.run_worker()
    rows = {str(r["id"]): r for r in await queue_env.jobs(conversation_id=uuid.UUID(cid))}
    assert all(rows[j["id"]]["started_at"] > rows[high["id"]]["started_at"] for j in low)


async def test_killed_worker_job_is_run_again(queue_env: QueueEnv) -> None:
    queue_env.receiver.delay = 1.5  # the worker is killed while it waits for the receiver
    cid = (await create_conversation(queue_env.client))["id"]
    await queue_env.client.post(f"/api/v1/conversations/{cid}/messages", json={"content": "hi"})
    worker = queue_env.start_worker()
    await queue_env.wait_until(lambda: len(queue_env.receiver.received) >= 1, what="first attempt")
    kill_tree(worker)
    queue_env.receiver.delay = 0
    # The lease (2 s) runs out, the sweep re-dispatches, a new worker finishes the job.
    callback_job = await queue_env.wait_until(
        lambda: _started_or_requeued(queue_env, cid),
        what="the sweep to requeue the job",
        limit=30,
    )
    await queue_env.run_worker()
    done = await queue_env.jobs(id=callback_job)
    assert done[0]["status"] == "finished"
    assert done[0]["attempts"] == 2
    # Every attempt of that delivery (the killed one, if it got out, and the retry) carries the
    # same webhook-id, so the receiver can drop the repeat.
    webhook = "msg_" + uuid.UUID(done[0]["args"]["delivery_id"]).hex
    assert [r.webhook_id for r in queue_env.receiver.received].count(webhook) in (1, 2)


async def _started_or_requeued(env: QueueEnv, cid: str) -> uuid.UUID | None:
    for job in await env.jobs(conversation_id=uuid.UUID(cid), kind="deliver_callback"):
        # rq_job_id is set once the sweep has re-dispatched it.
        redispatched = (job["rq_job_id"] or "").endswith("-r1")
        if job["attempts"] == 1 and job["status"] == "queued" and redispatched:
            return job["id"]  # type: ignore[no-any-return]
    return None


async def test_summary_is_generated_incrementally_and_versions_are_kept(
    queue_env: QueueEnv,
) -> None:
    cid = (
        await create_conversation(
            queue_env.client, memory_policy={"strategy": "summary_buffer", "max_tokens": 120}
        )
    )["id"]
    facts = TRIP_FACTS
    for fact in facts:
        await queue_env.client.post(f"/api/v1/conversations/{cid}/messages", json={"content": fact})
    await queue_env.run_worker(CONVERSATION_SUMMARY_TRIGGER_TOKENS="40")
    first = await queue_env.client.get(f"/api/v1/conversations/{cid}/summary")
    assert first.status_code == 200, first.text
    v1 = first.json()
    assert v1["version"] == 1
    more = [
        "Also we would love a day trip to Nara to see the deer park.",
        "Can you suggest a rail pass that covers Tokyo, Kyoto and Nara?",
        "We need to be back in Tokyo by April sixteenth for our flight home.",
        "A tea ceremony in Uji would be a lovely addition to the plan.",
        "We would also like to see the Fushimi Inari shrine at sunrise.",
        "Souvenir shopping in Nishiki market is on my wife's list too.",
    ]
    for fact in more:
        await queue_env.client.post(f"/api/v1/conversations/{cid}/messages", json={"content": fact})
    await queue_env.run_worker(CONVERSATION_SUMMARY_TRIGGER_TOKENS="40")
    v2 = (await queue_env.client.get(f"/api/v1/conversations/{cid}/summary")).json()
    assert v2["version"] == 2
    assert v2["covers_until_seq"] > v1["covers_until_seq"]
    context = (
        await queue_env.client.get(
            f"/internal/v1/conversations/{cid}/context", headers=queue_env.service
        )
    ).json()
    assert context["summary"]["version"] == 2
    assert context["token_count"] <= 120
    assert all(m["seq"] > v2["covers_until_seq"] for m in context["messages"])
    summary_jobs = await queue_env.jobs(conversation_id=uuid.UUID(cid), kind="generate_summary")
    assert len({j["dedupe_key"] for j in summary_jobs}) == len(summary_jobs)


async def test_a_branch_gets_a_summary_of_its_own_path(queue_env: QueueEnv) -> None:
    cid = (
        await create_conversation(
            queue_env.client, memory_policy={"strategy": "summary_buffer", "max_tokens": 120}
        )
    )["id"]
    url = f"/api/v1/conversations/{cid}/messages"
    line = TRIP_FACTS
    sent = [(await queue_env.client.post(url, json={"content": text})).json() for text in line]
    await queue_env.run_worker(CONVERSATION_SUMMARY_TRIGGER_TOKENS="40")
    first = await queue_env.client.get(f"/api/v1/conversations/{cid}/summary")
    assert first.status_code == 200, first.text
    assert first.json()["version"] == 1
    # Edit the second message: the new branch shares only the first message with the line.
    branch = [
        "Actually we would rather see Hokkaido and its snow festival instead.",
        "Sapporo beer museum and the ramen alley are high on our list.",
        "We want to rent a car and drive around Lake Toya for two days.",
        "A hot spring in Noboribetsu would be perfect after the drive.",
        "Our flight home leaves from New Chitose airport in the evening.",
        "We would also love to see the blue pond near Biei in winter.",
        "Can you suggest a rail pass that covers Sapporo, Otaru and Hakodate?",
        "A day in the Otaru canal district with its glass workshops sounds lovely.",
    ]
    edited = {"content": branch[0], "parent_id": sent[0]["id"]}
    assert (await queue_env.client.post(url, json=edited)).status_code == 201
    for text in branch[1:]:
        await queue_env.client.post(url, json={"content": text})
    await queue_env.run_worker(CONVERSATION_SUMMARY_TRIGGER_TOKENS="40")
    second = (await queue_env.client.get(f"/api/v1/conversations/{cid}/summary")).json()
    assert second["version"] == 2
    for only_on_the_line in ("ryokan", "vegetarian", "capsule", "Narita"):
        assert only_on_the_line not in second["text"]
    context = (
        await queue_env.client.get(
            f"/internal/v1/conversations/{cid}/context", headers=queue_env.service
        )
    ).json()
    assert context["summary"]["version"] == 2
    assert all("ryokan" not in m["content"] for m in context["messages"])
