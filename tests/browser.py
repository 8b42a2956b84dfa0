"""Headless Chromium for the browser tests (the system's `chromium` and
`chromium-driver` packages, driven with Selenium)."""

from __future__ import annotations

import os
import shutil
import tempfile

CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run",
                  "--disable-dev-shm-usage", "--window-size=1280,1000")


def find_chromium() -> tuple[str, str] | None:
    """(chromium, chromedriver) paths, or None when either is missing."""
    chromium = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    driver = os.environ.get("CHROMEDRIVER") or shutil.which("chromedriver")
    if chromium and driver:
        return chromium, driver
    return None


class Chromium:
    """One headless Chromium with a fresh profile, removed at quit()."""

    def __init__(self):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
        found = find_chromium()
        assert found, "no Chromium"
        chromium, driver = found
        self.profile = tempfile.mkdtemp(prefix="calculator-chromium-")
        options = webdriver.ChromeOptions()
        options.binary_location = chromium
        for flag in CHROMIUM_FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={self.profile}")
        # The console, for the Content-Security-Policy violations it reports.
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(options=options, service=Service(executable_path=driver))
        self.driver.set_page_load_timeout(30)

    def quit(self) -> None:
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)


def csp_violations(driver) -> list[str]:
    """The console's Content-Security-Policy reports since the last call."""
    return [entry["message"] for entry in driver.get_log("browser")
            if "Content Security Policy" in entry["message"]]
