"""End to end in a real browser: ``psinspect serve`` + headless Chromium (Selenium).

Starts the server as a subprocess on a free localhost port, opens the page, clicks the first
shipped example, presses Inspect, and checks that the heatmap image and the PASS/FAIL verdict
appear, and that the results zip downloads. A screenshot goes to ``test-artifacts/``. Skips
only where Debian's chromium or chromedriver are absent (CI installs them).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pytest
from browser_util import find_browser, free_port, headless_chromium

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _wait_http(url: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise AssertionError(f"psinspect serve exited with {proc.returncode}:\n{out[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"psinspect serve did not answer on {url} within {timeout:.0f} s")


def serve_command(port: int) -> list[str]:
    """The server under test: the installed CLI, same interpreter as the tests."""
    return [sys.executable, "-c", "from psinspect.cli import main; main()", "serve",
            "--port", str(port)]


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code


def test_serve_inspect_example_in_browser(tmp_path: Path) -> None:
    found = find_browser()
    if found is None:
        pytest.skip("chromium and chromedriver not installed "
                    "(apt-get install chromium chromium-driver; .ci/run does this)")
    pytest.importorskip("selenium", reason="selenium not installed (pip install '.[test]')")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from psinspect.app import load_model_choices, operating_points

    five = next(p.threshold for p in operating_points(load_model_choices()[0])
                if p.rate == 0.05)
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    tmp = tmp_path / "tmp"  # the server's temp folder lives here, so we can see it removed
    tmp.mkdir()
    env = dict(os.environ, OMP_NUM_THREADS="1", GRADIO_ANALYTICS_ENABLED="False",
               TMPDIR=str(tmp))
    proc = subprocess.Popen(
        serve_command(port),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT,
    )
    try:
        _wait_http(url, proc, timeout=90)
        ARTIFACTS.mkdir(exist_ok=True)
        with headless_chromium(*found) as drv:
            drv.get(url)
            wait = WebDriverWait(drv, 60)
            example = wait.until(
                lambda d: d.find_elements(By.CSS_SELECTOR, "#examples button.gallery-item")
            )[0]
            example.click()
            # the example must land in the upload widget before we press the button
            wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#upload a, #upload table"))
            # judge at the pass/fail threshold for 5 % of good parts failing, from the menu
            drv.find_element(By.CSS_SELECTOR, "#operating-points input").click()
            wait.until(lambda d: next((o for o in d.find_elements(By.CSS_SELECTOR, "li")
                                       if o.text.startswith("5% of good parts failing")),
                                      None)).click()
            wait.until(lambda d: abs(float(d.find_element(
                By.CSS_SELECTOR, "#image-threshold input[type=number]").get_attribute("value"))
                - five) < 1e-3)
            drv.find_element(By.ID, "inspect").click()
            box = wait.until(
                lambda d: next((e for e in d.find_elements(By.CSS_SELECTOR, "#verdict-box")
                                if e.text.strip().startswith(("PASS", "FAIL"))), None)
            )
            heat = wait.until(
                lambda d: next((e for e in d.find_elements(By.CSS_SELECTOR, "#heatmap img")
                                if d.execute_script(
                                    "return arguments[0].complete && arguments[0].naturalWidth",
                                    e)), None)
            )
            width = drv.execute_script("return arguments[0].naturalWidth", heat)
            link = wait.until(
                lambda d: next((a for a in d.find_elements(By.CSS_SELECTOR, "#results a")
                                if (a.get_attribute("href") or "").endswith("_results.zip")),
                               None)
            )
            download = link.get_attribute("href")
            drv.save_screenshot(str(ARTIFACTS / "browser-inspect.png"))
            verdict = box.text.split()[0]
            # (the slider set from the menu, then to the threshold that judged: still 5 %)
            picked = drv.find_element(By.CSS_SELECTOR, "#operating-points input").get_attribute(
                "value")
            page = drv.page_source
        assert verdict in ("PASS", "FAIL")
        assert width >= 32
        # the results download: what detect writes, with the verdict shown
        with urllib.request.urlopen(download, timeout=10) as resp:
            results = zipfile.ZipFile(io.BytesIO(resp.read()))
        summary = json.loads(results.read("summary.json"))
        assert summary["inputs"][0]["verdict"] == verdict.lower()
        # judged at the menu's 5 % threshold, and the summary says how it was set
        assert summary["image_threshold"] == pytest.approx(five, rel=1e-9)
        assert summary["image_threshold_calibration"].startswith("--image-fpr 0.05: ")
        assert picked.startswith("5% of good parts failing"), picked
        assert any(n.endswith("_score.npy") for n in results.namelist())
        assert "Traceback" not in page
        # the server hands out no file from outside its own temp folder
        from psinspect.app import EXAMPLES_DIR

        for path in ("/etc/passwd", str(EXAMPLES_DIR / "examples.json"), __file__):
            assert _status(f"{url}gradio_api/file={path}") in (403, 404), path
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    assert list(tmp.iterdir()) == [], "the server left temp files behind"
