"""The page at ``/`` in a real headless Chromium (Debian's ``chromium`` + ``chromedriver``).

Without the browser the tests skip on a workstation but fail under CI (``CI`` set), so
they can never silently stop running there; ``.ci/run`` installs both packages.
"""

import base64
import os
import shutil
import time
from pathlib import Path

import pytest
from PIL import Image

from geocells.data import GroundManifest

DROP_SCRIPT = """
const [names, payloads] = arguments;
const transfer = new DataTransfer();
names.forEach((name, i) => {
  const bytes = Uint8Array.from(atob(payloads[i]), (c) => c.charCodeAt(0));
  transfer.items.add(new File([bytes], name, { type: "image/jpeg" }));
});
document.getElementById("drop").dispatchEvent(
  new DragEvent("drop", { dataTransfer: transfer, bubbles: true, cancelable: true }));
"""

# (selector, width, all?) -> whether all (or some) matching images loaded at that width.
LOADED_IMAGES = """
const [selector, width, all] = arguments;
const images = [...document.querySelectorAll(selector)];
const loaded = (i) => i.complete && i.naturalWidth === width;
return images.length > 0 && (all ? images.every(loaded) : images.some(loaded));
"""


def _executables() -> tuple[str, str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if browser and driver:
        return browser, driver
    message = "Debian packages chromium and chromium-driver are needed (.ci/run installs them)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver_path = _executables()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,800",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_script_timeout(30)
    yield driver
    driver.quit()


def _wait(condition, timeout_s: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _open(browser, url: str) -> None:
    from selenium.webdriver.common.by import By

    browser.get(url)
    _wait(
        lambda: "cells at level" in browser.find_element(By.ID, "database").text,
        what="the database line",
    )


@pytest.fixture(scope="module")
def photo_paths(micro_dataset):
    manifest = GroundManifest.read(micro_dataset / "ground" / "manifest.parquet")
    return [str(path) for path in manifest.path[:2]]


def test_dropping_photos_draws_markers_candidates_and_tiles(browser, micro_server, photo_paths):
    from selenium.webdriver.common.by import By

    _open(browser, micro_server)
    top_k = browser.find_element(By.ID, "top-k")
    top_k.clear()
    top_k.send_keys("3")
    payloads = [base64.b64encode(open(path, "rb").read()).decode() for path in photo_paths]
    browser.execute_script(DROP_SCRIPT, ["first.jpg", "second.jpg"], payloads)
    markers = _wait(
        lambda: (
            len(browser.find_elements(By.CSS_SELECTOR, "path.geocells-marker")) == 6
            and browser.find_elements(By.CSS_SELECTOR, "path.geocells-marker")
        ),
        what="6 markers",
    )
    assert len(markers) == 6
    assert len(browser.find_elements(By.CSS_SELECTOR, "path.geocells-cell")) == 6
    assert browser.find_element(By.ID, "status").text == "2 of 2 photo(s) located"
    cards = browser.find_elements(By.CSS_SELECTOR, ".candidate")
    assert len(cards) == 6
    _wait(
        lambda: browser.execute_script(LOADED_IMAGES, ".candidate img", 128, True),
        what="candidate tiles",
    )
    # Clicking a candidate flies the map to it.
    card = cards[4]
    lat, lon = (float(v) for v in card.text.splitlines()[-1].split(","))
    card.click()
    _wait(
        lambda: browser.execute_script(
            "const c = state.map.getCenter(); return Math.abs(c.lat - arguments[0]) < 1e-4"
            " && Math.abs(c.lng - arguments[1]) < 1e-4 && state.map.getZoom() >= 17;",
            lat,
            lon,
        ),
        what="the map to fly to the candidate",
    )
    assert "active" in card.get_attribute("class")
    _wait(
        lambda: browser.execute_script(LOADED_IMAGES, "img.leaflet-tile", 256, False),
        what="aerial map tiles",
    )
    resources = browser.execute_script(
        "return performance.getEntriesByType('resource').map(r => r.name)"
    )
    assert resources and all(
        name.startswith((micro_server, "blob:", "data:")) for name in resources
    ), resources


def test_picked_files_show_errors_and_still_locate_the_good_one(
    browser, micro_server, photo_paths, tmp_path
):
    from selenium.webdriver.common.by import By

    _open(browser, micro_server)
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"this is not a jpeg")
    big = tmp_path / "wide.png"
    Image.new("1", (2000, 1000)).save(big)  # 2 M pixels: over this server's 1 M limit
    picker = browser.find_element(By.ID, "picker")
    picker.send_keys("\n".join([str(bad), str(big), photo_paths[0]]))
    _wait(
        lambda: "of 3 photo(s) located" in browser.find_element(By.ID, "status").text,
        what="three answers",
    )
    assert browser.find_element(By.ID, "status").text == "1 of 3 photo(s) located"
    errors = [e.text for e in browser.find_elements(By.CSS_SELECTOR, ".photo .error")]
    assert sorted(errors) == sorted(
        [
            "broken.jpg: not an image or an unsupported format",
            "wide.png: 2000 x 1000 = 2000000 pixels is over the limit of 1000000 "
            "(possible decompression bomb)",
        ]
    )
    assert len(browser.find_elements(By.CSS_SELECTOR, "path.geocells-marker")) == 5


PAGE_GEOMETRY = """
const box = (id) => document.getElementById(id).getBoundingClientRect();
return { inner: document.documentElement.clientWidth, scroll: document.documentElement.scrollWidth,
  map: [box("map").width, box("map").height], panel: box("panel").width,
  drop: box("drop").width, downloads: box("downloads").right };
"""


def _downloaded(folder, name: str) -> str:
    path = folder / name
    _wait(lambda: path.is_file() and path.stat().st_size > 0, what=f"the download of {name}")
    return path.read_text()


def test_phone_width_layout_and_downloaded_results(browser, micro_server, photo_paths, tmp_path):
    import csv
    import io
    import json

    from selenium.webdriver.common.by import By

    browser.set_window_size(420, 860)
    browser.execute_cdp_cmd(
        "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(tmp_path)}
    )
    try:
        _open(browser, micro_server)
        assert not browser.find_element(By.ID, "downloads").is_displayed()  # nothing yet
        bad = tmp_path / "broken.jpg"
        bad.write_bytes(b"this is not a jpeg")
        browser.find_element(By.ID, "picker").send_keys(f"{bad}\n{photo_paths[0]}")
        _wait(
            lambda: browser.find_element(By.ID, "status").text == "1 of 2 photo(s) located",
            what="two answers",
        )
        geometry = browser.execute_script(PAGE_GEOMETRY)
        width = geometry["inner"]
        assert width <= 440 and geometry["scroll"] <= width  # no sideways scrolling
        # Before: the 400 px panel beside the map left the map ~20 px wide.
        assert geometry["map"][0] >= width - 1 and geometry["map"][1] >= 240
        assert geometry["panel"] <= width and geometry["drop"] <= width
        assert geometry["downloads"] <= width
        for button in browser.find_elements(By.CSS_SELECTOR, "#downloads button"):
            button.click()
        saved = json.loads(_downloaded(tmp_path, "geocells-results.json"))
        assert (saved["located"], saved["failed"]) == (1, 1)
        failure, answer = saved["results"]
        assert failure["filename"] == "broken.jpg" and "not an image" in failure["error"]
        assert answer["filename"] == Path(photo_paths[0]).name
        assert [p["rank"] for p in answer["predictions"]] == [1, 2, 3, 4, 5]
        rows = list(csv.DictReader(io.StringIO(_downloaded(tmp_path, "geocells-results.csv"))))
        assert len(rows) == 6 and "not an image" in rows[0]["error"]
        assert [float(r["lat"]) for r in rows[1:]] == [p["lat"] for p in answer["predictions"]]
        assert rows[1]["token"] == answer["predictions"][0]["token"]
        collection = json.loads(_downloaded(tmp_path, "geocells-results.geojson"))
        kinds = [f["properties"]["kind"] for f in collection["features"]]
        assert kinds == ["prediction", "cell"] * 5
        assert collection["errors"][0]["filename"] == "broken.jpg"
    finally:
        browser.set_window_size(1280, 800)
