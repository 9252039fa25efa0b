"""One browser test: headless Chromium (Debian's chromium + chromium-driver, driven by selenium)
against `hrp-cutover serve`. An admin logs in, sees phase shadow with every readiness check
passing, presses flip, accepts the confirm, and sees PostgreSQL as the primary.

The state is made as an operator would: schema upgraded, phase dual_write, the admin made with
`create-admin`, data written through the API (the server's applier carries it), drained, phase
shadow, shadow reads through the API, a full verify. Where Chromium cannot be installed this
test fails with one line saying so; it is never skipped.
"""

from __future__ import annotations

import http.cookiejar
import json
import os
import re
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from hrp_data.cutover.assemble import open_cutover
from hrp_data.flip.move import move
from hrp_data.cutover.phase_store import CACHE_SECONDS
from hrp_data.cutover.phases import Phase
from hrp_data.flip.readiness import checklist
from hrp_data.schema.install import upgrade
from hrp_data.verify.run import verify
from tests.e2e.conftest import PASSWORD, ROOT, backfill, hrp_cutover, run_cli, wait_until
from tests.integration.cutover_helpers import assert_equal, settings_for, wait_drained

SCREENSHOT = ROOT / "artifacts" / "browser" / "dashboard.png"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--no-proxy-server", "--window-size=1280,2200",
]
WAIT_S = 20


def _ensure_chromium() -> None:
    """Chromium comes from the set-up step `make test` runs (tools/setup/system_packages.sh)."""
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.fail(f"headless Chromium is missing ({CHROMIUM}, {CHROMEDRIVER}): run `make test`, whose set-up step"
                    " installs it (tools/setup/system_packages.sh)", pytrace=False)


@pytest.fixture
def browser():
    _ensure_chromium()
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("selenium is not installed: pip install -e '.[test]'", pytrace=False)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    try:
        driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    except Exception as error:  # noqa: BLE001 - one clear line instead of a driver traceback
        pytest.fail(f"headless Chromium did not start: {str(error).splitlines()[0]}", pytrace=False)
    driver.set_page_load_timeout(WAIT_S)
    yield driver
    driver.quit()


class Server:
    """`hrp-cutover serve` on a free loopback port, in its own process."""

    def __init__(self, sqlite_path: Path, postgres_url: str, log: Path):
        self.log = log
        self.output = open(log, "w")
        self.process = subprocess.Popen(
            [*hrp_cutover(), "--sqlite", str(sqlite_path), "--postgres", postgres_url,
             "serve", "--host", "127.0.0.1", "--port", "0", "--threads", "4"],
            cwd=ROOT, stdout=self.output, stderr=subprocess.STDOUT, env={**os.environ, "HRP_LOG_FORMAT": "json"},
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            found = re.search(r"serving on (http://127\.0\.0\.1:\d+)", log.read_text())
            if found:
                self.url = found.group(1)
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        self.stop()
        raise AssertionError(f"hrp-cutover serve did not start:\n{log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.output.close()


class Api:
    """A small HTTP client with a cookie jar (no proxies: the server is on loopback)."""

    def __init__(self, base: str):
        self.base = base
        self.opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict | None]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"} if data else {})
        try:
            with self.opener.open(request, timeout=30) as response:
                text = response.read()
                return response.status, json.loads(text) if text else None
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")


def _write_data(api: Api, name: str) -> int:
    status, _ = api.call("POST", "/api/session", {"username": name, "password": PASSWORD})
    assert status == 200
    horses = [api.call("POST", "/api/horses", {"horse_name": f"Browser Horse {i}", "age": 3 + i})[1] for i in range(3)]
    race_id = None
    for r in range(3):
        status, race = api.call("POST", "/api/races", {"race_name": f"Browser Stakes {r}", "race_date": "2025-06-01",
                                                      "track_name": "Epsom", "weather_conditions": {"wind": "S"}})
        assert status == 201, race
        race_id = race["id"]
        for position, horse in enumerate(horses, start=1):
            assert api.call("PUT", f"/api/races/{race_id}/runners/{horse['id']}",
                            {"post_position": position, "odds": 2.5 * position})[0] == 200
            assert api.call("POST", "/api/predictions", {"race_id": race_id, "horse_id": horse["id"],
                                                         "confidence": 0.2 * position, "features": {"p": position}})[0] == 201
    return race_id


def _until(predicate, what, timeout: float = WAIT_S):
    return wait_until(predicate, what, timeout)


def test_an_admin_flips_from_the_dashboard(browser, legacy_file, postgres_url, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    upgrade(postgres_url)
    operator = open_cutover(settings_for(legacy_file, postgres_url))
    server = Server(legacy_file, postgres_url, tmp_path / "serve.log")
    try:
        move(operator, Phase.DUAL_WRITE)
        made = run_cli(legacy_file, postgres_url, "create-admin", "boss", "--password-stdin", stdin=PASSWORD + "\n")
        assert "admin boss created" in made
        api = Api(server.url)
        race_id = _write_data(api, "boss")
        backfill(legacy_file, postgres_url)
        wait_drained(operator)
        move(operator, Phase.SHADOW)
        time.sleep(CACHE_SECONDS + 0.2)  # the server notices the phase within CACHE_SECONDS
        assert verify(operator).equal

        def ready():
            for _ in range(30):  # reads the server repeats on PostgreSQL and compares (the shadow check)
                assert api.call("GET", f"/api/races/{race_id}")[0] == 200
            return not [c for c in checklist(operator, Phase.POSTGRES_PRIMARY) if not c.ok]

        _until(ready, lambda: f"the readiness checks to pass: {checklist(operator, Phase.POSTGRES_PRIMARY)}", timeout=60)

        wait = WebDriverWait(browser, WAIT_S)
        browser.get(server.url + "/admin/cutover")
        wait.until(expected_conditions.presence_of_element_located((By.ID, "username")))
        browser.find_element(By.ID, "username").send_keys("boss")
        browser.find_element(By.ID, "password").send_keys(PASSWORD)
        browser.find_element(By.ID, "login").click()
        wait.until(expected_conditions.text_to_be_present_in_element((By.ID, "phase"), "shadow"))
        assert browser.find_element(By.ID, "primary").text == "sqlite"
        checks = browser.find_element(By.ID, "checks").text
        assert "[ ]" not in checks and "verify" in checks and "shadow" in checks, checks

        browser.find_element(By.ID, "flip").click()
        alert = wait.until(expected_conditions.alert_is_present())
        assert "postgres_primary" in alert.text
        alert.accept()
        wait.until(expected_conditions.text_to_be_present_in_element((By.ID, "primary"), "postgres"))
        assert browser.find_element(By.ID, "phase").text == "postgres_primary"
        assert "Moved shadow -> postgres_primary" in browser.find_element(By.TAG_NAME, "main").text
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        assert browser.save_screenshot(str(SCREENSHOT))

        # The page keeps itself up to date: a rollback made elsewhere (the CLI's way) shows without a reload.
        move(operator, Phase.SHADOW)
        wait.until(expected_conditions.text_to_be_present_in_element((By.ID, "primary"), "sqlite"))
        assert browser.find_element(By.ID, "phase").text == "shadow"

        assert api.call("PATCH", f"/api/races/{race_id}", {"status": "finished"})[0] == 200
        wait_drained(operator)
        assert_equal(legacy_file, postgres_url)
    finally:
        server.stop()
        operator.close()
