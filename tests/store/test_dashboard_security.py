"""The dashboard against a hostile store and a hostile network: names that carry HTML are shown
as text (headless Chromium), the page runs under a Content-Security-Policy with no inline
script, other host names are refused (DNS rebinding), a bind beyond loopback needs a token,
the API serves strict JSON, and no message shows a database password."""

from __future__ import annotations

import dataclasses
import http.client
import json
import re
from urllib.parse import quote

import pytest
from sqlalchemy import text

from fedsilo.dashboard.server import Dashboard
from fedsilo.store.run_store import RunStore
from tests.integration.helpers import FEDSILO, Proc
from tests.store.helpers import cli, event, needs_chromium, wait_for

RUN = '<img src=x onerror="window.pwned=1;document.title=\'pwned\'">run'
INST = '<svg onload="window.pwned=2"></svg><b>hospital</b>'
REASON = "<script>window.pwned=3</script>"
PASSWORD = "S3cretPW-42"


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """A store whose run, institutions and reasons are HTML payloads, with NaN in a row."""
    store = RunStore(tmp_path_factory.mktemp("results"))
    store.start_run(RUN, RUN, {}, "sync", "fedavg", "accuracy")
    for rnd in (1, 2):
        ev = event(rnd, {INST: {"accuracy": 0.5 + rnd / 10}, "b": {"accuracy": 0.6}},
                   {"accuracy": 0.55})
        store.record(RUN, dataclasses.replace(ev, rejected={"c": REASON}))
    row = {"local_only": 0.5, "local_only_everywhere": 0.4, "federated": 0.6, "pooled": 0.7}
    store.finish(RUN, comparison={"institutions": [{"institution": INST, **row}],
                                  "overall": {"institution": REASON, **row}})
    with store.engine.begin() as db:  # a row written before NaN was kept out
        db.execute(text("UPDATE rounds SET federated = '{\"accuracy\": NaN}' WHERE round = 1"))
    return store


def get(port: int, path: str, host: str | None = None,
        headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.request("GET", path, headers={**({} if host is None else {"Host": host}),
                                       **(headers or {})})
    res = conn.getresponse()
    out = res.status, dict(res.getheaders()), res.read()
    conn.close()
    return out


@pytest.fixture
def board(hostile):
    board = Dashboard(hostile, port=0).start()
    yield board
    board.stop()


# the browser --------------------------------------------------------------------------------
@pytest.mark.integration
@needs_chromium
def test_html_in_run_and_institution_names_is_shown_as_text(board, browser):
    from selenium.webdriver.common.by import By

    browser.get(board.url)
    wait_for(lambda: RUN in browser.find_element(By.CSS_SELECTOR, "#runs tbody").text)
    browser.execute_script("document.querySelector('#runs tbody tr').click()")
    wait_for(lambda: "hospital" in browser.find_element(By.ID, "legend-metric").text)
    assert INST in browser.find_element(By.ID, "legend-metric").text
    table = wait_for(lambda: browser.find_element(By.ID, "comparison").text)
    assert INST in table and REASON in table
    made = browser.execute_script(
        "return document.querySelectorAll('#runs img, #legend-metric svg, #legend-metric b, "
        "#comparison b, #comparison script, #comparison svg').length")
    assert made == 0  # no element was built from a name
    assert browser.execute_script("return window.pwned") is None
    assert browser.title == "fedsilo dashboard"


@pytest.mark.integration
@needs_chromium
def test_the_page_runs_under_its_content_security_policy(board, browser):
    browser.get(board.url)
    wait_for(lambda: "live" in browser.execute_script(
        "return document.getElementById('refreshed').textContent"))
    ran = browser.execute_script(
        "const s = document.createElement('script'); s.textContent = 'window.inline = 1';"
        "document.body.appendChild(s); return window.inline === undefined ? 'blocked' : 'ran'")
    assert ran == "blocked"  # an inline script, injected however, does not run


@pytest.mark.integration
@needs_chromium
def test_the_page_beyond_loopback_works_with_its_token_only(hostile, browser):
    from selenium.webdriver.common.by import By

    board = Dashboard(hostile, host="0.0.0.0", port=0).start()
    try:
        browser.get(f"http://127.0.0.1:{board.port}/")
        wait_for(lambda: "needs its token" in browser.find_element(By.ID, "refreshed").text)
        assert not browser.find_elements(By.CSS_SELECTOR, "#runs tbody tr")
        browser.get(f"http://127.0.0.1:{board.port}/?token={board.access.token}")
        wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#runs tbody tr"))
    finally:
        board.stop()


# HTTP ---------------------------------------------------------------------------------------
def test_every_answer_carries_the_security_headers_and_the_page_no_inline_script(board):
    status, headers, body = get(board.port, "/")
    assert status == 200
    csp = headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp and headers["X-Content-Type-Options"] == "nosniff"

    page = body.decode()
    assert re.findall(r"<script\b(?![^>]*\bsrc=)", page) == []  # every script is a file
    assert re.findall(r"<style\b|\sstyle=|\son\w+=", page) == []  # no inline style, handler
    for path in ("/app.js", "/style.css", "/api/runs"):
        status, headers, _ = get(board.port, path)
        assert status == 200 and headers["Content-Security-Policy"] == csp


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8050", "localhost.evil.example",
                                  ""])
def test_a_request_for_another_host_name_is_refused(board, host):
    status, _, body = get(board.port, "/api/runs", host=host)
    assert status == 421 and b"hospital" not in body


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "[::1]", "LOCALHOST."])
def test_this_machine_by_name_or_address_is_answered(board, host):
    status, _, _ = get(board.port, "/api/runs", host=f"{host}:{board.port}")
    assert status == 200


def test_the_api_serves_strict_json(board):
    def strict(body):
        return json.loads(body, parse_constant=lambda c: pytest.fail(f"{c} in the JSON"))

    status, headers, body = get(board.port, "/api/runs/" + quote(RUN, safe=""))
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert strict(body)["rounds"][0]["federated"] == {"accuracy": None}  # was NaN in the row
    assert strict(get(board.port, "/api/runs")[2])[0]["run_id"] == RUN
    status, _, body = get(board.port, "/api/runs/nope")
    assert status == 404 and "no run 'nope'" in strict(body)["error"]


def test_loopback_needs_no_token(board):
    assert board.access.token is None and not board.public
    assert "token" not in board.url
    assert get(board.port, "/api/runs")[0] == 200


def test_beyond_loopback_the_api_needs_the_token(hostile):
    board = Dashboard(hostile, host="0.0.0.0", port=0).start()
    try:
        token = board.access.token
        assert board.public and token and len(token) >= 32 and f"?token={token}" in board.url
        assert get(board.port, "/")[0] == 200  # the page itself holds no data
        for path, headers in [("/api/runs", {}), ("/api/runs?token=wrong", {}),
                              ("/api/runs", {"X-Fedsilo-Token": "wrong"})]:
            status, _, body = get(board.port, path, headers=headers)
            assert status == 401 and b"hospital" not in body
        assert get(board.port, f"/api/runs?token={token}")[0] == 200
        assert get(board.port, "/api/runs", headers={"X-Fedsilo-Token": token})[0] == 200
        assert get(board.port, f"/api/runs?token={token}", host="evil.example")[0] == 421
    finally:
        board.stop()


# the command --------------------------------------------------------------------------------
def _dashboard(tmp_path, *args):
    proc = Proc([FEDSILO, "dashboard", "--store", str(tmp_path / "fedsilo.db"), "--port", "0",
                 *args], tmp_path / "dashboard.log")
    try:
        return proc.wait_for("Ctrl-C", 300)
    finally:
        proc.stop()


@pytest.fixture
def stored(tmp_path):
    RunStore(tmp_path).start_run("r", "r", {}, "sync", "fedavg", "accuracy")
    return tmp_path


def test_fedsilo_dashboard_beyond_loopback_warns_and_prints_its_token(stored, monkeypatch):
    monkeypatch.delenv("FEDSILO_DASHBOARD_TOKEN", raising=False)
    out = _dashboard(stored, "--host", "0.0.0.0")
    assert "WARNING: the dashboard is bound to 0.0.0.0, reachable from other machines" in out
    assert re.search(r"on http://\S+:\d+/\?token=[\w-]{32} ", out), out


def test_a_chosen_token_is_never_printed(stored, monkeypatch):
    monkeypatch.setenv("FEDSILO_DASHBOARD_TOKEN", PASSWORD)
    out = _dashboard(stored, "--host", "0.0.0.0")
    assert "?token=$FEDSILO_DASHBOARD_TOKEN" in out and PASSWORD not in out


def test_fedsilo_dashboard_on_loopback_has_no_warning_and_no_token(stored, monkeypatch):
    monkeypatch.setenv("FEDSILO_DASHBOARD_TOKEN", PASSWORD)
    out = _dashboard(stored)
    assert "WARNING" not in out and "token" not in out and "on http://127.0.0.1:" in out


@pytest.mark.parametrize("command", [["audit", "verify", "r"], ["dashboard", "--port", "0"]])
def test_a_database_password_never_appears_in_a_message(command, capsys, monkeypatch):
    url = f"postgresql+psycopg://fedsilo:{PASSWORD}@127.0.0.1:1/fedsilo"
    code, out = cli(capsys, monkeypatch, *command, "--store", url)
    assert code == 2 and "postgresql+psycopg://fedsilo:***@127.0.0.1:1/fedsilo" in out
    assert PASSWORD not in out
