"""``dump --html`` in a real headless browser (Debian chromium + chromium-driver through
selenium): the page lists the records the JSON dump lists, clicking a field shows its
decoded value and spec section, the chunk map colours shared and unique chunks, and the
page loads nothing from anywhere (spec/dump.md § "The HTML page")."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from desync_ref.cli import main
from desync_ref.formats.index import parse_index

# Exercises no kernel: the compiled pass alone runs it (Makefile, PURE_SELECT).
pytestmark = pytest.mark.compiled_pass_only

ROOT = Path(__file__).resolve().parent.parent
TESTDATA = ROOT / "fixtures" / "desync" / "testdata"
CHROMIUM = "/usr/lib/chromium/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def run_dump(args: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["dump", *args])
    return code, out.getvalue()


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    from selenium.webdriver.chrome.service import Service

    if not (os.path.exists(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        pytest.skip("chromium and chromium-driver are not installed")
    tmp = tmp_path_factory.mktemp("chromium")
    saved = {var: os.environ.get(var) for var in ("XDG_CONFIG_HOME", "XDG_CACHE_HOME", "SE_CACHE_PATH",
                                                   "SE_AVOID_STATS")}
    for var in ("XDG_CONFIG_HOME", "XDG_CACHE_HOME", "SE_CACHE_PATH"):
        os.environ[var] = str(tmp / var.lower())
    os.environ["SE_AVOID_STATS"] = "true"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--user-data-dir={tmp / 'profile'}"):
        options.add_argument(arg)
    browser = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        yield browser
    finally:
        browser.quit()
        for var, value in saved.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value


def page(tmp_path: Path, args: list[str]) -> tuple[int, Path]:
    code, text = run_dump(["--html", *args])
    path = tmp_path / "page.html"
    path.write_text(text)
    return code, path


def test_records_listed_and_field_decoded(driver: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    catar = str(TESTDATA / "flat.catar")
    _, doc_text = run_dump(["-f", "json", catar])
    doc = json.loads(doc_text)
    code, path = page(tmp_path, [catar])
    assert code == 0
    driver.get(path.as_uri())
    # one round trip for all rows: (offset, type) as the page shows them
    rows = driver.execute_script("return [...document.querySelectorAll('tr.rec')].map("
                                 "r => [Number(r.cells[0].textContent), r.cells[2].textContent])")
    assert rows == [[r["offset"], r["type"]] for r in doc["records"]]
    # the mode of the second ENTRY (the character device), then the name of a FILENAME
    entries = [i for i, r in enumerate(doc["records"]) if r["type"] == "ENTRY"]
    for rec, name in ((entries[1], "mode"), (entries[1] - 1, "name")):
        field = next(j for j, f in enumerate(doc["records"][rec]["fields"]) if f["name"] == name)
        driver.find_element(By.CSS_SELECTOR, f'[data-f="{rec}.{field}"]').click()
        assert driver.find_element(By.ID, "d-value").text == doc["records"][rec]["fields"][field]["decoded"]
        assert driver.find_element(By.ID, "d-field").text == name
        assert driver.find_element(By.ID, "d-spec").text == doc["records"][rec]["spec"]
    assert driver.find_element(By.ID, "d-value").text == '"device"'
    # no request left the page: the only resource is the page itself
    assert driver.execute_script("return performance.getEntriesByType('resource').length") == 0


def test_chunk_map_shared_and_unique(driver: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    one, two = TESTDATA / "blob1.caibx", TESTDATA / "blob2.caibx"
    mine, theirs = parse_index(one.read_bytes()), parse_index(two.read_bytes())
    other_ids = {c.id for c in theirs.chunks}
    _, path = page(tmp_path, ["--compare", str(two), str(one)])
    driver.get(path.as_uri())
    states = driver.execute_script("return [...document.querySelectorAll('#map div')].map(e => e.dataset.state)")
    assert states == ["shared" if c.id in other_ids else "unique" for c in mine.chunks]
    assert {"shared", "unique"} == set(states)
    unique = next(n for n, c in enumerate(mine.chunks) if c.id not in other_ids)
    driver.find_element(By.CSS_SELECTOR, f'#map div[data-n="{unique}"]').click()
    assert driver.find_element(By.ID, "d-value").text == mine.chunks[unique].id.hex()


def test_damage_shown(driver: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    bad = tmp_path / "bad.caibx"
    bad.write_bytes((TESTDATA / "index.caibx").read_bytes()[:-1])
    code, path = page(tmp_path, [str(bad)])
    assert code == 1
    driver.get(path.as_uri())
    assert "INVALID" in driver.find_element(By.TAG_NAME, "header").text
    (row,) = driver.find_elements(By.CSS_SELECTOR, "tr.dmg")
    assert row.text.startswith("184 ")  # where the tail should begin
    assert driver.find_elements(By.CSS_SELECTOR, "#hex .damage")


def test_page_is_self_contained(tmp_path: Path) -> None:
    _, path = page(tmp_path, [str(TESTDATA / "index.caibx")])
    text = path.read_text()
    assert "default-src 'none'" in text
    for outside in ("src=", "href=", "http:", "https:", "@import", "url("):
        assert outside not in text
