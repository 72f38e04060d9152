"""The dashboard in a real browser (Debian chromium via Playwright) on a live 3-node cluster.

Screenshots go to test-output/. Order matters: the last test kills a node.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.support.cluster import start
from tests.support.wait import wait_until

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
OUT = Path(__file__).resolve().parent.parent / "test-output"
# Dead after 4 s of silence, checked every heartbeat (1 s), pushed every second; plus slack.
DETECT_S = 12


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the playwright package is missing: pip install -e '.[test]'")
    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield b
        b.close()


@pytest.fixture
def page(browser, cluster):
    pg = browser.new_page(viewport={"width": 1440, "height": 1000})
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(f"{cluster.http_url}/")
    pg.wait_for_selector("#conn[data-state=live]", timeout=10_000)
    yield pg
    pg.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def bars_on_page(page) -> dict[str, tuple[int, int]]:
    return page.eval_on_selector_all(
        ".bar[data-state]:not([data-state=dead])",
        "els => Object.fromEntries(els.map(e => [e.dataset.nodeId, [+e.dataset.start, +e.dataset.end]]))",
    )


def live_ranges(status: dict) -> dict[str, list[int]]:
    return {
        n["node_id"]: n["assignment"]["range"]
        for n in status["nodes"]
        if n["state"] != "dead" and n["assignment"]["range"]
    }


PROMPT = "go on forever"


def greedy(route) -> None:
    body = json.loads(route.request.post_data)
    route.continue_(post_data=json.dumps({**body, "temperature": 0}))


def api_answer(url: str, model: str) -> str:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": 256,
        "temperature": 0,
    }
    r = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)
    return r.raise_for_status().json()["choices"][0]["message"]["content"]


def test_page_shows_every_node_and_bars_matching_status(page, cluster):
    status = cluster.status()
    page.wait_for_function(
        "document.querySelectorAll('#nodes-table tr[data-node-id]').length === 3"
    )
    for n in status["nodes"]:
        row = page.locator(f"#nodes-table tr[data-node-id='{n['node_id']}']")
        assert n["name"] in row.inner_text() and n["address"] in row.inner_text()
        assert row.get_attribute("data-state") == "ready"
    bars = bars_on_page(page)
    assert {k: list(v) for k, v in bars.items()} == live_ranges(status)
    assert page.locator("rect.gap").count() == 0
    join = page.locator("#join-cmd").inner_text()
    assert join == f"parallax join --coordinator {cluster.grpc_address}"


def test_chat_streams_an_answer_and_the_route_is_drawn(page, cluster):
    # A long request in the background: its route must show on the map while it runs.
    model = httpx.get(f"{cluster.http_url}/v1/models", timeout=5).json()["data"][0]["id"]
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "go on forever"}],
        "max_tokens": 450,
        "temperature": 0,
        # Greedy with the end token banned: the tiny model runs on for about 5 s.
        "logit_bias": {"258": -100},
    }
    long = threading.Thread(
        target=httpx.post,
        args=(f"{cluster.http_url}/v1/chat/completions",),
        kwargs={"json": body, "timeout": 120},
    )
    long.start()
    try:
        page.wait_for_selector("path.route", state="attached", timeout=15_000)
        hops = page.locator("#active-list li .chain").first.inner_text()
        assert "→" in hops  # a chain of several nodes
    finally:
        long.join()

    # Record every change of the answer bubble: a streamed answer changes many times.
    page.evaluate(
        """() => {
        window.__updates = 0;
        new MutationObserver(() => { window.__updates += 1; })
          .observe(document.getElementById('chat-log'),
                   {subtree: true, childList: true, characterData: true});
    }"""
    )
    # Greedy, so the page's streamed answer can be checked against the API's.
    page.route("**/v1/chat/completions", greedy)
    page.fill("#chat-input", PROMPT)
    page.click("#chat-send")
    page.wait_for_selector(".msg.assistant:not(.streaming) .meta, .msg.error", timeout=60_000)
    assert page.locator(".msg.error").count() == 0, page.locator(".msg.error").inner_text()
    streamed = page.evaluate(
        "[...document.querySelectorAll('.msg.assistant')].pop().firstChild.textContent"
    )
    assert streamed == api_answer(cluster.http_url, model) != ""
    assert page.evaluate("window.__updates") > 3  # it arrived piece by piece
    OUT.mkdir(exist_ok=True)
    page.screenshot(path=str(OUT / "dashboard.png"), full_page=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def coordinator_alone(model: str, port: int, *extra: str):
    proc = start(["run", "--model", model, "--grpc-port", "0", "--port", str(port), *extra])
    proc.wait_for(r"gateway http listening on", 60)
    return proc


def stop(proc) -> None:
    os.killpg(proc.popen.pid, signal.SIGTERM)
    proc.popen.wait(15)


def test_page_shows_disconnected_and_recovers_after_a_coordinator_restart(browser, tiny_models):
    model, port = str(tiny_models["llama"]), free_port()
    coordinator = coordinator_alone(model, port)
    pg = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    try:
        pg.goto(f"http://127.0.0.1:{port}/dashboard")
        pg.wait_for_selector("#conn[data-state=live]", timeout=10_000)
        # The map renders just after the state turns live: on a busy box, a moment later.
        pg.wait_for_function(
            "document.querySelector('#layer-map').innerText.includes('No node holds layers yet')",
            timeout=10_000,
        )
        pg.evaluate("window.__sameDocument = true")
        stop(coordinator)
        pg.wait_for_selector("#conn[data-state=disconnected]", timeout=10_000)
        coordinator = coordinator_alone(model, port)
        pg.wait_for_selector("#conn[data-state=live]", timeout=20_000)
        assert pg.evaluate("window.__sameDocument") is True
    finally:
        pg.close()
        stop(coordinator)
    assert not errors, f"JavaScript errors on the page: {errors}"


def test_a_keyed_dashboard_carries_the_key_it_was_opened_with(browser, tiny_models):
    api, dash = "api-key-for-chat", "read-only-dashboard-key"
    port = free_port()
    keys = ("--api-key", api, "--dashboard-key", dash)
    coordinator = coordinator_alone(str(tiny_models["llama"]), port, *keys)
    pg = browser.new_page(viewport={"width": 1280, "height": 900})
    stranger = browser.new_page()  # a context of its own: no stored key
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    try:
        pg.goto(f"http://127.0.0.1:{port}/?key={dash}")
        pg.wait_for_selector("#conn[data-state=live]", timeout=10_000)
        assert "key" not in pg.url, "the key is taken out of the address bar"
        pg.wait_for_function(
            "document.querySelector('#layer-map').innerText.includes('No node holds layers yet')",
            timeout=10_000,
        )
        pg.reload()  # the tab keeps its key
        pg.wait_for_selector("#conn[data-state=live]", timeout=10_000)
        # The read-only key does not open the chat: the page asks for an API key.
        with pg.expect_response("**/v1/chat/completions") as refused:
            pg.fill("#chat-input", "hello")
            pg.click("#chat-send")
        assert refused.value.status == 401
        pg.wait_for_selector(".msg.error", timeout=5_000)
        assert "API key" in pg.locator(".msg.error").inner_text()
        pg.fill("#chat-key", api)
        with pg.expect_response("**/v1/chat/completions") as answered:
            pg.fill("#chat-input", "hello again")
            pg.click("#chat-send")
        assert answered.value.status == 503, "past the key check: no node serves layers yet"
        stranger.goto(f"http://127.0.0.1:{port}/")
        stranger.wait_for_function(
            "document.querySelector('#conn').textContent.includes('needs a key')", timeout=10_000
        )
    finally:
        pg.close()
        stranger.close()
        stop(coordinator)
    assert not errors, f"JavaScript errors on the page: {errors}"


def test_killed_node_turns_dead_and_the_map_updates_without_reload(page, cluster):
    victim = cluster.workers[1]
    node_id = next(n["node_id"] for n in cluster.status()["nodes"] if n["name"] == "node1")
    page.evaluate("window.__sameDocument = true")
    t0 = time.monotonic()
    os.killpg(victim.popen.pid, signal.SIGKILL)
    page.wait_for_selector(
        f"#nodes-table tr[data-node-id='{node_id}'][data-state=dead]", timeout=DETECT_S * 1000
    )
    detected_s = time.monotonic() - t0
    page.wait_for_selector(f".bar[data-node-id='{node_id}'][data-state=dead]", timeout=3000)
    # The survivors are re-allocated to cover every layer; the map follows the status.
    wait_until(
        lambda: (
            {k: list(v) for k, v in bars_on_page(page).items()} == live_ranges(cluster.status())
            and len(bars_on_page(page)) == 2
        ),
        DETECT_S,
        "the map to show the survivors' new ranges",
    )
    assert page.evaluate("window.__sameDocument") is True  # no reload happened
    assert "dead" in page.locator("#decisions").inner_text()
    OUT.mkdir(exist_ok=True)
    page.screenshot(path=str(OUT / "dashboard-node-dead.png"), full_page=True)
    print(f"node death shown on the page {detected_s:.1f} s after SIGKILL")
