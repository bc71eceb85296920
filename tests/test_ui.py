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

from date_diffusion.toyworld.world import PIPELINE as TOY_PIPELINE  # noqa: E402
from date_diffusion.ui.session import (  # noqa: E402
    FIELDS,
    Form,
    InputError,
    Session,
    StopTokens,
    check_form,
    placeholders,
    summary,
)

PROMPT = "a red circle to the left of a blue square"


def form(prompt="a cat", seed=0, **settings):
    """A form with these setting fields typed (text, as the page sends them)."""
    return Form(prompt, seed=seed, settings={k: str(v) for k, v in settings.items()})


@pytest.fixture(scope="module")
def session():
    return Session(str(TOY_PIPELINE))


def test_compare_gives_both_images_with_what_date_did(session):
    result = session.compare(form(PROMPT, num_inference_steps=20, update_every=5))
    assert not result["stopped"] and result["date"] is not None
    steps = [u["step"] for u in result["trace"]["updates"]]
    assert steps == [0, 5, 10, 15]
    captions = [c for _, c in result["strip"]]
    assert captions[:2] == ["step 0: x0_hat before", "step 0: x0_hat after"] and len(captions) == 8
    from date_diffusion.toyworld.evaluator import evaluate_prompt

    for kind in ("fixed", "date"):  # each verdict is the evaluator's for that image and prompt
        assert result["verdicts"][kind] == evaluate_prompt(np.asarray(result[kind]), PROMPT)
    assert [os.path.basename(f) for f in result["files"]] == ["fixed.png", "date.png", "trace.json",
                                                               "embeddings.safetensors"]  # fmt: skip
    text = summary(result)
    assert "Exact evaluator, fixed embedding" in text and "Embedding moved" in text
    assert "update every 5 (user)" in text and "rho (relative) 0.005 (model)" in text
    # the same seed without DATE is the fixed image: the pair differs only by DATE
    again = session.compare(form("a red circle to the left of a blue square", num_inference_steps=20, rho=0))
    assert np.array_equal(np.asarray(again["fixed"]), np.asarray(again["date"]))


@pytest.mark.parametrize(
    "bad, message",
    [
        (Form("  "), "prompt is empty"),
        (form(num_inference_steps=0), "steps must be an integer from 1 to 1000, got '0'"),
        (form(num_inference_steps=2.5), "steps must be an integer from 1 to 1000, got '2.5'"),
        (form(rho="nan"), "rho must be a finite number"),
        (form(rho="abc"), "rho must be a finite number >= 0 and <= 100, got 'abc'"),
        (form(rho=0.1, rho_relative=0.1), "give only one of rho and rho \\(relative\\)"),
        (form(update_every="x"), "update every must be an integer from 1"),
        (form(update_steps="0, 60"), "outside the run"),
        (form(update_intervals="5"), "update intervals must be START:END pairs"),
        (form(reward="nope"), "reward 'nope': unknown reward 'nope'"),
        (form(reward="clip"), "'clip' alone names no model"),
        (form(grad_steps=0), "gradient steps must be an integer from 1 to 100"),
        (form(anchor="sideways"), "anchor must be one of previous, original"),
        (form(normalize="maybe"), "normalize must be one of true/1/yes/false/0/no, got 'maybe'"),
        (form(seed="abc"), "seed must be a whole number"),
    ],
)
def test_bad_input_is_refused_with_the_field_named(bad, message):
    with pytest.raises(InputError, match=message):
        check_form(bad, str(TOY_PIPELINE))


def test_every_setting_has_a_field_and_blank_fields_run_the_resolved_defaults(session):
    from date_diffusion.core.settings import SETTINGS
    from date_diffusion.resolver import resolve_settings

    assert {s.field for s in SETTINGS} | {"reward", "num_inference_steps", "guidance_scale"} == set(FIELDS)
    _, resolved = check_form(form(**dict.fromkeys(FIELDS, " ")), str(TOY_PIPELINE))
    assert resolved == resolve_settings(str(TOY_PIPELINE))
    hints = placeholders(session.defaults)
    assert hints["rho_relative"] == "default: 0.005 (model)" and hints["rho"] == "default: not used"
    assert hints["reward"] == "default: aug8(toy-ensemble) (model)"
    assert hints["num_inference_steps"] == "default: 50 (family)"
    _, typed = check_form(form(normalize="no", direction="random", update_intervals="0:3"), str(TOY_PIPELINE))
    assert (typed.date.normalize, typed.date.direction, typed.date.update_intervals) == (False, "random", ((0, 3),))


def test_stop_flag_interrupts_between_steps(session):
    import threading

    token = threading.Event()

    def press():
        time.sleep(0.3)
        token.set()

    threading.Thread(target=press).start()
    t0 = time.perf_counter()
    result = session.compare(form("a red circle", num_inference_steps=500), stop=token)
    assert result["stopped"] and result["date"] is None and time.perf_counter() - t0 < 10


def test_one_visitors_stop_never_reaches_another():
    tokens = StopTokens()
    mine, theirs = tokens.start("visitor-a"), tokens.start("visitor-b")
    tokens.stop("visitor-a")
    assert mine.is_set() and not theirs.is_set()
    again = tokens.start("visitor-a")  # a new request starts with a fresh token
    assert not again.is_set() and mine.is_set()
    tokens.stop("nobody")  # a Stop from a visitor with no run changes nothing
    assert not theirs.is_set()


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
        print(f"generate round trip in the browser: {round_trip:.1f} s")

        # a bad value is answered in the page and the server stays up
        _set(driver, "steps", "0")
        driver.find_element(By.ID, "generate").click()
        _wait(driver, lambda d: "steps must be an integer from 1 to 1000" in d.page_source, 30)
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

    def values(**settings):
        texts = {"num_inference_steps": "10", "update_every": "5", **settings}
        return ["a red circle", "", "0", False, False, *(texts.get(name, "") for name in FIELDS)]

    with pytest.raises(gr.Error, match="steps must be an integer from 1 to 1000"):
        generate(None, *values(num_inference_steps="0"), progress=None)
    with pytest.raises(gr.Error, match="the run failed: ModelNotFoundError"):
        generate(None, *values(reward="clip:/no/such/clip"), progress=None)  # valid spec, no such model
    from date_diffusion.outputs import read_png_metadata

    fixed, dated, text, figure, strip, files = generate(None, *values(), progress=None)
    assert fixed is not None and dated is not None and "Exact evaluator" in text
    record = read_png_metadata(next(f for f in files if f.endswith("date.png")))["record"]
    assert record["date"]["update_every"] == 5 and record["sources"]["update_every"] == "user"
    assert record["steps"] == 10 and record["sources"]["reward"] == "model" and record["method"] == "date"
