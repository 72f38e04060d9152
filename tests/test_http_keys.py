"""Keys on the coordinator's HTTP side: a real `parallax run` with an API key and a
read-only dashboard key, and the start-up refusal of an open non-loopback --host."""

from __future__ import annotations

import os
import signal

import httpx
import pytest

from coordinator.status_cli import run as status_run
from parallax.config.coordinator import CoordinatorConfig
from parallax.config.status import StatusConfig
from parallax.errors import ConfigError
from tests.support.cluster import start

API, DASH = "api-" + "k" * 20, "dash-" + "d" * 20
READS = ("/cluster/status", "/cluster/info", "/cluster/prometheus-sd", "/metrics")


@pytest.fixture(scope="module")
def url(tiny_models):
    proc = start(
        [
            "run",
            "--model",
            str(tiny_models["llama"]),
            "--grpc-port",
            "0",
            "--port",
            "0",
            "--api-key",
            API,
            "--dashboard-key",
            DASH,
        ]
    )
    try:
        yield proc.wait_for(r"gateway http listening on (\S+)", 60).group(1)
    finally:
        os.killpg(proc.popen.pid, signal.SIGTERM)
        proc.popen.wait(15)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_cluster_reads_need_a_key_and_take_the_dashboard_key(url):
    for path in READS:
        bare = httpx.get(url + path, timeout=5)
        assert bare.status_code == 401, path
        assert bare.json()["error"]["code"] == "invalid_api_key"
        assert "/?key=" in bare.json()["error"]["message"]
        wrong = httpx.get(url + path, headers=bearer("nope"), timeout=5)
        assert wrong.status_code == 401, path
        for key in (DASH, API):
            assert httpx.get(url + path, headers=bearer(key), timeout=5).status_code == 200
    # The page itself holds no data: it opens, then asks for the key on its reads.
    assert httpx.get(url + "/", timeout=5).status_code == 200
    assert httpx.get(url + "/dashboard/static/app.js", timeout=5).status_code == 200


def test_the_event_stream_takes_the_key_as_a_query_parameter(url):
    assert httpx.get(url + "/cluster/events", timeout=5).status_code == 401
    assert httpx.get(url + "/cluster/events?key=wrong", timeout=5).status_code == 401
    with httpx.stream("GET", url + "/cluster/events", params={"key": DASH}, timeout=5) as r:
        assert r.status_code == 200
        first = next(line for line in r.iter_lines() if line.startswith("data:"))
        assert '"nodes"' in first


def test_the_dashboard_key_does_not_open_the_completions_api(url):
    body = {"model": "x", "messages": [{"role": "user", "content": "hi"}]}
    for key in (DASH, None):
        headers = bearer(key) if key else {}
        r = httpx.post(url + "/v1/chat/completions", json=body, headers=headers, timeout=5)
        assert r.status_code == 401
        r = httpx.get(url + "/v1/models", params={"key": API}, headers=headers, timeout=5)
        assert r.status_code == 401, "the API takes its key as a header only"
    assert httpx.get(url + "/v1/models", headers=bearer(API), timeout=5).status_code == 200


def test_parallax_status_passes_its_key(url, capsys):
    assert status_run(StatusConfig(url=url, api_key=DASH)) == 0
    assert "Layer map" in capsys.readouterr().out
    assert status_run(StatusConfig(url=url)) == 1
    assert "needs a key: pass --api-key" in capsys.readouterr().err


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.7", "coordinator.example"])
def test_a_non_loopback_host_needs_keys_or_insecure_open(host):
    with pytest.raises(ConfigError, match=r"--host=.*--api-key KEY.*--insecure-open"):
        CoordinatorConfig(host=host)
    CoordinatorConfig(host=host, api_key=("k",))
    CoordinatorConfig(host=host, insecure_open=True)


@pytest.mark.parametrize("host", ["", "127.0.0.1", "127.0.0.2", "localhost", "::1"])
def test_a_loopback_host_may_stay_open(host):
    assert CoordinatorConfig(host=host).api_key == ()


def test_parallax_run_refuses_an_open_public_host_before_loading_anything():
    proc = start(["run", "--host", "0.0.0.0", "--port", "0", "--grpc-port", "0"])
    assert proc.popen.wait(60) != 0
    proc.wait_for(r"--host='0.0.0.0'.*--api-key KEY.*--insecure-open", 5)
