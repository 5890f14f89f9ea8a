"""The chat page in a real browser (Debian's headless Chromium driven by Playwright) against a
live ``dev`` stack: create a conversation, chat in English and Spanish, watch the replies stream,
survive a dropped connection without losing a token, and save a screenshot for the README; a
handoff between agents; edit a message, regenerate a reply and switch between the versions.
"""

import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from tests.devstack_process import DevStackProcess

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "screenshot.png"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="Debian's chromium is not installed (apt-get install chromium; .ci/run does)",
    ),
]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStackProcess]:
    with DevStackProcess(tmp_path_factory.mktemp("browser")) as stack:
        yield stack


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            await browser.close()


async def send(page: Page, text: str) -> None:
    await page.get_by_test_id("composer-input").fill(text)
    await page.get_by_test_id("composer-input").press("Enter")


async def open_new_conversation(page: Page, stack: DevStackProcess, title: str) -> None:
    """Open the chat page, wait until it is live, and start a demo-assistant conversation."""
    await page.goto(stack.base_url + "/")
    await page.evaluate("() => window.chatApp.ready")
    await expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "live")
    await page.get_by_test_id("new-conversation").click()
    await page.get_by_test_id("new-agent").fill("demo-assistant")
    await page.get_by_test_id("new-title").fill(title)
    await page.get_by_test_id("new-submit").click()
    await expect(page.get_by_test_id("conversation-title")).to_have_text(title)


async def stats(page: Page) -> dict[str, Any]:
    result: dict[str, Any] = await page.evaluate("() => ({...window.chatApp.stats})")
    return result


async def test_chat_in_english_and_spanish_with_a_reconnect(
    stack: DevStackProcess, browser: Browser
) -> None:
    page = await browser.new_page(viewport={"width": 1360, "height": 860})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        await open_new_conversation(page, stack, "Weekend in Lisbon")

        replies = page.locator('[data-testid="message"][data-role="assistant"]')

        # English: the reply is seen streaming, then complete, addressed by name.
        await send(page, "Hi! My name is Ana and I'm so excited about my weekend in Lisbon!")
        await expect(replies.nth(0)).to_have_attribute("data-status", "streaming")
        await expect(replies.nth(0)).to_have_attribute("data-status", "completed", timeout=20_000)
        await expect(replies.nth(0).locator(".bubble")).to_contain_text("Hi Ana!")
        assert (await stats(page))["deltas"] > 10

        # Thumbs on the reply: given, changed, stored (read back through the REST API).
        up, down = (
            replies.nth(0).get_by_test_id("thumb-up"),
            replies.nth(0).get_by_test_id("thumb-down"),
        )
        await up.click()
        await expect(up).to_have_attribute("aria-pressed", "true")
        await down.click()
        await expect(down).to_have_attribute("aria-pressed", "true")
        await expect(up).to_have_attribute("aria-pressed", "false")
        stored = await page.evaluate(
            """async () => {
                const app = window.chatApp;
                const reply = [...app.state.messages.values()].find(m => m.role === "assistant");
                const path = `conversations/${reply.conversation_id}/messages/${reply.id}`;
                const headers = {Authorization: `Bearer ${app.state.token}`};
                return (await (await fetch(`/api/v1/${path}`, {headers})).json()).feedback;
            }"""
        )
        assert stored == {"rating": -1, "comment": None, "tags": []}

        # Spanish, with the connection dropped in the middle of the stream.
        seen = (await stats(page))["deltas"]
        await send(page, "Hola, ¿qué tiempo hace en Lisboa en primavera? Me encanta el sol.")
        await expect(replies.nth(1)).to_have_attribute("data-status", "streaming")
        await page.wait_for_function(f"() => window.chatApp.stats.deltas > {seen + 4}")
        await page.evaluate("() => window.chatApp.dropConnection()")
        await expect(page.get_by_test_id("banner")).to_contain_text("reconnecting")
        await expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "live")
        await expect(replies.nth(1)).to_have_attribute("data-status", "completed", timeout=20_000)
        spanish = replies.nth(1).locator(".bubble")
        await expect(spanish).to_contain_text("Antes mencionaste")
        await expect(spanish).to_contain_text("Ana")
        observed = await stats(page)
        assert observed["reconnects"] >= 1
        assert observed["completed"] >= 2
        assert observed["streamedMismatches"] == 0, observed
        assert observed["duplicateDeltas"] == 0, observed

        # Memory across turns and languages.
        await send(page, "What's my name?")
        await expect(replies.nth(2)).to_have_attribute("data-status", "completed", timeout=20_000)
        await expect(replies.nth(2).locator(".bubble")).to_contain_text("Your name is Ana")

        # Sentiment, session and the summary card come from the REST API.
        user_messages = page.locator('[data-testid="message"][data-role="user"]')
        await expect(user_messages.nth(0).get_by_test_id("sentiment")).to_be_visible(timeout=15_000)
        await expect(page.get_by_test_id("session-chip")).to_contain_text("Session active")
        await expect(page.get_by_test_id("summary")).to_be_visible()
        await expect(page.get_by_test_id("conversation-item").first).to_contain_text("Weekend")
        await expect(page.get_by_test_id("banner")).to_be_hidden()
        assert errors == []

        SCREENSHOT.parent.mkdir(exist_ok=True)
        await page.screenshot(path=str(SCREENSHOT))
    except BaseException:
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "browser-failure.png"))
        shutil.copy(stack.log_path, ARTIFACTS / "browser-failure-dev.log")
        raise
    finally:
        await page.close()


async def test_a_handoff_shows_who_spoke_and_a_line_between_the_agents(
    stack: DevStackProcess, browser: Browser
) -> None:
    page = await browser.new_page(viewport={"width": 1360, "height": 860})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        await open_new_conversation(page, stack, "Invoice trouble")
        replies = page.locator('[data-testid="message"][data-role="assistant"]')

        await send(page, "Hi! My name is Ana.")
        await expect(replies.nth(0)).to_have_attribute("data-status", "completed", timeout=20_000)
        await send(page, "I need support with my invoice.")
        # The demo assistant says it hands over, the line is drawn, the support agent greets.
        await expect(replies.nth(2)).to_have_attribute("data-status", "completed", timeout=20_000)
        first, announcement, greeting = replies.nth(0), replies.nth(1), replies.nth(2)
        await expect(first.get_by_test_id("agent-name")).to_have_text("Demo Assistant")
        await expect(announcement.get_by_test_id("agent-name")).to_have_text("Demo Assistant")
        await expect(announcement.locator(".bubble")).to_contain_text("handing you over")
        await expect(greeting.get_by_test_id("agent-name")).to_have_text("Support Agent")
        await expect(greeting.locator(".bubble")).to_contain_text("Hi Ana, I'm Support Agent.")
        await expect(greeting.get_by_test_id("agent-avatar")).to_have_text("SA")

        line = page.get_by_test_id("handoff")
        await expect(line).to_have_count(1)
        handed = "Demo Assistant handed the conversation to Support Agent"
        await expect(line).to_contain_text(handed)
        seqs = [
            int(await node.get_attribute("data-seq") or "0")
            for node in (announcement, line, greeting)
        ]
        assert seqs == sorted(seqs), seqs
        colours = [
            await node.get_by_test_id("agent-avatar").evaluate(
                "(el) => getComputedStyle(el).backgroundColor"
            )
            for node in (first, announcement, greeting)
        ]
        assert colours[0] == colours[1] != colours[2], colours
        # Live: the agent_changed event moved the header before any reload.
        await expect(page.get_by_test_id("agent-chip")).to_have_text("Agent · Support Agent")
        assert (await stats(page))["agentChanges"] == 1

        # A fresh view (the snapshot) draws the same line and names.
        await page.reload()
        await page.evaluate("() => window.chatApp.ready")
        await expect(page.get_by_test_id("handoff")).to_have_count(1)
        await expect(
            page.locator('[data-testid="message"][data-agent-id="support-agent"]')
        ).to_have_count(1)
        assert errors == []
    except BaseException:
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "browser-handoff-failure.png"))
        shutil.copy(stack.log_path, ARTIFACTS / "browser-handoff-failure-dev.log")
        raise
    finally:
        await page.close()


async def test_edit_regenerate_and_switch_between_versions(
    stack: DevStackProcess, browser: Browser
) -> None:
    page = await browser.new_page(viewport={"width": 1360, "height": 860})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        await open_new_conversation(page, stack, "Branches")
        users = page.locator('[data-testid="message"][data-role="user"]')
        replies = page.locator('[data-testid="message"][data-role="assistant"]')

        await send(page, "Hi! My name is Ana and I love Lisbon.")
        await expect(replies.nth(0)).to_have_attribute("data-status", "completed", timeout=20_000)
        await expect(replies.nth(0).locator(".bubble")).to_contain_text("Ana")
        first_reply = await replies.nth(0).get_attribute("data-message-id")

        # Regenerate: a second version of the reply, shown as 2/2 once it completes.
        await replies.nth(0).get_by_test_id("regenerate").click()
        await expect(replies.nth(0).get_by_test_id("siblings")).to_have_text("2/2", timeout=20_000)
        await expect(replies.nth(0)).to_have_attribute("data-status", "completed", timeout=20_000)
        assert await replies.nth(0).get_attribute("data-message-id") != first_reply
        await expect(replies).to_have_count(1)

        # Switch back to the first version.
        await replies.nth(0).get_by_test_id("sibling-prev").click()
        await expect(replies.nth(0).get_by_test_id("siblings")).to_have_text("1/2")
        await expect(replies.nth(0)).to_have_attribute("data-message-id", first_reply or "")

        # Edit the user message: a new version of it, answered in turn.
        await users.nth(0).get_by_test_id("edit").click()
        await expect(page.get_by_test_id("composer-input")).to_have_value(
            "Hi! My name is Ana and I love Lisbon."
        )
        await send(page, "Hi! My name is Bea and I love Porto.")
        await expect(users.nth(0).locator(".bubble")).to_have_text(
            "Hi! My name is Bea and I love Porto."
        )
        await expect(users.nth(0).get_by_test_id("siblings")).to_have_text("2/2")
        await expect(replies.nth(0)).to_have_attribute("data-status", "completed", timeout=20_000)
        await expect(replies.nth(0).locator(".bubble")).to_contain_text("Bea")
        await expect(users).to_have_count(1)

        # And back to the original question, with the reply version last shown there.
        await users.nth(0).get_by_test_id("sibling-prev").click()
        await expect(users.nth(0).locator(".bubble")).to_contain_text("Ana")
        await expect(users.nth(0).get_by_test_id("siblings")).to_have_text("1/2")
        await expect(replies.nth(0).get_by_test_id("siblings")).to_have_text("2/2")
        assert errors == []
    except BaseException:
        ARTIFACTS.mkdir(exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "browser-branches-failure.png"))
        shutil.copy(stack.log_path, ARTIFACTS / "browser-branches-failure-dev.log")
        raise
    finally:
        await page.close()
