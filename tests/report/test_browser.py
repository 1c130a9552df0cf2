"""The report in a real browser: headless Chromium (the distribution's ``chromium`` and ``chromium-driver``) driven
through Selenium loads a small run's report at 1400 px, finds no horizontal overflow, uses the explorer's controls
and checks that what is shown changes, and takes a screenshot.

Selenium is told where chromedriver is (``Service(executable_path=...)``), so Selenium Manager never downloads one.
Without Chromium the tests skip with the reason, and under ``SHAREDATTR_NO_SKIPS=1`` (``.ci/run``, which installs
Chromium) a skip fails the run."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest
from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.ui import WebDriverWait
from tiny_configs import tiny_experiment

from sharedattr.config.validation import validate_experiment
from sharedattr.experiment.run import run_experiment
from sharedattr.report.explorer import LEVELS

WIDTH, HEIGHT = 1400, 900
WAIT_S = 30
"""The longest an explicit wait waits for its condition (a bound for a loaded machine, not a speed check)."""
METHODS = [
    "parallel_backprop",
    {"name": "parallel_backprop", "variant": "own"},
    "saliency",
    "input_x_gradient",
    "guided_backprop",
    "deconvolution",
    "grad_cam",
    {"name": "integrated_gradients", "n_steps": 4},
]
"""As many methods as make the old grid of every map (2 images + 2 maps per method in a row) scroll sideways."""
METRICS = [
    "pointing_game",
    "relevance_mass",
    "relevance_rank",
    "gini",
    {"name": "deletion", "steps": 4},
    {"name": "insertion", "steps": 4},
]


def chromium_paths() -> tuple[str, str] | None:
    """``(chromium, chromedriver)`` on the PATH, or None."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@pytest.fixture(scope="module")
def small_run(tiny_data, tmp_path_factory) -> Path:
    """A small finished run: 2 neurons × 2 drivers, 8 methods (two pairwise), 6 metrics, no synthesis."""
    out = tmp_path_factory.mktemp("browser-run")
    spec = validate_experiment(
        tiny_experiment(
            tiny_data,
            name="browser",
            cache=False,
            methods=METHODS,
            metrics=METRICS,
        )
    )
    run_experiment(spec, out, progress=False)
    return out


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium at 1400 × 900 px (scroll bars shown, as a reader sees them)."""
    paths = chromium_paths()
    if paths is None:
        pytest.skip("Chromium and chromedriver are not installed (Debian: apt-get install chromium chromium-driver)")
    options = Options()
    options.binary_location = paths[0]
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"):
        options.add_argument(arg)
    options.add_argument(f"--window-size={WIDTH},{HEIGHT}")
    driver = webdriver.Chrome(service=Service(executable_path=paths[1]), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def page(browser, small_run):
    """The small run's report, loaded, with its first pair's maps drawn."""
    browser.get((small_run / "report.html").as_uri())
    wait_for_maps(browser)
    return browser


OVERFLOWING = """
var width = document.documentElement.clientWidth, out = [];
document.querySelectorAll("main *").forEach(function (e) {
  if (!e.getClientRects().length) return;  /* not rendered: in a collapsed <details> */
  var style = getComputedStyle(e), box = e.getBoundingClientRect();
  var replaced = ["IMG", "CANVAS", "INPUT", "SELECT", "BUTTON"].indexOf(e.tagName) >= 0;
  var scrolls = !replaced && style.overflowX !== "visible" && e.scrollWidth > e.clientWidth + 1;
  if (box.right > width + 1 || scrolls) out.push(e.tagName + "." + e.className + " " + Math.round(box.right));
});
return out;
"""
"""Every element of the page that reaches beyond the window or scrolls sideways in a box of its own."""


def wait(driver, condition, what: str):
    return WebDriverWait(driver, WAIT_S).until(lambda d: condition(d), message=what)


def cards(driver) -> list:
    return driver.find_elements(By.CSS_SELECTOR, "#ex-cards .card")


def wait_for_maps(driver) -> None:
    """Until every map of the chosen methods is drawn (two per card)."""
    wait(
        driver,
        lambda d: len(d.find_elements(By.CSS_SELECTOR, "#ex-cards canvas[data-drawn]")) == 2 * len(cards(d)),
        "the chosen maps are drawn",
    )


def first_map(driver) -> str:
    """The pixels of the first card's driver map, as a data URL."""
    return driver.execute_script("return document.querySelector('#ex-cards canvas').toDataURL()")


def test_the_report_fits_1400_px_and_its_screenshot_is_not_blank(page, tmp_path):
    widths = page.execute_script(
        "return [document.documentElement.scrollWidth, document.documentElement.clientWidth, window.innerWidth]"
    )
    assert widths[2] == WIDTH and widths[0] <= widths[1], f"horizontal overflow at {WIDTH} px: {widths}"
    beyond = page.execute_script(OVERFLOWING)
    assert not beyond, f"elements wider than the window or scrolling sideways at {WIDTH} px: {beyond}"
    loaded = page.execute_script("return performance.getEntriesByType('navigation')[0].loadEventEnd")
    assert loaded > 0, "the page finished loading"
    assert page.execute_script("return document.querySelectorAll('#ex-cards canvas').length") == 2 * len(METHODS)
    png = page.get_screenshot_as_png()
    (tmp_path / "report-1400.png").write_bytes(png)
    shot = Image.open(io.BytesIO(png)).convert("RGB")
    assert shot.size[0] == WIDTH and shot.size[1] > 500
    colours = shot.getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50, "the page shows text and figures, not a blank screen"
    white = max(count for count, colour in colours if colour == (255, 255, 255)) if colours else 0
    assert white < 0.97 * shot.size[0] * shot.size[1]


def test_maps_are_decoded_to_the_levels_they_were_stored_at(page):
    """Every drawn pixel's opacity is one of the 2 · LEVELS + 1 quantisation levels, and the maps are not empty."""
    alphas = page.execute_script(
        """var out = new Set();
        document.querySelectorAll('#ex-cards canvas').forEach(function (c) {
          var px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
          for (var i = 3; i < px.length; i += 4) out.add(px[i]);
        });
        return Array.from(out);"""
    )
    allowed = {round(255 * 0.9 * (k / LEVELS) ** 0.6) for k in range(LEVELS + 1)}
    assert set(alphas) <= allowed and len(set(alphas) - {0}) >= 3, sorted(alphas)


def test_choosing_a_neuron_and_a_pair_shows_its_maps(page):
    head = page.find_element(By.ID, "ex-head")
    neuron = Select(page.find_element(By.ID, "ex-neuron"))
    before, map_before = head.text, first_map(page)
    second = neuron.options[1].text.split(" (")[0]
    neuron.select_by_index(1)
    wait(page, lambda d: head.text != before, "the pair shown changes with the neuron")
    wait_for_maps(page)
    assert head.text.startswith(f"neuron {second}:") and first_map(page) != map_before
    pair = Select(page.find_element(By.ID, "ex-pair"))
    assert len(pair.options) == 2
    before = head.text
    pair.select_by_index(1)
    wait(page, lambda d: head.text != before, "the pair shown changes with the pair")
    assert pair.first_selected_option.text.split(": ")[1].split(" → ")[0] in head.text


def test_choosing_methods_changes_the_cards(page):
    titles = [c.find_element(By.CLASS_NAME, "card-title").text for c in cards(page)]
    assert titles == ["parallel_backprop", "parallel_backprop#2", "saliency", *titles[3:]] and len(titles) == 8
    assert "pairwise" in cards(page)[0].get_attribute("class"), "the pairwise method is marked"
    assert "pairwise" not in cards(page)[2].get_attribute("class")
    page.find_element(By.CSS_SELECTOR, "input[name=ex-method][value='1']").click()
    wait(page, lambda d: len(cards(d)) == 7, "a method unticked")
    assert [c.find_element(By.CLASS_NAME, "card-title").text for c in cards(page)] == [titles[0], *titles[2:]]
    page.find_element(By.ID, "ex-none").click()
    wait(page, lambda d: not cards(d), "no method")
    assert "No method is chosen" in page.find_element(By.ID, "ex-cards").text
    page.find_element(By.CSS_SELECTOR, "input[name=ex-method][value='7']").click()
    wait(page, lambda d: len(cards(d)) == 1, "one method ticked")
    wait_for_maps(page)
    assert cards(page)[0].find_element(By.CLASS_NAME, "card-title").text == "integrated_gradients"


def test_opacity_overlay_and_scores_controls(page):
    canvas = page.find_element(By.CSS_SELECTOR, "#ex-cards canvas")
    under = page.find_element(By.CSS_SELECTOR, "#ex-cards img.under")
    assert canvas.value_of_css_property("opacity") == "1" and under.value_of_css_property("visibility") == "visible"
    slider = page.find_element(By.ID, "ex-opacity")
    slider.send_keys(Keys.HOME)
    wait(page, lambda d: canvas.value_of_css_property("opacity") == "0", "opacity 0")
    assert page.find_element(By.ID, "ex-opacity-value").text == "0%"
    for _ in range(40):
        slider.send_keys(Keys.RIGHT)
    wait(page, lambda d: canvas.value_of_css_property("opacity") == "0.4", "opacity 40%")
    page.find_element(By.ID, "ex-overlay").click()
    wait(page, lambda d: under.value_of_css_property("visibility") == "hidden", "the image under the map hidden")
    scores = page.find_element(By.CSS_SELECTOR, "#ex-cards table.pair-scores")
    assert scores.is_displayed() and "pointing_game" in scores.text
    page.find_element(By.ID, "ex-scores").click()
    wait(page, lambda d: not scores.is_displayed(), "the scores hidden")


def test_tables_sort_and_long_sections_start_collapsed(page):
    table = page.find_element(By.CSS_SELECTOR, "#pairs table.sortable")
    header = [th.text for th in table.find_elements(By.CSS_SELECTOR, "thead th")]
    column = header.index("driver response")

    def values() -> list[float]:
        rows = table.find_elements(By.CSS_SELECTOR, "tbody tr")
        return [float(r.find_elements(By.TAG_NAME, "td")[column].text) for r in rows]

    table.find_elements(By.CSS_SELECTOR, "thead th")[column].click()
    wait(page, lambda d: values() == sorted(values()), "sorted ascending")
    table.find_elements(By.CSS_SELECTOR, "thead th")[column].click()
    wait(page, lambda d: values() == sorted(values(), reverse=True), "sorted descending")
    thumbs = table.find_elements(By.CSS_SELECTOR, "img[data-stimulus]")
    assert thumbs and all(t.get_attribute("src").startswith("data:image/png;base64,") for t in thumbs)
    timings = page.find_element(By.CSS_SELECTOR, "#timings details")
    assert timings.get_attribute("open") is None, "timings start collapsed"
    assert not page.find_element(By.CSS_SELECTOR, "#timings table").is_displayed()
    timings.find_element(By.TAG_NAME, "summary").click()
    wait(page, lambda d: d.find_element(By.CSS_SELECTOR, "#timings table").is_displayed(), "timings opened")


def test_explore_a_pair_from_the_pairs_table(page):
    rows = page.find_elements(By.CSS_SELECTOR, "#pairs tbody tr")
    last = rows[-1]
    neuron, driver = last.find_elements(By.TAG_NAME, "td")[0].text, last.find_elements(By.TAG_NAME, "td")[3].text
    last.find_element(By.CSS_SELECTOR, "button.explore").click()
    head = page.find_element(By.ID, "ex-head")
    wait(page, lambda d: head.text.startswith(f"neuron {neuron}: driver {driver} "), "the chosen pair is explored")
    wait_for_maps(page)
