"""The web page in a real browser (Debian's chromium + chromium-driver via Selenium): streamed text grows, images
render, the seed is shown. Skipped when the browser or Selenium is absent."""

from __future__ import annotations

import shutil
import time

import pytest

from .conftest import running_server

webdriver = pytest.importorskip("selenium.webdriver")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="needs chromium and chromium-driver")


@pytest.fixture(scope="module")
def browser():
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1200,800",
                 "--no-first-run", "--disable-extensions"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


def _type(browser, element_id: str, text: str) -> None:
    """Replace the text of the input ``element_id``."""
    from selenium.webdriver.common.by import By

    box = browser.find_element(By.ID, element_id)
    box.clear()
    box.send_keys(text)


def _wait(predicate, timeout: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def test_the_page_streams_text_and_renders_images(served_runs, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    specs = [str(served_runs["tiny-gpt"]), str(served_runs["tiny-diffusion"])]
    with running_server(specs) as (url, _):
        browser.get(url + "/")
        _wait(lambda: len(browser.find_elements(By.CSS_SELECTOR, "#model option")) == 2, what="the model list")
        Select(browser.find_element(By.ID, "model")).select_by_value("tiny-gpt")
        prompt = browser.find_element(By.ID, "prompt")
        prompt.clear()
        prompt.send_keys("line")
        tokens = browser.find_element(By.ID, "max_tokens")
        tokens.clear()
        tokens.send_keys("2000")  # long enough to watch it grow on a fast machine
        browser.find_element(By.ID, "seed").send_keys("7")
        browser.find_element(By.ID, "go").click()
        output = browser.find_element(By.ID, "output")
        lengths = []

        def grows() -> bool:
            lengths.append(len(output.text))
            return "done:" in browser.find_element(By.ID, "status").text

        _wait(grows, what="the streamed text to finish")
        seen = sorted(set(lengths))
        assert len(seen) >= 3, f"the text did not grow token by token: {seen}"  # several partial lengths observed
        assert output.text.startswith("line") and len(output.text) > 100
        status = browser.find_element(By.ID, "status").text
        assert "seed 7" in status and "2000 tokens" in status
        browser.save_screenshot(str(tmp_path / "text.png"))

        Select(browser.find_element(By.ID, "model")).select_by_value("tiny-diffusion")
        Select(browser.find_element(By.ID, "label")).select_by_value("3")
        steps = browser.find_element(By.CSS_SELECTOR, "input[data-option=steps]")
        steps.clear()
        steps.send_keys("5")
        browser.find_element(By.ID, "go").click()
        _wait(lambda: len(browser.find_elements(By.CSS_SELECTOR, "#images img")) == 8, what="8 images")
        _wait(lambda: all(browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img)
                          for img in browser.find_elements(By.CSS_SELECTOR, "#images img")), what="images to decode")
        widths = {browser.execute_script("return arguments[0].naturalWidth", img)
                  for img in browser.find_elements(By.CSS_SELECTOR, "#images img")}
        assert widths == {8}
        assert "label 3" in browser.find_element(By.ID, "status").text
        browser.save_screenshot(str(tmp_path / "images.png"))


def test_a_text_to_image_model_gets_a_prompt_box(browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    from genforge.cli import main

    from .conftest import FAST

    run = tmp_path / "t2i"
    assert main(["train", "tiny-t2i", "--out", str(run), "--set", "train.max_steps=2", *FAST]) == 0
    with running_server([str(run)]) as (url, _):
        browser.get(url + "/")
        _wait(lambda: len(browser.find_elements(By.CSS_SELECTOR, "#model option")) == 1, what="the model list")
        Select(browser.find_element(By.ID, "model")).select_by_value("t2i")
        box = browser.find_element(By.ID, "image_prompt")
        assert box.is_displayed() and not browser.find_element(By.ID, "label").is_displayed()
        assert box.get_attribute("value").startswith("digit ")  # the run's first preview prompt
        _type(browser, "image_prompt", "digit 3")
        _type(browser, "n", "2")
        browser.find_element(By.ID, "go").click()
        _wait(lambda: len(browser.find_elements(By.CSS_SELECTOR, "#images img")) == 2, what="2 images")
        assert "prompt \u201cdigit 3\u201d" in browser.find_element(By.ID, "status").text
        box.clear()
        box.send_keys("digit three")
        browser.find_element(By.ID, "go").click()
        _wait(lambda: "never saw in a caption" in browser.find_element(By.ID, "status").text, what="the refusal")


def test_the_upload_box_edits_an_image(browser, tmp_path):
    """A model that can img2img shows the upload box; strength 0 sends the image back unchanged."""
    import base64

    import numpy as np
    from PIL import Image
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    from genforge.cli import main

    from .conftest import FAST

    run = tmp_path / "t2i"
    assert main(["train", "tiny-t2i", "--out", str(run), "--set", "train.max_steps=2", *FAST]) == 0
    source = (np.arange(64, dtype=np.uint8).reshape(8, 8) * 4)
    Image.fromarray(source).save(tmp_path / "src.png")
    with running_server([str(run)]) as (url, _):
        browser.get(url + "/")
        _wait(lambda: len(browser.find_elements(By.CSS_SELECTOR, "#model option")) == 1, what="the model list")
        Select(browser.find_element(By.ID, "model")).select_by_value("t2i")
        assert browser.find_element(By.ID, "source").is_displayed()
        browser.find_element(By.ID, "source").send_keys(str(tmp_path / "src.png"))
        _type(browser, "strength", "0")
        _type(browser, "n", "1")
        browser.find_element(By.ID, "go").click()
        _wait(lambda: len(browser.find_elements(By.CSS_SELECTOR, "#images img")) == 1, what="the edited image")
        data = browser.find_element(By.CSS_SELECTOR, "#images img").get_attribute("src").split(",", 1)[1]
        (tmp_path / "out.png").write_bytes(base64.b64decode(data))
        assert np.array_equal(np.array(Image.open(tmp_path / "out.png")), source)
