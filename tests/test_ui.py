"""The web interface: its handlers directly (fast), and the page in a real headless Chromium."""

import os
import shutil
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

gr = pytest.importorskip("gradio")

from date_diffusion.hub import TOY_PIPELINE  # noqa: E402
from date_diffusion.ui.session import Form, InputError, Session, check_form, parse_schedule, summary  # noqa: E402


@pytest.fixture(scope="module")
def session():
    return Session(str(TOY_PIPELINE))


def test_compare_gives_both_images_with_what_date_did(session):
    form = Form("a red circle to the left of a blue square", steps=20, schedule="every 5")
    result = session.compare(form)
    assert not result["stopped"] and result["date"] is not None
    steps = [u["step"] for u in result["trace"]["updates"]]
    assert steps == [0, 5, 10, 15]
    captions = [c for _, c in result["strip"]]
    assert captions[:2] == ["step 0: x0_hat before", "step 0: x0_hat after"] and len(captions) == 8
    assert set(result["verdicts"]) == {"fixed", "date"} and result["verdicts"]["date"]["pass"] in (True, False)
    assert [os.path.basename(f) for f in result["files"]] == ["fixed.png", "date.png", "trace.json",
                                                               "embeddings.safetensors"]  # fmt: skip
    text = summary(result)
    assert "Exact evaluator, fixed embedding" in text and "Embedding moved" in text
    # the same seed without DATE is the fixed image: the pair differs only by DATE
    again = session.compare(Form(form.prompt, steps=20, rho=0.0, schedule="every 5"))
    assert np.array_equal(np.asarray(again["fixed"]), np.asarray(again["date"]))


@pytest.mark.parametrize(
    "form, message",
    [
        (Form("  "), "prompt is empty"),
        (Form("a cat", steps=0), "steps must be between 1 and 1000"),
        (Form("a cat", steps=2.5), "steps must be a whole number"),
        (Form("a cat", rho=float("nan")), "rho must be a finite number"),
        (Form("a cat", schedule="every x"), "needs a whole number N"),
        (Form("a cat", schedule="0, 60"), "outside the run"),
        (Form("a cat", reward="nope"), "reward: unknown reward 'nope'"),
        (Form("a cat", grad_steps=0), "gradient steps must be between 1 and 20"),
        (Form("a cat", anchor="sideways"), "anchor must be one of"),
    ],
)
def test_bad_input_is_refused_with_the_field_named(form, message):
    with pytest.raises(InputError, match=message):
        check_form(form)


def test_schedule_text():
    assert parse_schedule("every 10") == {"update_every": 10}
    assert parse_schedule(" 0, 10; 20 ") == {"update_steps": [0, 10, 20]}


def test_stop_flag_interrupts_between_steps(session):
    import threading

    def press():
        time.sleep(0.3)
        session.stop.set()

    threading.Thread(target=press).start()
    t0 = time.perf_counter()
    result = session.compare(Form("a red circle", steps=500))
    assert result["stopped"] and result["date"] is None and time.perf_counter() - t0 < 10


def test_run_tab_gallery_filters(tmp_path):
    from date_diffusion.cli.main import main
    from date_diffusion.ui.runview import categories, gallery, load_run

    argv = ["bench", "--suite", "toy", "--limit", "3", "--seeds", "1", "--steps", "6", "--methods", "fixed date:rho=2"]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    run = load_run(tmp_path)
    assert categories(run) == ["single"]
    items = gallery(run)
    assert len(items) == 6 and all(os.path.exists(p) for p, _ in items)
    changed = gallery(run, changed_only=True)
    assert all("(changed)" in c and c.startswith("date:rho=2") for _, c in changed)
    assert gallery(run, category="position") == []
    with pytest.raises(ValueError, match="not a bench run"):
        load_run(tmp_path / "images")


# ------------------------------------------------------------------------------------------- real browser
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not binary or not driver:
        pytest.skip("Chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
    opts = Options()
    opts.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1800"):
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service(driver), options=opts)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    pytest.importorskip("selenium")
    port = _free_port()
    log = tmp_path_factory.mktemp("ui") / "server.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "date_diffusion", "ui", "--port", str(port)],
        stdout=open(log, "w"),
        stderr=subprocess.STDOUT,
        env=env,
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"the server exited: {log.read_text()[-2000:]}")
            time.sleep(0.5)
    yield f"http://127.0.0.1:{port}", proc
    proc.terminate()
    proc.wait(timeout=20)


def _set(driver, elem_id, value):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    box = driver.find_element(By.CSS_SELECTOR, f"#{elem_id} textarea, #{elem_id} input")
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(Keys.DELETE)
    box.send_keys(str(value))


def _wait(driver, condition, timeout):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition)


def test_browser_generate_round_trip_stop_and_bad_input(server, tmp_path):
    from selenium.webdriver.common.by import By

    url, proc = server
    driver = _browser()
    try:
        driver.get(url)
        _wait(driver, lambda d: d.find_elements(By.ID, "generate"), 60)
        _set(driver, "prompt", "a red circle to the left of a blue square")
        t0 = time.perf_counter()
        driver.find_element(By.ID, "generate").click()
        _wait(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#fixed-image img, #date-image img")) >= 2, 60)
        _wait(driver, lambda d: "Exact evaluator, DATE" in d.find_element(By.ID, "summary").text, 60)
        _wait(
            driver,
            lambda d: d.find_elements(By.CSS_SELECTOR, "#reward-plot img, #reward-plot svg, #reward-plot canvas"),
            30,
        )
        round_trip = time.perf_counter() - t0
        text = driver.find_element(By.ID, "summary").text
        assert "PASS" in text or "FAIL" in text
        driver.save_screenshot(str(tmp_path / "ui.png"))
        assert (tmp_path / "ui.png").stat().st_size > 10_000
        print(f"generate round trip in the browser: {round_trip:.1f} s")

        # a bad value is answered in the page and the server stays up
        _set(driver, "steps", "0")
        driver.find_element(By.ID, "generate").click()
        _wait(driver, lambda d: "steps must be between 1 and 1000" in d.page_source, 30)
        assert proc.poll() is None

        # Stop ends a 500-step run within 2 s
        _set(driver, "steps", "500")
        driver.find_element(By.ID, "generate").click()
        time.sleep(3)
        t1 = time.perf_counter()
        driver.find_element(By.ID, "stop").click()
        _wait(driver, lambda d: "Stopped" in d.find_element(By.ID, "summary").text, 30)
        stop_seconds = time.perf_counter() - t1
        print(f"stop took {stop_seconds:.2f} s")
        assert stop_seconds < 2.0
        assert proc.poll() is None
    finally:
        driver.quit()


def test_page_handler_reports_bad_input_and_failing_runs_as_page_errors(session):
    from date_diffusion.ui.app import build_app

    demo = build_app(session)
    generate = next(f.fn for f in demo.fns.values() if f.name == "generate")
    values = ["a red circle", "", 0, 10, 5.0, 0.5, "every 5", 1, "previous", 0.0, "clip", False]
    with pytest.raises(gr.Error, match="steps must be between"):
        generate(*values[:3], 0, *values[4:], progress=None)
    with pytest.raises(gr.Error, match="the run failed: ModelNotFoundError"):
        generate(*values[:10], "clip:/no/such/clip", False, progress=None)  # valid spec, no such model
    fixed, dated, text, figure, strip, files = generate(*values, progress=None)
    assert fixed is not None and dated is not None and "Exact evaluator" in text and len(files) == 4
