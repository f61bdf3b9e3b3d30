"""The CNN-on-digit-images example deployed: 1 server + 5 institution processes over mutual
TLS, each reading its own image folder and importing the model from its own code (--code),
equals its simulation; an institution whose policy does not allow the factory refuses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedsilo.config.schema import load_config
from fedsilo.simulation.run import run_simulation
from fedsilo.transport.grpc.provision import Project, provision
from tests.conftest import EXAMPLES, example_module
from tests.integration.helpers import FEDSILO, Proc, free_port, run_to_end

pytestmark = pytest.mark.integration
DIGITS = EXAMPLES / "digits_images"
SITES = [f"site-{k}" for k in range(5)]
FACTORY = "digits_cnn:cnn"


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("digits") / "data"
    example_module(DIGITS, "prepare_data").write_sites(out)
    return out


def config(tmp: Path, images: Path, rounds: int = 3) -> Path:
    text = (DIGITS / "digits_images.toml").read_text()
    text = text.replace('"data/', f'"{images}/').replace("rounds = 20", f"rounds = {rounds}")
    path = tmp / "run.toml"
    path.write_text(text)
    return path


def start(kits: Path, tmp: Path, images: Path, names: list[str]) -> tuple[Proc, list[Proc]]:
    port = free_port()
    srv = Proc([FEDSILO, "server", "--kit", str(kits / "server"), "--config",
                str(config(tmp, images)), "--code", str(DIGITS), "--address",
                f"127.0.0.1:{port}", "--output", str(tmp / "results")], tmp / "server.log")
    clients = [Proc([FEDSILO, "client", "--kit", str(kits / n), "--data", str(images / n),
                     "--code", str(DIGITS), "--address", f"127.0.0.1:{port}"],
                    tmp / f"{n}.log") for n in names]
    return srv, clients


def test_the_cnn_over_grpc_equals_its_simulation(tmp_path: Path, images: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    kits = tmp_path / "kits"
    provision(Project("digits", "localhost", tuple(SITES),
                      policy={"secure": "none", "factories": [FACTORY]}), kits)
    assert "round 3: 5 institutions" in run_to_end(*start(kits, tmp_path, images, SITES))
    deployed = np.load(next((tmp_path / "results").glob("*/model.npz")))
    monkeypatch.syspath_prepend(str(DIGITS))
    cfg = load_config(tmp_path / "run.toml")
    simulated = run_simulation(cfg.model_copy(update={"run": cfg.run.model_copy(
        update={"compare": False})}), write=False)
    assert sorted(deployed.files) == sorted(simulated.history.params)
    for name, value in simulated.history.params.items():
        np.testing.assert_allclose(deployed[name], value, rtol=1e-5, atol=1e-6)


def test_an_institution_that_does_not_allow_the_factory_refuses(tmp_path: Path,
                                                                 images: Path) -> None:
    kits = tmp_path / "kits"
    provision(Project("digits", "localhost", tuple(SITES), policy={"secure": "none"}), kits)
    srv, clients = start(kits, tmp_path, images, SITES)
    try:
        log = clients[0].wait_for("refused", timeout=600)
    finally:
        for p in (srv, *clients):
            p.stop()
    assert FACTORY in log and "factories" in log
