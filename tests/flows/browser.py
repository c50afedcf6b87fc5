"""Headless Chromium (Debian's ``chromium`` + ``chromium-driver``) driven by selenium.

Outside CI a machine without Chromium skips the browser tests with the reason; in CI
(``CI=true``, where .ci/run installs Chromium) a missing browser fails them instead.
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
DRIVER_NAMES = ("chromedriver",)


def _find(names: tuple[str, ...], env: str) -> str | None:
    if os.environ.get(env):
        return os.environ[env] if Path(os.environ[env]).is_file() else None
    for name in names:
        found = shutil.which(name) or (
            f"/usr/lib/chromium/{name}" if Path(f"/usr/lib/chromium/{name}").is_file() else None
        )
        if found:
            return found
    return None


def require_chromium() -> tuple[str, str]:
    """Paths of the browser and its driver; skip (fail in CI) when they are missing."""
    browser = _find(CHROMIUM_NAMES, "YUQING_CHROMIUM")
    driver = _find(DRIVER_NAMES, "YUQING_CHROMEDRIVER")
    try:
        import selenium  # noqa: F401
    except ImportError:
        browser = None
    if browser and driver:
        return browser, driver
    reason = (
        "headless Chromium is not available: install it with "
        "'apt-get install -y chromium chromium-driver' and 'pip install selenium'"
    )
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI must run the browser tests, see .ci/run)")
    pytest.skip(reason)


@contextmanager
def chromium(width: int = 1400, height: int = 1000):
    """A headless Chromium session; no network, no GPU, no sandbox (containers run as root)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver_path = require_chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--window-size={width},{height}",
        "--force-device-scale-factor=1",
        "--proxy-server=127.0.0.1:9",  # a self-contained page needs no network: prove it
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        driver.set_page_load_timeout(120)
        yield driver
    finally:
        driver.quit()


def wait_until_ready(driver, timeout: float = 60) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout).until(
        lambda d: d.execute_script("return document.body.getAttribute('data-ready')") == "true"
    )


def screenshot(html: Path, png: Path, *, width: int = 1400) -> None:
    """Render ``html`` and save a full-page screenshot to ``png``."""
    with chromium(width=width, height=1000) as driver:
        driver.get(html.resolve().as_uri())
        wait_until_ready(driver)
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(width, min(int(height) + 40, 6000))
        wait_until_ready(driver)
        driver.save_screenshot(str(png))


if __name__ == "__main__":  # python -m tests.flows.browser page.html shot.png (make screenshot)
    import sys

    screenshot(Path(sys.argv[1]), Path(sys.argv[2]))
