"""A quarantined node as people and Prometheus see it: the layer map, `parallax status`,
`/metrics`, and the dashboard's nodes table in a real browser.

The snapshot comes from the real registry after a real quarantine; the browser test
feeds it to the page through the event stream of a real coordinator.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from coordinator.dashboard.traffic import Traffic
from coordinator.dashboard.view import ClusterInfo, dashboard_view, layer_map
from coordinator.metrics import CoordinatorMetrics
from coordinator.status_cli import render
from tests.support.cluster import start
from tests.support.registry import hw, ready, registry

CHROMIUM = "/usr/bin/chromium"
WHY = "spot checks: blamed 2 times; last: layers [0, 8) differ from a and b, which agree"


def quarantined_snapshot() -> dict:
    reg = registry()
    ids = [reg.join(f"n{i}", f"127.0.0.1:{9200 + i}", hw(), 0.0)[0] for i in range(3)]
    for nid in ids:
        ready(reg, nid, 1.0)
    assert reg.quarantine(ids[1], WHY, 2.0)
    assert not reg.quarantine(ids[1], WHY, 2.5)  # once
    snap = reg.status_snapshot(3.0)
    snap["verification"] = {
        "checks": {"agree": 3, "disagree": 2, "undecided": 1, "skipped": 0},
        "runs": 14,
        "quarantined": 1,
    }
    return snap


def test_layer_map_and_status_cli_say_quarantined_and_why():
    snap = quarantined_snapshot()
    lm = layer_map(snap)
    assert [q["name"] for q in lm["quarantined"]] == ["n1"] and lm["quarantined"][0][
        "reason"
    ] == WHY
    assert "n1" not in lm["standby"]
    bars = [b["name"] for g in lm["groups"] for lane in g["lanes"] for b in lane]
    assert "n1" not in bars
    console = Console(record=True, width=200)
    render(snap, console)
    text = console.export_text()
    assert f"quarantined: n1 ({snap['nodes'][1]['node_id']}): {WHY}" in text
    row = next(line for line in text.splitlines() if line.startswith("│ n1"))
    assert "quarantined" in row


def test_metrics_count_checks_and_quarantines():
    snap = quarantined_snapshot()
    text = CoordinatorMetrics(lambda: snap).exposition().decode()
    assert 'parallax_verify_checks_total{outcome="disagree"} 2.0' in text
    assert "parallax_verify_runs_total 14.0" in text
    assert "parallax_verify_quarantines_total 1.0" in text
    assert "parallax_quarantined_nodes 1.0" in text


@pytest.mark.browser
def test_dashboard_nodes_table_shows_quarantined_and_why(tiny_models):
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    snap = quarantined_snapshot()
    coord = start(["run", "--model", str(tiny_models["llama"]), "--grpc-port", "0", "--port", "0"])
    try:
        url = coord.wait_for(r"gateway http listening on (\S+)", 60).group(1)
        info = ClusterInfo("127.0.0.1:7000", "tiny", join_token_required=False)
        traffic = Traffic().snapshot(3.0) | {"queue": {"waiting": 0, "rejected": 0}}
        view = dashboard_view(snap, traffic, info)
        event = f"retry: 60000\n\ndata: {json.dumps(view)}\n\n"
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.route(
                "**/cluster/events*",
                lambda r: r.fulfill(status=200, content_type="text/event-stream", body=event),
            )
            page.goto(f"{url}/")
            cell = page.wait_for_selector(".status[data-state=quarantined]", timeout=15_000)
            assert cell.inner_text() == "quarantined" and cell.get_attribute("title") == WHY
            row = page.locator("tr", has=page.locator(".status[data-state=quarantined]"))
            assert WHY in row.inner_text() and "n1" in row.inner_text()
            assert "1 quarantined" in page.locator("#nodes-summary").inner_text()
            browser.close()
        assert not errors, errors
    finally:
        coord.stop()
