"""Mutual TLS refuses: no certificate, another CA, an expired certificate, a revoked one, and a
name not in the project. Each refusal is logged by the server process."""

from __future__ import annotations

import datetime as dt
import signal

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from fedsilo.transport.grpc import fedsilo_pb2 as pb
from fedsilo.transport.grpc.client import Stub
from fedsilo.transport.grpc.provision import Project, _pem, _pem_key, issue, provision, revoke
from tests.integration.helpers import FILES, free_port, heart_config, server

pytestmark = pytest.mark.integration


def ca_of(root):
    ca = x509.load_pem_x509_certificate((root / "ca" / "ca.pem").read_bytes())
    key = serialization.load_pem_private_key((root / "ca" / "ca.key").read_bytes(), None)
    return key, ca


def creds(root, key_pem: bytes | None = None, cert_pem: bytes | None = None):
    ca = (root / "ca" / "ca.pem").read_bytes()
    return grpc.ssl_channel_credentials(ca, key_pem, cert_pem)


def pull(port: int, credentials) -> grpc.RpcError:
    channel = grpc.secure_channel(f"localhost:{port}", credentials)
    try:
        list(Stub(channel).Pull(pb.PullRequest(wait_seconds=0.1), timeout=120))
    except grpc.RpcError as e:
        return e
    finally:
        channel.close()
    raise AssertionError("the server accepted the call")


def test_refusals(tmp_path):
    names = (*FILES, "departed")
    root = tmp_path / "kits"
    provision(Project("heart", "localhost", names), root)
    revoke(root, "departed")
    other = tmp_path / "other"
    provision(Project("other", "localhost", ("cleveland",)), other)
    key, ca = ca_of(root)
    past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=10)
    expired_key, expired = issue(key, ca, "cleveland", days=1, not_before=past)
    stranger_key, stranger = issue(key, ca, "mallory")
    port = free_port()
    srv = server(root, heart_config(tmp_path), port, tmp_path, "--wait", "3600")
    try:
        srv.wait_for("listening", 600)
        cases = {
            "no certificate": creds(root),
            "another CA": grpc.ssl_channel_credentials(
                (root / "ca" / "ca.pem").read_bytes(), (other / "cleveland" / "client.key")
                .read_bytes(), (other / "cleveland" / "client.pem").read_bytes()),
            "expired": creds(root, _pem_key(expired_key), _pem(expired)),
        }
        for label, c in cases.items():
            err = pull(port, c)
            assert err.code() == grpc.StatusCode.UNAVAILABLE, (label, err)
        revoked = pull(port, creds(root, (root / "departed" / "client.key").read_bytes(),
                                   (root / "departed" / "client.pem").read_bytes()))
        assert revoked.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "revoked" in revoked.details()
        unknown = pull(port, creds(root, _pem_key(stranger_key), _pem(stranger)))
        assert unknown.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "'mallory' is not an institution of this project" in unknown.details()
        good = grpc.secure_channel(f"localhost:{port}", creds(
            root, (root / "hungary" / "client.key").read_bytes(),
            (root / "hungary" / "client.pem").read_bytes()))
        frames = list(Stub(good).Pull(pb.PullRequest(wait_seconds=0.1),
                                                     timeout=120))
        assert pb.Frame.FromString(frames[0]).envelope.kind == "idle"  # a valid one gets in
        good.close()
        srv.kill(signal.SIGTERM)
        srv.finish(300)
    finally:
        srv.stop()
    log = srv.text()
    assert "PEER_DID_NOT_RETURN_A_CERTIFICATE" in log          # no certificate
    assert "CERTIFICATE_VERIFY_FAILED" in log                  # another CA
    assert "certificate has expired" in log.lower() or log.count("Handshake failed") >= 3
    assert "refused" in log and "certificate of 'departed' is revoked" in log
    assert "'mallory' is not an institution of this project" in log


def test_insecure_needs_the_flag_and_warns(tmp_path):
    root = tmp_path / "kits"
    provision(Project("heart", "localhost", tuple(FILES)), root)
    srv = server(root, heart_config(tmp_path), free_port(), tmp_path, "--insecure",
                 "--wait", "0.5")
    code = srv.finish(300)
    text = srv.text()
    assert "WARNING: --insecure" in text and "identities are NOT verified" in text
    assert code == 2 and "joined within" in text  # nobody came; a clear error
