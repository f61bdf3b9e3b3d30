"""Secure federated preprocessing over real gRPC with TLS: the prepare stage's SecAgg+ steps
(advertise, share, masked vector, unmask) reach institutions as prepare tasks, the deployed
run fits the same preprocessing and model as the simulation."""

from __future__ import annotations

import logging

import pytest

from fedsilo.config.schema import load_config
from tests.integration.helpers import heart_config
from tests.integration.test_grpc_transport import assert_same_params, deployed_and_simulated

pytestmark = pytest.mark.integration


def test_secure_preprocessing_over_grpc_matches_simulation(kits, transport, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="fedsilo.engine.secure_prepare")
    cfg = load_config(heart_config(tmp_path))
    aggregation = {**cfg.aggregation.model_dump(), "secure": "secagg+", "threshold": 2,
                   "neighbours": 3}
    data = {**cfg.data.model_dump(), "levels": {"cp": [1, 2, 3, 4], "restecg": [0, 1, 2]}}
    deployed, simulated = deployed_and_simulated(kits, transport, tmp_path,
                                                 aggregation=aggregation, data=data)
    assert all(e.metrics["aggregator"]["secagg_dropouts"] == 0 for e in deployed.events)
    assert_same_params(deployed, simulated)
    assert caplog.text.count("statistics of 4 institutions were summed with SecAgg+") == 2
