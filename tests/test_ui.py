"""The web interface: its handlers directly (fast), and the page in a real headless Chromium."""

import html
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

gr = pytest.importorskip("gradio")

from date_diffusion.toyworld.world import ASSETS as TOY_ASSETS  # noqa: E402
from date_diffusion.toyworld.world import CLIPS as TOY_CLIPS  # noqa: E402
from date_diffusion.toyworld.world import PIPELINE as TOY_PIPELINE  # noqa: E402
from date_diffusion.ui.access import MAX_WORK  # noqa: E402
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
    assert not result.stopped and result.date is not None
    steps = [u["step"] for u in result.trace["updates"]]
    assert steps == [0, 5, 10, 15]
    captions = [c for _, c in result.strip]
    assert captions[:2] == ["step 0: x0_hat before", "step 0: x0_hat after"] and len(captions) == 8
    from date_diffusion.toyworld.evaluator import evaluate_prompt

    for kind in ("fixed", "date"):  # each verdict is the evaluator's for that image and prompt
        assert result.verdicts[kind] == evaluate_prompt(np.asarray(getattr(result, kind)), PROMPT)
    assert [os.path.basename(f) for f in result.files] == ["fixed.png", "date.png", "compare.png", "trace.json",
                                                               "embeddings.safetensors"]  # fmt: skip
    text = summary(result)
    assert "Exact evaluator, fixed embedding" in text and "Embedding moved" in text
    assert "update every 5 (user)" in text and "rho (relative) 0.005 (model)" in text
    # the finished images' rewards, as the grid's headers state them, and the difference image the grid may leave out
    from date_diffusion.grids import final_rewards
    from date_diffusion.outputs import read_png_metadata

    final = result.final_reward
    assert final == pytest.approx(final_rewards(session.reward(result.settings.reward),
                                                {"fixed": result.fixed, "date": result.date}, PROMPT))  # fmt: skip
    panels = read_png_metadata(next(f for f in result.files if f.endswith("compare.png")))["record"]["panels"]
    assert [p["final_reward"] for p in panels[:2]] == [final["fixed"], final["date"]]
    assert (f"Reward of the finished images (aug8(toy-ensemble)): fixed {final['fixed']:.4f}, DATE "
            f"**{final['date']:.4f} ({final['date'] - final['fixed']:+.4f} vs fixed)**") in text  # fmt: skip
    diff = result.difference
    expected = np.clip(np.abs(np.asarray(result.date, int) - np.asarray(result.fixed, int)) * 16, 0, 255)
    assert np.array_equal(np.asarray(diff.image), expected)
    changed, total = diff.record["pixels_changed"], diff.record["pixels"]
    assert f"{changed / total:.2%} ({changed:,} of {total:,}) pixels changed" in text
    # the same seed without DATE is the fixed image: the pair differs only by DATE
    again = session.compare(form("a red circle to the left of a blue square", num_inference_steps=20, rho=0))
    assert np.array_equal(np.asarray(again.fixed), np.asarray(again.date))


def test_a_prompt_outside_the_toy_world_gets_its_reason_and_the_vocabulary_on_the_page(session):
    from date_diffusion.toyworld.scene import describe_vocabulary

    text = summary(session.compare(form("a cat wearing a crown", num_inference_steps=4, update_every=2)))
    assert "Exact evaluator, DATE: **no verdict (unknown words: cat, wearing, crown)**" in text
    assert f"The toy world knows only {describe_vocabulary()}." in text


@pytest.mark.parametrize(
    "bad, message, field",
    [
        (Form("  "), "prompt is empty", "prompt"),
        (form(num_inference_steps=0), "steps must be an integer from 1 to 1000, got '0'", "num_inference_steps"),
        (form(num_inference_steps=2.5), "steps must be an integer from 1 to 1000, got '2.5'", "num_inference_steps"),
        (form(rho="nan"), "rho must be a finite number", "rho"),
        (form(rho="abc"), "rho must be a finite number >= 0 and <= 100, got 'abc'", "rho"),
        (form(rho=0.1, rho_relative=0.1), "give only one of rho and rho \\(relative\\)", "rho"),
        (form(update_every="x"), "update every must be an integer from 1", "update_every"),
        (form(update_steps="0, 60"), "outside the run", "update_steps"),
        (form(update_intervals="5"), "update intervals must be START:END pairs", "update_intervals"),
        (form(reward="nope"), "reward 'nope': unknown reward 'nope'", "reward"),
        (form(reward="clip"), "'clip' alone names no model", "reward"),
        (form(grad_steps=0), "gradient steps must be an integer from 1 to 100", "grad_steps"),
        (form(anchor="sideways"), "anchor must be one of previous, original", "anchor"),
        (form(normalize="maybe"), "normalize must be one of true/1/yes/false/0/no, got 'maybe'", "normalize"),
        (form(reward_target="x"), "reward target must be one of x0, next, got 'x'", "reward_target"),
        (
            form(seed="abc"),
            "seed must be a whole number written with the digits 0-9, in \\[0, 2\\*\\*63\\), got 'abc'",
            "seed",
        ),
        (form(seed="\uff11"), "seed must be a whole number written with the digits 0-9", "seed"),  # round seventeen
        (form(seed=str(2**63)), "seed must be in \\[0, 2\\*\\*63\\)", "seed"),
        (form(seed="1e3"), "seed must be a whole number written with the digits 0-9", "seed"),
    ],
)
def test_bad_input_is_refused_with_the_field_named(bad, message, field):
    with pytest.raises(InputError, match=message) as refused:
        check_form(bad, str(TOY_PIPELINE))
    assert refused.value.field == field  # the page's error box names this field


def test_a_request_over_the_servers_work_bound_is_refused_before_any_work():
    """work = steps + 3 per DATE update with one reward model: 100 steps updating every step is 400, at the default
    bound; one step more is refused naming the steps field, and the server's --max-work moves the bound. The toy
    world's own reward runs 8 views of 3 CLIPs (aug8(toy-ensemble)): 26 per update."""
    from date_diffusion.ui.access import MAX_WORK

    one = {"reward": "toy-clip"}
    _, resolved = check_form(form(num_inference_steps=100, update_every=1, **one), str(TOY_PIPELINE))
    assert resolved.num_inference_steps == 100 and MAX_WORK == 400
    with pytest.raises(InputError, match="101 steps with 101 DATE updates is 404 steps of work") as refused:
        check_form(form(num_inference_steps=101, update_every=1, **one), str(TOY_PIPELINE))
    assert refused.value.field == "num_inference_steps"
    check_form(form(num_inference_steps=101, update_every=2, **one), str(TOY_PIPELINE))  # 101 + 3 * 51 = 254
    with pytest.raises(InputError, match="at most 20 per request"):
        check_form(form(num_inference_steps=10, update_every=2, **one), str(TOY_PIPELINE), max_work=20)  # 10 + 15
    with pytest.raises(InputError, match="is 2700 steps of work .an update counts 26 with this reward's 24 model"):
        check_form(form(num_inference_steps=100, update_every=1), str(TOY_PIPELINE))  # aug8(toy-ensemble): 8 x 3


@pytest.mark.parametrize("seed", [0, 2**53 + 1, 9007199254740993, 2**63 - 1])
def test_the_page_runs_the_seed_typed_exactly_as_the_command_line(seed):
    """Every integer the page reads is parsed as an integer, with the command line's bound (never via a float,
    which turns 9007199254740993 into ...992 and refuses 2**63 - 1, the largest valid seed)."""
    from date_diffusion.cli.common import OPTION_KINDS

    sampling, _ = check_form(form(seed=f" {seed} "), str(TOY_PIPELINE))
    assert sampling.seed == seed == OPTION_KINDS["--seed"].value(str(seed), "--seed")


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
    _, typed = check_form(form(normalize="no", rho="0.5", update_intervals="0:3"), str(TOY_PIPELINE))
    assert (typed.date.normalize, typed.date.update_intervals) == (False, ((0, 3),))
    _, typed = check_form(form(direction="random"), str(TOY_PIPELINE))
    assert typed.date.direction == "random"


PATHS_OUT = ["clip:{p}", "aug8(clip:{p})", "mean(toy-clip;clip:{p})", "0.5*toy-clip+2*subjects(openclip:{p})",
             "mean(toy-clip;aug2(0.5*hpsv2:{p}+toy-judge:{p}))"]  # fmt: skip


@pytest.mark.parametrize("template", PATHS_OUT)
def test_the_reward_field_reads_no_server_path_outside_the_allowed_folders(template, tmp_path):
    """`clip:/etc` and a path that does not exist get the same answer: the page tells nothing about the disk."""
    (tmp_path / "allowed").mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "allowed" / "link-out").symlink_to(tmp_path / "outside")
    allowed = (tmp_path / "allowed",)
    messages = []
    for path in ("/etc", "/no/such/folder", str(tmp_path / "outside"), str(tmp_path / "allowed" / ".." / "outside"),
                 str(tmp_path / "allowed" / "link-out")):  # fmt: skip
        spec = template.format(p=path)
        with pytest.raises(InputError, match="registered names") as refused:
            check_form(form(reward=spec), str(TOY_PIPELINE), allowed)
        assert refused.value.field == "reward"
        messages.append(str(refused.value).replace(path, "PATH"))
    assert len(set(messages)) == 1, messages  # one message, whatever lies (or not) at the path
    assert "(e.g. clip)" not in messages[0] and "toy-clip, " in messages[0]  # round 20: names the page takes
    assert str(tmp_path / "allowed") in messages[0] and "--allow-path" not in messages[0]
    with pytest.raises(InputError, match="this server allows no folder .*--allow-path DIR"):
        check_form(form(reward=template.format(p="/etc")), str(TOY_PIPELINE))


def test_the_reward_field_takes_registered_names_and_files_in_allowed_folders(tmp_path):
    from date_diffusion.toyworld import world

    for spec in ("toy-clip", "aug8(toy-ensemble)", "0.5*toy-clip-s1+mean(toy-clip;toy-clip-m2)", "toy-judge"):
        assert check_form(form(reward=spec), str(TOY_PIPELINE))[1].reward == spec  # no folder needed
    allowed = (world.ASSETS.resolve(),)
    spec = f"mean(clip:{world.CLIPS['toy-clip']};aug2(clip:{world.ASSETS / 'clip-s1'}))"
    assert check_form(form(reward=spec), str(TOY_PIPELINE), allowed)[1].reward == spec
    with pytest.raises(InputError, match="no such file or folder in the allowed folders"):
        check_form(form(reward=f"clip:{world.ASSETS / 'no-such-clip'}"), str(TOY_PIPELINE), allowed)
    with pytest.raises(InputError, match="registered names"):  # a relative path resolves where the server runs
        check_form(form(reward="clip:openai/clip-vit-base-patch32"), str(TOY_PIPELINE), allowed)


def test_a_refused_reward_path_loads_nothing(tmp_path):
    page = Session(str(TOY_PIPELINE))
    try:
        with pytest.raises(InputError, match="registered names"):
            page.compare(form(reward="clip:/etc"))
        assert not page._cache and page._loaded == 0  # refused before any reward or pipeline was built
    finally:
        shutil.rmtree(page.workdir, ignore_errors=True)


def test_the_reward_cache_keeps_only_the_most_recently_used_specs():
    """Five distinct reward texts keep at most `CACHE_SIZE` models; the evicted ones are freed."""
    import gc
    import weakref

    from date_diffusion.ui.session import CACHE_SIZE

    page = Session(str(TOY_PIPELINE))
    specs = ["toy-clip", "toy-clip-s1", "toy-clip-m2", "toy-clip-na", "0.5*toy-clip"]
    refs = {}
    try:
        for spec in specs:
            refs[spec] = weakref.ref(page.reward(spec))
            rewards = [key[1] for key in page._cache if key[0] == "reward"]
            assert len(rewards) <= CACHE_SIZE and rewards[-1] == spec
        assert CACHE_SIZE == 2 and rewards == specs[-2:]
        gc.collect()
        assert [spec for spec, ref in refs.items() if ref() is not None] == specs[-2:]  # the others are freed
        kept = page.reward(specs[-2])  # a hit: the same model, now the most recent
        assert kept is refs[specs[-2]]() and [k[1] for k in page._cache][-1] == specs[-2]
        page.reward("toy-clip")  # evicts the least recently used, specs[-1]
        assert [k[1] for k in page._cache if k[0] == "reward"] == [specs[-2], "toy-clip"]
    finally:
        shutil.rmtree(page.workdir, ignore_errors=True)


def test_stop_flag_interrupts_between_steps(session):
    import threading

    token = threading.Event()

    def press():
        time.sleep(0.3)
        token.set()

    threading.Thread(target=press).start()
    t0 = time.perf_counter()
    session.max_work = 10**6  # a long run to stop (the work bound is not what this checks)
    try:
        result = session.compare(form("a red circle", num_inference_steps=500), stop=token)
    finally:
        session.max_work = MAX_WORK
    assert result.stopped and result.date is None and time.perf_counter() - t0 < 10


def test_one_visitors_stop_never_reaches_another():
    tokens = StopTokens()
    mine, theirs = tokens.start("visitor-a"), tokens.start("visitor-b")
    tokens.stop("visitor-a")
    assert mine.is_set() and not theirs.is_set()
    again = tokens.start("visitor-a")  # a new request starts with a fresh token
    assert not again.is_set() and mine.is_set()
    tokens.stop("nobody")  # a Stop from a visitor with no run changes nothing
    assert not theirs.is_set()


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    """A small benchmark run (3 prompts, 1 seed, fixed and DATE) on the toy world."""
    from date_diffusion.cli.main import main

    out = tmp_path_factory.mktemp("bench")
    argv = ["bench", "--suite", "toy", "--limit", "3", "--seeds", "1", "--steps", "6", "--methods", "fixed date:rho=2"]
    assert main([*argv, "--out", str(out)]) == 0
    return out


def test_run_tab_gallery_captions_start_with_the_verdict(bench_run, tmp_path):
    from date_diffusion.ui.runview import categories, gallery, load_run

    run = load_run(bench_run, tmp_path)
    assert categories(run) == ["color_binding", "single", "two_object"]  # --limit 3: one of each, in suite order
    items = gallery(run)
    records = [(m.label, r) for m in run["methods"] for r in run["records"][m.label]]
    assert len(items) == len(records) == 6 and all(os.path.exists(p) for p, _ in items)
    for (_, text), (label, r) in zip(items, records):  # the verdict first: a gallery cuts a caption at its end
        verdict, method, seed, prompt = text.split(" | ")
        assert verdict.split(" ")[0] == {1.0: "PASS", 0.0: "FAIL"}[r["exact"]]
        assert (method, seed, prompt) == (label, f"seed {r['seed']}", r["prompt"])
    assert gallery(run, category="position") == []
    with pytest.raises(ValueError, match="not a bench run"):
        load_run(bench_run / "images", tmp_path)


def test_run_tab_differs_filter_gives_fixed_then_method_pairs(bench_run, tmp_path):
    from date_diffusion.ui.runview import gallery, load_run

    run = load_run(bench_run, tmp_path)
    fixed = {(r["index"], r["seed"]): r for r in run["records"]["fixed"]}
    flipped = run["records"]["date:rho=2"][1]  # one verdict made to differ, so there is a pair to show
    flipped["exact"] = 1.0 - fixed[(flipped["index"], flipped["seed"])]["exact"]
    differs = [r for r in run["records"]["date:rho=2"] if r["exact"] != fixed[(r["index"], r["seed"])]["exact"]]
    items = gallery(run, changed_only=True)
    assert len(items) == 2 * len(differs) >= 2
    for (fixed_png, fixed_text), (png, text), r in zip(items[::2], items[1::2], differs):
        assert fixed_text.split(" | ")[1] == "fixed" and text.split(" | ")[1] == "date:rho=2"
        assert text.split(" | ")[0].endswith("(changed)") and "(changed)" not in fixed_text
        assert fixed_text.split(" | ")[2:] == text.split(" | ")[2:] == [f"seed {r['seed']}", r["prompt"]]
        images = tmp_path / "images"  # images/<method>/<prompt index>/samples/<seed>.png: same prompt and seed
        assert os.path.relpath(fixed_png, images).split(os.sep)[1:] == os.path.relpath(png, images).split(os.sep)[1:]


def test_run_tab_shows_plots_whole_and_images_uncropped(session, bench_run, tmp_path):
    from date_diffusion.ui.app import build_app
    from date_diffusion.ui.runview import load_run

    files = load_run(bench_run, tmp_path)["plots"]  # the bench writes its plots (wide figures) beside results.md
    assert files
    blocks = list(build_app(session, bench_run).blocks.values())
    plots = [b for b in blocks if "run-plot" in (b.elem_classes or [])]
    # an Image component of free size scales the whole picture into its box; a gallery's thumbnails crop by default;
    # no label or buttons drawn over the plot's top (its name is a heading above it)
    assert [(type(b), b.label, b.height, b.width, b.show_label, b.buttons) for b in plots] == [
        (gr.Image, os.path.basename(f)[: -len(".png")], None, None, False, []) for f in files
    ]
    headings = [b.value for b in blocks if isinstance(b, gr.Markdown)]
    assert all(f"**{os.path.basename(f)[: -len('.png')]}**" in headings for f in files)
    galleries = [b.get_config() for b in blocks if isinstance(b, gr.Gallery)]  # thumbnails whole, not cropped
    assert {g["elem_id"]: g["object_fit"] for g in galleries} == {"strip": "contain", "run-gallery": "contain"}


def test_the_run_tab_shows_the_images_it_verified_whatever_replaces_them_later(bench_run, tmp_path):
    """A PNG replaced in the run folder once the page has read the run (other pixels, its record left) is not shown
    under the verified caption: the tab shows its own copies, each checked again once copied; a PNG changed between
    the check and the copy is refused by name."""
    import shutil

    from PIL import Image

    from date_diffusion.bench.runner import UntrustedRun, image_paths, png_facts, read_trusted, verified_copy
    from date_diffusion.ui.runview import gallery, load_run

    run_dir = tmp_path / "run"
    shutil.copytree(bench_run, run_dir)
    run = load_run(run_dir, tmp_path / "shown")
    method = run["methods"][1]
    record = run["records"][method.label][0]
    png = image_paths(run_dir, method, record["index"], record["seed"])[0]
    Image.new("RGB", Image.open(png).size, "red").save(png)  # replaced while the page serves
    for path, _ in gallery(run):
        assert not os.path.samefile(path, png) and str(run_dir) not in path
    shown = run["images"][method.label, record["index"], record["seed"]]
    assert png_facts(Path(shown).read_bytes()).pixels == record["pixels"] != png_facts(png.read_bytes()).pixels
    assert all(str(tmp_path / "shown") in p for p in run["plots"])
    with pytest.raises(UntrustedRun, match=f"{png}.*changed after it was made: the run folder changed while"):
        verified_copy(run_dir, method, record, tmp_path / "again")  # changed after `read_trusted` verified it
    assert not (tmp_path / "again").exists()  # nothing copied of it
    with pytest.raises(ValueError, match="PNG was changed"):
        read_trusted(run_dir)


def test_the_run_tab_serves_its_copies_as_they_are_never_from_the_cache_the_page_expires(session, bench_run):
    """Gradio copies a component's files into its cache, which the page expires with the requests that made them
    (`Session._expire`): the run tab's gallery and plots are served from the page's own copies (static paths), so
    they stay shown however many requests come."""
    from date_diffusion.ui.app import build_app

    blocks = list(build_app(session, bench_run).blocks.values())
    gallery = next(b for b in blocks if isinstance(b, gr.Gallery) and b.elem_id == "run-gallery")
    plots = [b for b in blocks if "run-plot" in (b.elem_classes or [])]
    served = [item["image"]["path"] for item in gallery.get_config()["value"]]
    served += [b.get_config()["value"]["path"] for b in plots]
    assert served and plots and all(Path(p).resolve().is_relative_to(session.run_view.resolve()) for p in served)


def test_the_run_tab_is_not_read_while_a_bench_process_makes_the_run(bench_run, tmp_path):
    from date_diffusion.bench.runner import run_lock
    from date_diffusion.ui.runview import load_run

    with (
        run_lock(bench_run),
        pytest.raises(ValueError, match="another process holds the run .* .a bench making its images"),
    ):
        load_run(bench_run, tmp_path)
    assert load_run(bench_run, tmp_path)["images"]  # once it ends


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
        [
            sys.executable,
            "-m",
            "date_diffusion",
            "ui",
            "--port",
            str(port),
            "--allow-path",
            str(TOY_ASSETS),
            "--max-work",
            "100000",
        ],  # the Stop check below runs 500 steps with DATE (over the default bound)
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


SCREENSHOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs", "images", "ui.png")


def test_browser_generate_round_trip_error_box_and_stop(server):
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
        _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#reward-plot img, #reward-plot svg"), 30)
        _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#strip img"), 30)
        round_trip = time.perf_counter() - t0
        print(f"generate round trip in the browser: {round_trip:.1f} s")
        text = driver.find_element(By.ID, "summary").text
        assert "PASS" in text or "FAIL" in text
        assert _error_box(driver).text == ""
        _screenshot(driver, SCREENSHOT)  # the README's picture: the Generate tab after a run

        # a bad value: the box under the settings names the field and the value, and stays; the panes keep the run
        _set(driver, "date-rho", "abc")
        driver.find_element(By.ID, "generate").click()
        _wait(driver, lambda d: "'abc'" in _error_box(d).text, 30)
        shown = _error_box(driver).text
        assert "check the field rho" in shown and "rho must be a finite number >= 0 and <= 100, got 'abc'" in shown
        assert _error_box(driver).location["y"] < driver.find_element(By.ID, "generate").location["y"]
        time.sleep(15)  # a pop-up would be gone by now
        assert _error_box(driver).is_displayed() and _error_box(driver).text == shown
        for pane in ("fixed-image", "date-image", "summary", "reward-plot", "strip"):
            assert "Error" not in driver.find_element(By.ID, pane).text
        assert len(driver.find_elements(By.CSS_SELECTOR, "#fixed-image img, #date-image img")) >= 2
        assert proc.poll() is None

        # a reward path outside the server's --allow-path folders: refused, whether or not it exists
        _set(driver, "date-rho", "")
        _set(driver, "reward", "clip:/etc")
        driver.find_element(By.ID, "generate").click()
        _wait(driver, lambda d: "clip:/etc" in _error_box(d).text, 30)
        assert "check the field reward" in _error_box(driver).text and "registered names" in _error_box(driver).text

        # the next good run clears the box; a reward from a folder the server allows loads
        _set(driver, "reward", f"clip:{TOY_CLIPS['toy-clip']}")
        driver.find_element(By.ID, "generate").click()
        _wait(driver, lambda d: _error_box(d).text == "", 60)
        assert "Exact evaluator, DATE" in driver.find_element(By.ID, "summary").text
        assert f"reward clip:{TOY_CLIPS['toy-clip']} (user)" in driver.find_element(By.ID, "summary").text

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


def _error_box(driver):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, "form-error")


def _screenshot(driver, path, size=(1400, 2000)):
    """The page from its top in a window of a fixed size, down to the Generate button, written to `path` (where its
    folder exists)."""
    from selenium.webdriver.common.by import By

    if not os.path.isdir(os.path.dirname(path)):
        return
    driver.set_window_size(*size)
    driver.execute_script("window.scrollTo(0, 0)")
    time.sleep(1)  # the layout settles at the new size
    button = driver.find_element(By.ID, "generate").rect
    assert button["y"] + button["height"] <= driver.execute_script("return window.innerHeight"), "the form is cut"
    driver.save_screenshot(path)


def test_a_run_ended_by_the_pages_own_end_is_not_logged_as_failed(session, monkeypatch, caplog):
    """Round twenty-two: SIGTERM during a request logged "the run failed" (its files' folder removed under it):
    once the page is ending, what a run meets is the page's end, said in its box, never logged as a failure; before,
    a failing run is logged."""
    from date_diffusion.ui.app import build_app
    from date_diffusion.ui.session import StopTokens

    monkeypatch.setattr(session, "stops", StopTokens())

    def compare(*args, **kwargs):
        raise FileNotFoundError("the request's folder is gone")

    monkeypatch.setattr(session, "compare", compare)
    generate = next(f.fn for f in build_app(session).fns.values() if f.name == "generate")
    values = ["a red circle", "", "0", False, False, *[""] * len(FIELDS)]
    *_, box = generate(None, *values, progress=None)
    assert "folder is gone" in html.unescape(box) and "the run failed" in caplog.text
    caplog.clear()
    session.stops.stop_all()
    *panes, box = generate(None, *values, progress=None)
    assert "<p>Stopped</p>" in box and "the page is ending" in box and "the run failed" not in caplog.text
    assert "The run failed" not in box and panes == [gr.skip()] * 7
    assert session.stops.start("a visitor queued before the end").is_set()  # never starts sampling
    session.stops.queue("later")
    assert session.stops.start("later").is_set()
    monkeypatch.setattr(session, "compare", lambda *a, **k: object())  # a run that returns once stopped
    *panes, box = generate(None, *values, progress=None)  # its files go with the page's folder: none handed on
    assert "<p>Stopped</p>" in box and panes == [gr.skip()] * 7


def test_page_handler_shows_errors_in_the_error_box_until_a_good_run(session):
    from date_diffusion.outputs import read_png_metadata
    from date_diffusion.ui.app import build_app

    demo = build_app(session)
    generate = next(f.fn for f in demo.fns.values() if f.name == "generate")

    def values(**settings):
        texts = {"num_inference_steps": "10", "update_every": "5", **settings}
        return ["a red circle", "", "0", False, False, *(texts.get(name, "") for name in FIELDS)]

    # a bad value: no pop-up, the output panes keep what they show, the box names the field and the value typed
    *panes, box = generate(None, *values(rho="abc"), progress=None)
    assert panes == [gr.skip()] * 7 and 'class="form-error"' in box
    shown = html.unescape(box)
    assert "check the field <b>rho</b>" in shown and "rho must be a finite number >= 0 and <= 100, got 'abc'" in shown
    *panes, box = generate(None, *values(rho="1", rho_relative="0.1"), progress=None)
    assert "check the field <b>rho</b>" in box and "give only one of rho and rho (relative)" in html.unescape(box)
    *panes, box = generate(None, *values(reward="clip:/no/such/clip"), progress=None)  # a path no folder allows
    assert panes == [gr.skip()] * 7 and "check the field <b>reward</b>" in box and "registered names" in box

    fixed, dated, diff, text, figure, strip, files, box = generate(None, *values(), progress=None)
    assert box == ""  # a good run clears the box
    assert fixed is not None and dated is not None and "Exact evaluator" in text
    assert diff.size == fixed.size  # the amplified difference, enlarged as the images are
    left, right = figure.axes  # x0_hat's reward over the run, and what each update changed on its own scale
    updates = read_png_metadata(next(f for f in files if f.endswith("date.png")))["record"]["trace"]["updates"]
    heights = [bar.get_height() for bar in right.patches]
    assert heights == pytest.approx([u["reward_after"] - u["reward_before"] for u in updates])
    assert [c for _, c in strip[:2]] == ["step 0: before", "step 0: after"]  # short: a caption is cut at its end
    record = read_png_metadata(next(f for f in files if f.endswith("date.png")))["record"]
    assert record["date"]["update_every"] == 5 and record["sources"]["update_every"] == "user"
    assert record["steps"] == 10 and record["sources"]["reward"] == "model" and record["method"] == "date"


def test_a_stop_given_while_queued_reaches_the_run():
    from date_diffusion.ui.session import StopTokens

    stops = StopTokens()
    stops.queue("visitor")  # the click: the request waits in the queue
    stops.stop("visitor")  # Stop pressed while it waits
    assert stops.start("visitor").is_set()  # the run ends before its first step
    stops.queue("visitor")
    assert not stops.start("visitor").is_set()  # the next request starts afresh
    stops.queue("other")
    stops.stop("visitor")
    assert not stops.start("other").is_set()  # one visitor's Stop never reaches another's run


def test_the_page_bounds_what_a_request_costs_and_keeps(session, monkeypatch):
    """A huge prompt is cut to what encoders read before any work (with a note); the page keeps the files of its
    last KEEP_RUNS requests only."""
    from date_diffusion.core.text import MAX_PROMPT_CHARS
    from date_diffusion.ui import session as session_module

    huge = "a red circle " * 400_000  # 5.2 MB
    sampling, _ = check_form(form(huge), str(TOY_PIPELINE))
    assert len(sampling.prompt) == MAX_PROMPT_CHARS and "5,199,999 characters" in sampling.notes[0]  # stripped
    monkeypatch.setattr(session_module, "KEEP_RUNS", 2)
    session.run_view.mkdir(exist_ok=True)  # the run tab's copies: shown while the page serves, never expired
    cached = []  # Gradio's copies of each request's files (made after the request, in the page's folder)
    for seed in range(3):
        result = session.compare(form("a red circle", seed=seed, num_inference_steps=2))
        entry = session.gradio_cache / f"entry{seed}"
        entry.mkdir(parents=True)
        (entry / "fixed.png").write_bytes(b"png")
        cached.append(entry)
    kept = [p for p in session.workdir.iterdir() if p.is_dir() and p not in (session.gradio_cache, session.run_view)]
    assert len(kept) == 2 and all(Path(f).exists() for f in result.files)
    session.compare(form("a red circle", seed=3, num_inference_steps=2))
    assert [e.exists() for e in cached] == [False, False, True]  # Gradio's copies of the requests the page dropped
    assert session.run_view.is_dir()


def test_a_date_image_date_did_not_move_is_never_called_date_on_the_page(session):
    """rho 1e-46 is zero in the embedding's precision: the page's text names the DATE image as the grid does
    (`DATE (inactive)`), with a note, as its file's record (`fixed`) does."""
    result = session.compare(form("a red circle", num_inference_steps=2, rho="1e-46"))
    text = summary(result)
    assert "Note: DATE did not move the embedding" in text and "DATE (inactive) **" in text
    assert "DATE **" not in text and "Exact evaluator, DATE:" not in text
    date_png = next(f for f in result.files if f.endswith("date.png"))
    from date_diffusion.outputs import read_png_metadata

    assert read_png_metadata(date_png)["record"]["method"] == "fixed"


def test_a_negative_prompt_no_branch_reads_is_said_and_recorded_as_on_the_command_line(session, tmp_path):
    """Round nine: at guidance 1 the page took a negative prompt without a word and recorded it as applied; it
    says so, and its records hold `without_effect` as `generate`'s do."""
    import dataclasses

    from date_diffusion.cli.main import main
    from date_diffusion.outputs import read_png_metadata

    page = dataclasses.replace(form("a red circle", num_inference_steps=2, guidance_scale=1), negative_prompt="blurry")
    result = session.compare(page)
    assert "Note: the negative prompt has no effect here: no negative branch runs" in summary(result)
    record = read_png_metadata(next(f for f in result.files if f.endswith("date.png")))["record"]
    assert main(["generate", "a red circle", "--steps", "2", "--guidance", "1", "--negative-prompt", "blurry",
                 "--out", str(tmp_path / "o")]) == 0  # fmt: skip
    cli = json.loads((tmp_path / "o" / "a-red-circle-s0.json").read_text())
    assert record["without_effect"] == cli["without_effect"] and "negative_prompt" in cli["without_effect"]
    assert record["negative_prompt"] is None is cli["negative_prompt"]


def test_a_date_setting_that_changes_no_image_is_said_and_recorded_as_on_the_command_line(session, tmp_path):
    """Round eighteen: a DATE setting that changes no image of the run (an anchor with one update) is named on the
    page and in its DATE record's `without_effect`, as `generate` names it (`methods.settings_without_effect`)."""
    from date_diffusion.cli.main import main
    from date_diffusion.outputs import read_png_metadata

    result = session.compare(form("a red circle", num_inference_steps=5, anchor="original"))
    assert "changes no image here: DATE's images are the same with its default 'previous'" in summary(result)
    record = read_png_metadata(next(f for f in result.files if f.endswith("date.png")))["record"]
    assert "without_effect" not in read_png_metadata(result.files[0])["record"]  # the fixed image's
    argv = ["generate", "a red circle", "--steps", "5", "--anchor", "original", "--out", str(tmp_path / "o")]
    assert main(argv) == 0
    cli = json.loads((tmp_path / "o" / "a-red-circle-s0.json").read_text())
    assert record["without_effect"] == cli["without_effect"] and set(cli["without_effect"]) == {"anchor"}


def test_a_category_outside_the_list_is_refused_in_one_line(session, bench_run, capsys):
    """Round nine: a visitor's category outside the run's list made Gradio print a 25-line traceback on the
    server's terminal per request; the page refuses it itself, printing nothing."""
    import gradio as gr

    from date_diffusion.ui.app import build_app

    demo = build_app(session, bench_run)
    refresh = next(f.fn for f in demo.fns.values() if getattr(f.fn, "__name__", "") == "refresh")
    with pytest.raises(gr.Error, match=r"no category '\.\./x': choose one of all, color_binding") as err:
        refresh("../x", False)
    assert err.value.print_exception is False
    assert refresh("single", False) and not capsys.readouterr().err


def test_the_pages_embeddings_download_replays_its_date_image_on_the_command_line(session, tmp_path):
    """Round fourteen: the page's `embeddings.safetensors` lacked the prompt, seed and size, so `generate
    --replay-embeddings` refused it although docs/ui.md offers it for that. One writer now makes both files
    (`pipelines.embeddings.save_replayable`): the replay of the page's file is the page's DATE image, pixel for
    pixel."""
    import dataclasses

    from date_diffusion.cli.main import main

    page = dataclasses.replace(form("a red circle", seed=7, num_inference_steps=4, update_every=2),
                               negative_prompt="blurry")  # fmt: skip
    result = session.compare(page)
    embeddings = next(f for f in result.files if f.endswith("embeddings.safetensors"))
    assert main(["generate", "--replay-embeddings", embeddings, "--out", str(tmp_path / "r")]) == 0
    replayed = np.asarray(Image.open(tmp_path / "r" / "a-red-circle-s7.png").convert("RGB"))
    assert np.array_equal(replayed, np.asarray(result.date.convert("RGB")))
    record = json.loads((tmp_path / "r" / "a-red-circle-s7.json").read_text())
    assert (record["seed"], record["steps"], record["negative_prompt"]) == (7, 4, "blurry")


@pytest.mark.parametrize("negative", ["   ", "\u200b"])
def test_the_pages_negative_prompt_of_blanks_is_refused_as_on_the_command_line(negative):
    """Round fifteen: the page dropped a negative prompt of blanks or a zero-width space without a word (recorded as
    null) where the command line refuses it; an empty field stays not given."""
    with pytest.raises(InputError, match="the negative prompt shows nothing") as err:
        check_form(Form("a red circle", negative_prompt=negative, seed="0", settings={}), str(TOY_PIPELINE))
    assert err.value.field == "negative_prompt" and "clear the field" in str(err.value) and "''" not in str(err.value)
    from date_diffusion.ui.app import error_box

    assert "Not run: check the field <b>negative prompt</b>" in error_box(err.value)
    sampling, _ = check_form(Form("a red circle", negative_prompt="", seed="0", settings={}), str(TOY_PIPELINE))
    assert sampling.negative_prompt is None


@pytest.mark.parametrize(("field", "typed"), [("negative_prompt", "''"), ("negative_prompt", ' "" '), ("prompt", "''")])
def test_the_page_refuses_quote_marks_alone_which_no_shell_reads_there(field, typed):
    """Round twenty: the page's fix for a blank negative prompt said "give '' for an empty one", a shell's spelling:
    typed on the page, the two apostrophes became the negative prompt. The page says how it gives none (clear the
    field), and a field of quote marks alone is refused, never read as text."""
    values = {"prompt": "a red circle", "negative_prompt": "", field: typed}
    with pytest.raises(InputError, match="holds only quote marks") as err:
        check_form(Form(values["prompt"], negative_prompt=values["negative_prompt"], seed="0", settings={}),
                   str(TOY_PIPELINE))  # fmt: skip
    assert err.value.field == field


@pytest.mark.parametrize("seed", ["", "   "])
def test_a_blank_seed_field_runs_the_default_seed_and_a_bad_one_is_quoted_as_typed(seed):
    """Round fifteen: a blank seed got a range message (quoting three spaces as ''); blank fields run their
    defaults."""
    from date_diffusion.core.settings import DEFAULT_SEED

    sampling, _ = check_form(Form("a red circle", seed=seed, settings={}), str(TOY_PIPELINE))
    assert sampling.seed == DEFAULT_SEED
    with pytest.raises(InputError, match="got ' x '"):
        check_form(Form("a red circle", seed=" x ", settings={}), str(TOY_PIPELINE))


@pytest.mark.parametrize("typed", ["toy-clip\u00a0", "\u3000toy-clip"])
def test_the_pages_reward_field_refuses_a_pasted_blank_as_the_command_line_does(typed):
    """Round twenty-two: the page took `toy-clip` with a pasted no-break or ideographic space (stripped), which the
    command line refuses: one rule for every text setting (`core.settings.Text`, through the resolver)."""
    with pytest.raises(InputError, match="a pasted character") as err:
        check_form(form(reward=typed), str(TOY_PIPELINE))
    assert err.value.field == "reward"
