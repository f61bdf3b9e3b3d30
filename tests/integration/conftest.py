"""Fixtures of the in-process gRPC tests: provisioned kits, a TLS server transport, and
institutions run as client threads."""

from __future__ import annotations

import threading

import pytest

from fedsilo.client.institution import Institution
from fedsilo.data.loading import read_table
from fedsilo.transport.grpc.client import run_institution
from fedsilo.transport.grpc.provision import Project, provision
from fedsilo.transport.grpc.server import GrpcServerTransport
from fedsilo.transport.grpc.tls import Gatekeeper, client_credentials, server_credentials
from tests.integration.helpers import FILES, HEART


@pytest.fixture
def kits(tmp_path):
    root = tmp_path / "kits"
    provision(Project("heart", "localhost", tuple(FILES)), root)
    return root


@pytest.fixture
def transport(kits):
    t = GrpcServerTransport("127.0.0.1:0", Gatekeeper.from_kit(kits / "server"),
                            server_credentials(kits / "server"))
    yield t
    t.close(0.5)


def start(kits, transport, name, handle):
    done = threading.Thread(target=run_institution, daemon=True, kwargs=dict(
        address=f"localhost:{transport.port}", handle=handle,
        credentials=client_credentials(kits / name), name=name, wait=1.0))
    done.start()
    return done


def real(name):
    path = HEART / "data" / f"processed.{FILES[name]}.data"
    return Institution(name, lambda read: read_table(path, read.get("columns"),
                                                     read.get("na_values")))
