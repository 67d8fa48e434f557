"""Fixtures for the end-to-end tests: Debian's headless Chromium driven by Selenium.

The browser is never skipped: if ``/usr/bin/chromium`` or ``/usr/bin/chromedriver`` is missing,
``scripts/install-browser.sh`` installs them with apt-get (once per session), and if that fails
the tests fail with its output. Selenium Manager is never used: the driver and browser paths are
given explicitly, so nothing is downloaded.

Screenshots go to ``artifacts/e2e/`` at the repository root (git-ignored).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = REPO / "artifacts" / "e2e"
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--disable-extensions", "--disable-default-apps",
    "--no-default-browser-check", "--hide-scrollbars", "--force-device-scale-factor=1",
)
DESKTOP = (1360, 1000)
PHONE = (390, 844)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "e2e: drives the demo page in headless Chromium")


@pytest.fixture(scope="session")
def chromium() -> tuple[Path, Path]:
    """Paths of Chromium and its driver, installing them from Debian's packages if missing."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        script = REPO / "scripts" / "install-browser.sh"
        started = time.monotonic()
        done = subprocess.run(["bash", str(script)], capture_output=True, text=True,  # noqa: S603,S607
                              timeout=900, check=False)
        if done.returncode != 0 or not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
            pytest.fail(f"could not install Chromium with {script} (exit {done.returncode}):\n"
                        f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}", pytrace=False)
        print(f"\ninstalled Chromium in {time.monotonic() - started:.0f} s")
    return CHROMIUM, CHROMEDRIVER


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """``artifacts/e2e`` at the repository root, emptied of old screenshots."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in ARTIFACTS.glob("*.png"):
        old.unlink()
    return ARTIFACTS


@pytest.fixture
def browser(chromium: tuple[Path, Path], tmp_path: Path) -> Iterator[object]:
    """A fresh headless Chromium with an empty profile, closed after the test."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    binary, driver_path = chromium
    options = Options()
    options.binary_location = str(binary)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    options.add_argument(f"--window-size={DESKTOP[0]},{DESKTOP[1]}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=str(driver_path), log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(tmp_path / "chromium-profile", ignore_errors=True)


def page_screenshot(driver: object, path: Path, *, full: bool = True) -> Path:
    """A PNG of the whole page (beyond the window) through the DevTools protocol, or the window."""
    import base64

    if not full:
        driver.save_screenshot(str(path))  # type: ignore[attr-defined]
        return path

    metrics = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})  # type: ignore[attr-defined]
    size = metrics.get("cssContentSize") or metrics["contentSize"]
    width = driver.execute_script("return document.documentElement.clientWidth")  # type: ignore[attr-defined]
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {  # type: ignore[attr-defined]
        "format": "png", "captureBeyondViewport": True, "fromSurface": True,
        "clip": {"x": 0, "y": 0, "width": width, "height": size["height"], "scale": 1},
    })
    path.write_bytes(base64.b64decode(shot["data"]))
    return path


@pytest.fixture
def screenshot(browser: object, artifacts: Path) -> Callable[..., Path]:
    """``screenshot("01-loaded")`` saves ``artifacts/e2e/01-loaded.png`` (``full=False``: the window)."""

    def take(name: str, *, full: bool = True) -> Path:
        return page_screenshot(browser, artifacts / f"{name}.png", full=full)

    return take
