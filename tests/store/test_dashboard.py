"""`fedsilo dashboard` end to end in headless Chromium (Debian's chromium and chromedriver,
driven by Selenium): the run list, per-institution metric curves, participation, ε, the
local / federated / pooled table, the audit badge — and a running run updating live."""

from __future__ import annotations

import pytest

from fedsilo.config.schema import load_config
from fedsilo.dashboard.server import Dashboard
from fedsilo.engine.events import RoundEvent
from fedsilo.simulation.run import run_simulation
from fedsilo.store.run_store import RunStore
from tests.conftest import EXAMPLES
from tests.store.helpers import SHOTS, needs_chromium, wait_for

pytestmark = [pytest.mark.integration, needs_chromium]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    cfg = load_config(EXAMPLES / "heart_disease" / "heart_disease_personal.toml")
    cfg = cfg.model_copy(update={
        "run": cfg.run.model_copy(update={"rounds": 5, "output_dir": str(out)}),
        "privacy": cfg.privacy.model_copy(update={"mode": "central", "noise_multiplier": 0.5,
                                                  "deterministic_noise": True})})
    run_simulation(cfg)
    return RunStore(out)


def test_dashboard_shows_a_finished_run(store, browser):
    from selenium.webdriver.common.by import By

    board = Dashboard(store, port=0).start()
    try:
        browser.get(board.url)
        rows = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#runs tbody tr"))
        assert "finished" in rows[0].text and "fedavg" in rows[0].text
        rows[0].click()
        series = wait_for(lambda: browser.find_elements(
            By.CSS_SELECTOR, "#chart-metric polyline.series"))
        names = sorted(s.get_attribute("data-institution") for s in series)
        assert names == ["cleveland", "federated", "hungary", "switzerland", "va-long-beach"]
        bars = browser.find_elements(By.CSS_SELECTOR, "#chart-participation rect.bar-accepted")
        assert len(bars) == 5
        assert browser.find_elements(By.CSS_SELECTOR, "#chart-epsilon polyline.series")
        table = browser.find_element(By.ID, "comparison").text
        assert "pooled" in table and "ditto (personal)" in table and "switzerland" in table
        badge = wait_for(lambda: browser.find_element(By.ID, "audit").text)
        assert "audit chain verified (5 rounds)" in badge
        SHOTS.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(SHOTS / "dashboard.png"))
    finally:
        board.stop()


def test_dashboard_follows_a_running_run_live(store, browser):
    from selenium.webdriver.common.by import By

    store.start_run("live-run", "live", {"run": {}}, "sync", "fedavg", "accuracy")

    def record(rnd):
        ev = {"a": {"accuracy": 0.5 + rnd / 20}, "b": {"accuracy": 0.6}}
        store.record("live-run", RoundEvent(rnd, rnd, ("a", "b"), {}, {}, ev,
                                            {"accuracy": 0.55 + rnd / 40}, 0.1,
                                            {"a": "0" * 64, "b": "1" * 64}, "2" * 64))

    record(1)
    record(2)
    board = Dashboard(store, port=0).start()
    try:
        browser.get(board.url)
        row = wait_for(lambda: [r for r in browser.find_elements(By.CSS_SELECTOR,
                                                                 "#runs tbody tr")
                                if "live-run" in r.text])
        assert "running" in row[0].text
        row[0].click()
        wait_for(lambda: "2 rounds recorded" in browser.find_element(By.ID, "summary").text)
        record(3)  # training goes on while the page is open
        wait_for(lambda: "3 rounds recorded" in browser.find_element(By.ID, "summary").text)
        store.finish("live-run")
        wait_for(lambda: "finished" in browser.find_element(By.ID, "summary").text)
    finally:
        board.stop()


def test_dashboard_shows_a_vertical_run(tmp_path, browser):
    from selenium.webdriver.common.by import By

    from fedsilo.simulation.vertical import run_vertical
    from tests.simulation.test_vertical_run import config

    cfg = config("mlp", epochs=2)
    cfg = cfg.model_copy(update={"run": cfg.run.model_copy(update={"output_dir": str(tmp_path)})})
    result = run_vertical(cfg)
    board = Dashboard(RunStore(tmp_path), port=0).start()
    try:
        browser.get(board.url)
        rows = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#runs tbody tr"))
        assert "finished" in rows[0].text and "vertical" in rows[0].text
        rows[0].click()
        table = wait_for(lambda: browser.find_element(By.ID, "comparison").text
                         if "label holder alone" in browser.find_element(
                             By.ID, "comparison").text else None)
        assert "pooled" in table and "vertical" in table
        assert f"{result.metrics['vertical']['accuracy']:.4f}" in table
        badge = wait_for(lambda: browser.find_element(By.ID, "audit").text)
        assert "audit chain verified (1 rounds)" in badge
    finally:
        board.stop()
