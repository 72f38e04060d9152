"""Mutual TLS on every gRPC link (certificates from the cluster CA), and HTTPS on the gateway."""

from __future__ import annotations

import asyncio
import shutil
import ssl

import grpc
import httpx
import openai
import pytest

from bench.hop import ephemeral_tls, measure
from parallax.errors import ConfigError
from parallax.procs import spawn
from parallax.rpc import parallax_pb2 as pb
from parallax.rpc import parallax_pb2_grpc as pb_grpc
from parallax.rpc.tls import CLUSTER_NAME, Tls
from tests.support.chat import chat, local_texts
from tests.support.cluster import Cluster
from tests.support.tls_certs import CertAuthority

QUESTIONS = ["hello there", "what is 2+2?"]


@pytest.fixture(scope="module")
def ca(tmp_path_factory) -> CertAuthority:
    return CertAuthority(tmp_path_factory.mktemp("cluster-ca"))


@pytest.fixture(scope="module")
def cluster(tiny_models, ca):
    with Cluster(
        str(tiny_models["llama"]), nodes=0, min_stages=2, coordinator_args=ca.flags("coordinator")
    ) as c:
        for i in range(2):
            c.add_node(f"node{i}", *ca.flags(f"node{i}"))  # each node its own certificate
        c.wait_ready(2)
        yield c


def health(address: str, credentials: grpc.ChannelCredentials | None) -> pb.NodeStatus:
    if credentials is None:
        channel = grpc.insecure_channel(address)
    else:
        options = (("grpc.ssl_target_name_override", CLUSTER_NAME),)
        channel = grpc.secure_channel(address, credentials, options=options)
    with channel:
        return pb_grpc.NodeStub(channel).Health(pb.HealthRequest(), timeout=5)


def test_tls_cluster_serves_the_local_engines_text(cluster, tiny_models):
    ranges = sorted(tuple(n["assignment"]["range"]) for n in cluster.status()["nodes"])
    assert len(ranges) == 2 and ranges[0][0] == 0 and ranges[-1][1] == 4
    assert [chat(cluster.http_url, q) for q in QUESTIONS] == local_texts(
        tiny_models["llama"], QUESTIONS
    )
    # The dashboard's "join a node" command asks for the certificates.
    joining = cluster.status()["cluster"]
    assert joining["tls"] and "--tls-cert" in joining["join_command"]


def test_a_node_answers_only_clients_signed_by_the_cluster_ca(cluster, ca, tmp_path):
    address = cluster.status()["nodes"][0]["address"]
    member = Tls.from_files(*map(str, ca.issue("client")), str(ca.ca_path))
    assert health(address, member.channel_credentials()).state == "ready"
    with pytest.raises(grpc.RpcError) as plain:
        health(address, None)
    assert plain.value.code() == grpc.StatusCode.UNAVAILABLE
    # A certificate for the right name from another CA: the handshake fails both ways.
    other = CertAuthority(tmp_path / "other-ca")
    cert, key = other.issue("intruder")
    intruder = Tls.from_files(str(cert), str(key), str(other.ca_path))
    with pytest.raises(grpc.RpcError) as foreign:
        health(address, intruder.channel_credentials())
    assert foreign.value.code() == grpc.StatusCode.UNAVAILABLE
    # Trusting the cluster CA but presenting a foreign certificate: the node refuses it.
    cheat = Tls(intruder.cert_chain, intruder.private_key, member.root_certificates)
    with pytest.raises(grpc.RpcError) as unsigned:
        health(address, cheat.channel_credentials())
    assert unsigned.value.code() == grpc.StatusCode.UNAVAILABLE


def test_a_node_without_tls_cannot_join_and_says_why(cluster):
    node = spawn(["join", "--coordinator", cluster.grpc_address, "--name", "plain"])
    assert node.popen.wait(60) == 2
    node.wait_for(r"must agree on\s+TLS", 10)
    assert len(cluster.status()["nodes"]) == 2


def test_tls_files_are_checked_at_the_edge(tmp_path, ca):
    assert Tls.from_files("", "", "") is None
    with pytest.raises(ConfigError, match="missing --tls-key, --tls-ca"):
        Tls.from_files(str(ca.ca_path), "", "")
    with pytest.raises(ConfigError, match=r"--tls-key='.*nope.key': cannot read"):
        Tls.from_files(str(ca.ca_path), str(tmp_path / "nope.key"), str(ca.ca_path))
    (tmp_path / "junk.pem").write_text("not a certificate")
    with pytest.raises(ConfigError, match="--tls-ca=.*not a PEM file"):
        Tls.from_files(str(ca.ca_path), str(ca.ca_path), str(tmp_path / "junk.pem"))
    # The key never shows in a repr (configs and errors get logged).
    assert "PRIVATE" not in repr(Tls.from_files(*map(str, ca.issue("x")), str(ca.ca_path)))


def test_parallax_run_refuses_half_a_tls_setup(ca):
    coordinator = spawn(["run", "--grpc-port", "0", "--port", "0", "--tls-ca", str(ca.ca_path)])
    assert coordinator.popen.wait(60) == 2
    coordinator.wait_for(r"missing --tls-cert, --tls-key", 10)


def test_gateway_serves_https_to_an_openai_client(tiny_models, ca):
    cert, key = ca.issue("gateway", dns="localhost", ips=("127.0.0.1",))
    args = ["--https-cert", str(cert), "--https-key", str(key)]
    coordinator = spawn(
        ["run", "--model", str(tiny_models["llama"]), "--grpc-port", "0"] + ["--port", "0", *args]
    )
    try:
        url = coordinator.wait_for(r"gateway http listening on (\S+)", 60).group(1)
        assert url.startswith("https://127.0.0.1:")
        trust = ssl.create_default_context(cafile=str(ca.ca_path))
        with httpx.Client(verify=trust) as http:
            client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", http_client=http)
            assert len(client.models.list().data) == 1
            assert http.get(f"{url}/cluster/status").json()["nodes"] == []
        # The CLI clients trust a private CA through SSL_CERT_FILE (httpx reads it).
        status = spawn(["status", "--url", url], env={"SSL_CERT_FILE": str(ca.ca_path)})
        assert status.popen.wait(60) == 0, "\n".join(status.lines)
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(f"{url}/v1/models")  # a client that does not trust the CA
        with pytest.raises(httpx.TransportError):
            httpx.get(url.replace("https://", "http://") + "/v1/models")  # plain HTTP
    finally:
        coordinator.stop()
    half = spawn(["run", "--grpc-port", "0", "--port", "0", "--https-cert", str(cert)])
    assert half.popen.wait(60) == 2
    half.wait_for(r"--https-key.*together", 10)


def test_the_documented_openssl_commands_make_a_working_cluster_certificate(tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    tls = ephemeral_tls(tmp_path)  # the commands of deploy/README.md
    assert tls is not None
    row = asyncio.run(measure(576, 1, 5, None, tls))  # a TLS round trip with them
    assert row["tls"] and row["p50_ms"] > 0
