"""Comparison grids that explain themselves: panels under headers, enlarged small images, the amplified difference
exactly where two images differ little, the panels' records in the PNG and in `info`."""

import numpy as np
import pytest
from PIL import Image

from date_diffusion import grids
from date_diffusion.cli.main import main
from date_diffusion.outputs import read_png_metadata, save_png

TRACE = {
    "update_steps": [0, 10],
    "skipped_steps": [],
    "final_distance": 0.6071,
    "updates": [
        {"step": 0, "reward_before": -0.1783, "reward_after": -0.0419, "update_norm": 0.277, "skipped": False},
        {"step": 10, "reward_before": 0.8376, "reward_after": 0.9270, "update_norm": 0.277, "skipped": False},
    ],
}
FAIL = {"pass": False, "aspects": {"objects": True, "colors": True, "count": False, "position": False}}
PASS = {"pass": True, "aspects": {"objects": True, "colors": True, "count": True, "position": True}}


def toy_pair(shift: int, side: int = 64):
    """A toy-world-sized image and a copy with `shift` levels added to its top-left quarter (clipped at 255)."""
    rng = np.random.default_rng(0)
    a = rng.integers(0, 200, (side, side, 3)).astype(np.uint8)
    b = a.astype(int)
    b[: side // 2, : side // 2] += shift
    return Image.fromarray(a), Image.fromarray(np.clip(b, 0, 255).astype(np.uint8))


def fixed_and_date(a, b, rewards=(None, None)):
    return [grids.panel(a, "fixed", FAIL, reward=rewards[0]), grids.panel(b, "DATE", PASS, TRACE, rewards[1])]


def test_header_text_states_method_verdict_reward_and_distance():
    fixed, date = (p.record for p in fixed_and_date(*toy_pair(3)))
    assert grids.header_lines(fixed) == ["fixed", "evaluator: FAIL (count, position)"]
    # no reward line where the finished images were not scored; the x0_hat rise at DATE's updates (-0.1783 at the
    # first, 0.9270 after the last) is no header's: denoising makes it with or without DATE
    assert grids.header_lines(date) == ["DATE", "evaluator: PASS", "embedding moved 0.607"]
    # no evaluator (a real model): no verdict line; a replay: no trace lines
    assert grids.header_lines(grids.panel(toy_pair(3)[0], "fixed").record) == ["fixed"]
    assert grids.header_lines(grids.panel(toy_pair(3)[0], "DATE (replayed)", None, {"update_steps": []}).record) == [
        "DATE (replayed)"
    ]


def test_each_panel_states_its_finished_images_reward_and_date_its_difference_to_fixed():
    _, panels = grids.compare_grid(fixed_and_date(*toy_pair(3), rewards=(0.9244, 0.9249)), difference_of=(0, 1))
    fixed, date, diff = (grids.header_lines(p) for p in panels)
    assert fixed == ["fixed", "evaluator: FAIL (count, position)", "reward 0.9244"]
    assert date == ["DATE", "evaluator: PASS", "reward 0.9249 (+0.0005 vs fixed)", "embedding moved 0.607"]
    assert not any("reward" in line for line in diff)
    assert panels[1]["final_reward_vs"] == {"method": "fixed", "difference": pytest.approx(0.0005)}
    _, lower = grids.compare_grid(fixed_and_date(*toy_pair(3), rewards=(0.6, 0.55)), difference_of=(0, 1))
    assert grids.header_lines(lower[1])[2] == "reward 0.5500 (-0.0500 vs fixed)"
    _, one = grids.compare_grid(fixed_and_date(*toy_pair(3), rewards=(None, 0.55)), difference_of=(0, 1))
    assert "final_reward_vs" not in one[1] and grids.header_lines(one[1])[2] == "reward 0.5500"  # nothing to compare


def test_a_prompt_outside_the_toy_world_gets_its_reason_and_the_vocabulary_under_the_grid(tmp_path, capsys):
    from date_diffusion.toyworld.evaluator import evaluate_prompt
    from date_diffusion.toyworld.scene import describe_vocabulary

    a, b = toy_pair(3)
    verdict = evaluate_prompt(np.asarray(a), "a cat wearing a crown")
    assert verdict["pass"] is None and verdict["unknown_words"] == ["cat", "wearing", "crown"]
    shown = [grids.panel(a, "fixed", verdict), grids.panel(b, "DATE", verdict, TRACE)]
    with_note, panels = grids.compare_grid(shown, difference_of=(0, 1))
    header = "evaluator: no verdict (unknown words: cat, wearing, crown)"
    assert [grids.header_lines(p)[1] for p in panels[:2]] == [header, header]
    note = grids.grid_note(panels)
    assert note == f"the toy world knows only {describe_vocabulary()}"
    assert "circle" in note and "purple" in note and "three" in note and "to the left of" in note
    # the note is drawn under the panels: the grid is taller than the panels' boxes, with ink below them
    bottom = panels[0]["box"][3]
    assert with_note.height > bottom and (np.asarray(with_note)[bottom:].min(axis=-1) < 100).sum() > 200
    without, plain = grids.compare_grid(fixed_and_date(a, b), difference_of=(0, 1))
    assert grids.grid_note(plain) is None and without.height == plain[0]["box"][3]
    # `info` prints the reason in each panel and the note under them
    save_png(tmp_path / "grid.png", with_note, grids.grid_record({"prompt": "a cat wearing a crown"}, panels))
    assert main(["info", str(tmp_path / "grid.png")]) == 0
    out = capsys.readouterr().out
    assert f"  panel 1: fixed\n    {header}\n" in out and f"  under the panels: {note}\n" in out


def test_grid_has_its_panels_enlarged_under_headers_that_are_not_blank():
    a, b = toy_pair(3)  # differs little: fixed | DATE | difference
    grid, panels = grids.compare_grid(fixed_and_date(a, b), difference_of=(0, 1))
    assert [p["method"] for p in panels] == ["fixed", "DATE", "|DATE - fixed| x 16"]
    scale = panels[0]["scale"]
    assert scale == 4  # 64 px enlarged to 256, without smoothing
    boxes = [p["box"] for p in panels]
    assert all((x1 - x0, y1 - y0) == (256, 256) for x0, y0, x1, y1 in boxes)
    gap = boxes[1][0] - boxes[0][2]
    assert gap > 0 and boxes[2][0] - boxes[1][2] == gap
    top = boxes[0][1]
    assert grid.size == (3 * 256 + 2 * gap, top + 256) and top >= 4 * 14  # room for four lines of text
    pixels = np.asarray(grid).astype(int)
    assert np.array_equal(pixels[top:, :256], np.asarray(a).repeat(scale, 0).repeat(scale, 1))  # nearest neighbour
    for x0, y0, x1, _ in boxes:
        band = pixels[:y0, x0:x1]
        assert (band.min(axis=-1) < 100).sum() > 200, "a header band is blank"  # dark text on white
    assert (pixels[:top, boxes[0][2] : boxes[1][0]] == 255).all()  # the gaps stay white
    # the DATE header has more lines (verdict, reward, moved) than the fixed one: more ink
    ink = [(pixels[:top, x0:x1].min(axis=-1) < 100).sum() for x0, _, x1, _ in boxes]
    assert ink[1] > ink[0]


def test_difference_panel_is_the_stated_amplification():
    a, b = toy_pair(5)
    grid, panels = grids.compare_grid(fixed_and_date(a, b), difference_of=(0, 1))
    diff = panels[2]
    assert diff["gain"] == grids.DIFF_GAIN == 16 and diff["method"] == "|DATE - fixed| x 16"
    x0, y0, x1, y1 = diff["box"]
    shown = np.asarray(grid)[y0 : y1 : diff["scale"], x0 : x1 : diff["scale"]].astype(int)
    expected = np.clip(np.abs(np.asarray(b).astype(int) - np.asarray(a).astype(int)) * 16, 0, 255)
    assert np.array_equal(shown, expected)
    assert shown[:32, :32].max() == 80 and shown[32:].max() == 0  # 5 levels x 16
    changed = (np.asarray(a) != np.asarray(b)).any(axis=-1)
    assert (diff["pixels_changed"], diff["pixels"]) == (int(changed.sum()), 4096)
    assert diff["mean_abs_diff"] == pytest.approx(np.abs(np.asarray(b).astype(int) - np.asarray(a)).mean())
    share = changed.mean()  # the share and the count (one pixel of 4096 is never `0.0%`)
    assert f"{share:.2%} ({int(changed.sum()):,} of 4,096) pixels changed" in grids.header_lines(diff)[1]


@pytest.mark.parametrize("shift, shown", [(0, True), (15, True), (17, False), (60, False)])
def test_difference_panel_appears_exactly_when_the_images_differ_little(shift, shown):
    a, b = toy_pair(shift)  # a quarter of the image shifted: mean difference shift / 4 levels
    mean = np.abs(np.asarray(b).astype(int) - np.asarray(a)).mean()
    assert (mean < grids.DIFF_THRESHOLD) == shown
    grid, panels = grids.compare_grid(fixed_and_date(a, b), difference_of=(0, 1))
    assert len(panels) == (3 if shown else 2) and grid.width == panels[-1]["box"][2]
    if shift == 0:
        assert grids.header_lines(panels[2])[1] == "identical: no pixel changed"
        assert not np.asarray(grid)[panels[2]["box"][1] :, panels[2]["box"][0] :].any()


def test_large_images_are_not_enlarged_and_sizes_must_agree():
    a, b = toy_pair(60, side=512)
    grid, panels = grids.compare_grid(fixed_and_date(a, b), difference_of=(0, 1))
    assert panels[0]["scale"] == 1 and grid.height == panels[0]["box"][1] + 512
    with pytest.raises(ValueError, match="differ in size"):
        grids.compare_grid([grids.panel(a, "fixed"), grids.panel(toy_pair(0)[0], "DATE")])


def test_edit_grid_is_readable_with_three_labelled_panels():
    from date_diffusion.cli.edit import edit_grid

    a, b = toy_pair(40)
    files = {"input": a, "reconstruction": a, "plain": a, "date": b}
    grid, panels = edit_grid(files, {"evaluator": {"plain": FAIL, "date": PASS}, "trace": TRACE})
    assert [p["method"] for p in panels] == ["input", "plain edit", "DATE edit"]  # they differ much: no difference
    assert grid.width > 3 * 256 and grid.height > 256  # not 200x64: enlarged, with headers
    assert grids.header_lines(panels[1])[1] == "evaluator: FAIL (count, position)"
    grid, panels = edit_grid({**files, "date": toy_pair(2)[1]}, {"trace": TRACE})
    assert panels[-1]["method"] == "|DATE edit - plain edit| x 16"


def test_info_on_a_grid_prints_one_block_per_panel(tmp_path, capsys):
    a, b = toy_pair(3)
    grid, panels = grids.compare_grid(fixed_and_date(a, b), difference_of=(0, 1))
    record = {"prompt": "a red circle", "method": "date", "trace": TRACE}
    save_png(tmp_path / "grid.png", grid, grids.grid_record(record, panels))
    assert read_png_metadata(tmp_path / "grid.png")["record"]["panels"] == panels
    assert main(["info", str(tmp_path / "grid.png")]) == 0
    out = capsys.readouterr().out
    assert "  panel 1: fixed\n    evaluator: FAIL (count, position)\n" in out
    assert "  panel 2: DATE\n    evaluator: PASS\n    embedding moved 0.607\n" in out
    assert "  panel 3: |DATE - fixed| x 16\n" in out and "update at step 10: x0_hat reward 0.8376 -> 0.9270" in out


def printed_paths(out: str, folder) -> set[str]:
    import re

    return set(re.findall("(" + re.escape(str(folder)) + r"\S+)", out))


def test_edit_prints_every_file_it_writes_and_its_grid_has_headers(pipe, clip_dir, tmp_path, capsys):
    pipe.save_pretrained(tmp_path / "model")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (16, 16, 3)).astype(np.uint8)).save(tmp_path / "in.png")
    argv = ["edit", str(tmp_path / "in.png"), "--source-prompt", "a red circle", "--target-prompt", "a blue square",
            "--model", str(tmp_path / "model"), "--reward", f"clip:{clip_dir}", "--steps", "6", "--skip", "2",
            "--update-every", "2", "--out", str(tmp_path / "out")]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert printed_paths(out, tmp_path / "out") == {str(p) for p in (tmp_path / "out").iterdir()}
    assert len(printed_paths(out, tmp_path / "out")) == 6  # input, reconstruction, plain, date, grid, record
    panels = read_png_metadata(tmp_path / "out" / "a-blue-square-s0-grid.png")["record"]["panels"]
    assert [p["method"] for p in panels][:3] == ["input", "plain edit", "DATE edit"]
    assert panels[2]["update_steps"] == [0, 2] and "final_distance" in panels[2]
    grid = Image.open(tmp_path / "out" / "a-blue-square-s0-grid.png")
    assert grid.size == (panels[-1]["box"][2], panels[0]["box"][3]) and panels[0]["box"][1] > 0
    assert panels[0]["box"][2] - panels[0]["box"][0] == 256  # 16 px enlarged 16x


def test_main_command_summary_agrees_with_the_grid_and_names_what_the_toy_world_knows(tmp_path, capsys):
    """The terminal states what the grid's headers state: each finished image's reward (DATE's with its difference
    to fixed) and both verdicts; a prompt outside the toy world gets the words it does not know and its vocabulary,
    in the terminal and under the grid."""
    from date_diffusion.toyworld.evaluator import evaluate_prompt
    from date_diffusion.toyworld.scene import describe_vocabulary

    prompt, outside = "a red circle to the left of a blue square", "a cat wearing a crown"
    assert main(["generate", prompt, outside, "--compare", "--steps", "10", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert printed_paths(out, tmp_path) == {str(p) for p in tmp_path.iterdir()}
    first, second = out.split(f"{outside!r} seed 0 -> ")
    stem = tmp_path / "a-red-circle-to-the-left-of-a-blue-square-s0"
    fixed, dated = (np.asarray(Image.open(f"{stem}{s}").convert("RGB")) for s in ("-fixed.png", ".png"))
    changed = (fixed != dated).any(axis=-1)
    record = read_png_metadata(f"{stem}-compare.png")["record"]
    panels, final = record["panels"], record["final_reward"]
    summary = first.rstrip("\n").splitlines()[-3:]
    headers = [grids.header_lines(p) for p in panels[:2]]
    assert headers[0][2] == f"reward {final['fixed']:.4f}" and headers[1][2].startswith(f"reward {final['date']:.4f} (")
    assert summary[0] == (f"    reward of the finished images ({record['reward']}): fixed {final['fixed']:.4f}, "
                          f"DATE {headers[1][2].removeprefix('reward ')}")  # fmt: skip
    assert summary[1].endswith(f"pixels changed {changed.mean():.2%} ({changed.sum():,} of {changed.size:,})")
    verdicts = [grids.verdict_text(grids.verdict_record(evaluate_prompt(img, prompt))) for img in (fixed, dated)]
    assert summary[2] == f"    evaluator (fixed): {verdicts[0]}; evaluator (date): {verdicts[1]}"
    assert [p.get("verdict") for p in panels[:2]] == [v.split(" ")[0] for v in verdicts]
    assert "x0_hat reward" not in "\n".join(summary)  # the estimate's rise is only in the per-update lines
    why = "no verdict (unknown words: cat, wearing, crown)"
    assert f"    evaluator (fixed): {why}; evaluator (date): {why}\n" in second
    assert second.rstrip("\n").splitlines()[-1] == f"    the toy world knows only {describe_vocabulary()}"
    grid = read_png_metadata(tmp_path / "a-cat-wearing-a-crown-s0-compare.png")["record"]["panels"]
    assert grids.grid_note(grid) == f"the toy world knows only {describe_vocabulary()}"
