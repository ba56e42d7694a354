"""The dashboard in a real browser: headless Chromium (Debian's, driven by Selenium through
Debian's ChromeDriver) loads /dashboard from the real server and watches a job's progress
bar go from 0 to 100 % as a real worker processes it."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api.conftest import Keys
from tests.api.scenes import make_scenes
from tests.support import celery_worker

pytestmark = pytest.mark.services

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


@pytest.fixture
def browser() -> Iterator[object]:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        message = "needs Debian's chromium and chromium-driver (make services installs them)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1280,1000",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(
        options=options, service=webdriver.ChromeService(executable_path=str(CHROMEDRIVER))
    )
    try:
        yield driver
    finally:
        driver.quit()


def progress_of(driver, job_id: str) -> tuple[str | None, str | None]:  # type: ignore[no-untyped-def]
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        row = driver.find_element(By.CSS_SELECTOR, f'[data-job-id="{job_id}"]')
        bar = row.find_element(By.CSS_SELECTOR, '[role="progressbar"]')
        return bar.get_attribute("aria-valuenow"), row.find_element(By.CLASS_NAME, "status").text
    except (NoSuchElementException, StaleElementReferenceException):
        return None, None


def wait_for(driver, job_id: str, value: str, timeout_s: float) -> list[str | None]:  # type: ignore[no-untyped-def]
    seen: list[str | None] = []
    deadline = time.monotonic() + timeout_s
    while True:
        now, status = progress_of(driver, job_id)
        if not seen or seen[-1] != now:
            seen.append(now)
        if now == value:
            return seen
        assert time.monotonic() < deadline, f"progress bar of {job_id}: {seen}, status {status}"
        time.sleep(0.1)


def test_dashboard_progress_bar_reaches_100(  # type: ignore[no-untyped-def]
    browser, api: str, keys: Keys, user_owner: str, tmp_path: Path
) -> None:
    from modomo.jobs import create_job, dispatch_batches
    from modomo.tasks.color_tasks import process_colors_batch

    scenes = make_scenes(tmp_path / "images", 24)
    # the user's own job: the dashboard shows a user its jobs only
    job_id = str(create_job("colors", {"test": "browser"}, created_by=user_owner))
    dispatch_batches(job_id, process_colors_batch, scenes, 2)  # no worker yet: 0 %

    browser.get(f"{api}/dashboard#key={keys.user}")
    assert wait_for(browser, job_id, "0", timeout_s=30)[-1] == "0"
    assert "#key" not in browser.current_url  # the key leaves the address bar
    browser.execute_script("window.__sameDocument = true")
    with celery_worker(queues="color_processing"):
        seen = wait_for(browser, job_id, "100", timeout_s=90)
    assert seen[-1] == "100"
    assert browser.execute_script("return window.__sameDocument === true")  # no reload
    _, status = progress_of(browser, job_id)
    assert status == "completed"
    update = browser.find_element("id", "last-update").text
    time.sleep(2)
    assert browser.find_element("id", "last-update").text != update  # still polling

    shot = tmp_path / "dashboard.png"
    assert browser.save_screenshot(str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == [], errors
