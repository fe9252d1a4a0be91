"""Make ``docs/dump-html.png``: the ``dump --html`` page of desync's ``blob1.caibx`` compared
with ``blob2.caibx`` (chunk map coloured shared/unique), a field selected, photographed by
headless Chromium through selenium. Needs Debian ``chromium`` and ``chromium-driver`` and
the ``selenium`` package.

    python scripts/screenshot_dump_html.py [OUT.png]
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTDATA = ROOT / "fixtures" / "desync" / "testdata"


def browser(tmp: Path) -> object:
    """Headless Chromium as Debian packages it (the options the machine's recipe uses)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    for var in ("XDG_CONFIG_HOME", "XDG_CACHE_HOME", "SE_CACHE_PATH"):
        os.environ[var] = str(tmp / var.lower())
    os.environ["SE_AVOID_STATS"] = "true"
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/lib/chromium/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--user-data-dir={tmp / 'profile'}", "--window-size=1400,900"):
        options.add_argument(arg)
    return webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))


def main() -> int:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "dump-html.png"
    from selenium.webdriver.common.by import By

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        page = tmp / "page.html"
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        with page.open("wb") as f:
            subprocess.run([sys.executable, "-m", "desync_ref", "dump", "--html", "--compare",
                            str(TESTDATA / "blob2.caibx"), str(TESTDATA / "blob1.caibx")],
                           stdout=f, check=True, env=env)
        driver = browser(tmp)
        try:
            driver.get(page.as_uri())  # type: ignore[attr-defined]
            driver.find_element(By.CSS_SELECTOR, '[data-f="0.2"]').click()  # type: ignore[attr-defined]
            driver.save_screenshot(str(out))  # type: ignore[attr-defined]
        finally:
            driver.quit()  # type: ignore[attr-defined]
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
