import json

import pytest
from diffusers import StableDiffusionPipeline

from date_diffusion.cli.main import main


def test_bench_perf_runs_each_variant_in_its_own_process(tmp_path, tokenizer, clip_dir, capsys):
    from conftest import make_components

    StableDiffusionPipeline(**make_components(tokenizer)).save_pretrained(tmp_path / "model")
    assert (
        main(
            [
                "bench-perf",
                "--model",
                str(tmp_path / "model"),
                "--reward",
                f"clip:{clip_dir}",
                "--repeats",
                "1",
                "--steps",
                "4",
                "--update-every",
                "2",
                "--out",
                str(tmp_path / "perf"),
            ]
        )
        == 0
    )
    (result,) = (tmp_path / "perf").glob("perf-*.json")
    data = json.loads(result.read_text())
    summary = data["summary"]
    assert set(summary) == {"fixed", "date", "date-checkpointing"}
    assert {r["variant"] for r in data["runs"]} == set(summary)
    assert [r["update_steps"] for r in data["runs"] if r["variant"] == "date"] == [[0, 2]]
    one = {r["variant"]: r for r in data["runs"]}  # one run per variant (repeats 1): its median is that run's value
    assert summary["date"]["time_ratio"] == pytest.approx(one["date"]["total_s"] / one["fixed"]["total_s"], rel=1e-12)
    rss = one["date"]["peak_rss_mb"] / one["fixed"]["peak_rss_mb"]
    assert summary["date"]["memory_ratio"] == pytest.approx(rss, rel=1e-12)
    parts = set(summary["date"]["update_parts_s"])
    assert parts >= {"unet (grad)", "vae decode (grad)", "reward (grad)", "backward + other"}
    assert data["header"]["threads"] == 1 and "CPUs" in data["header"]["machine"]
    assert "| date |" in capsys.readouterr().out
    assert main(["bench-perf", "--variants", "fast"]) == 2
    argv = ["bench-perf", "--model", str(tmp_path / "model"), "--reward", f"clip:{clip_dir}", "--repeats", "1",
            "--steps", "2", "--update-every", "2", "--variants", "fixed,date-lowres,date-approx-checkpointing",
            "--batch-size", "1,2", "--out", str(tmp_path / "perf2")]  # fmt: skip
    assert main(argv) == 0
    data = json.loads(next((tmp_path / "perf2").glob("perf-*.json")).read_text())
    assert set(data["summary"]) == {f"{v}, batch {b}" for v in ("fixed", "date-lowres", "date-approx-checkpointing")
                                    for b in (1, 2)}  # fmt: skip
    two = [r for r in data["runs"] if r["batch"] == 2]
    assert len(two) == 3
    for r in data["runs"]:  # each (variant, batch) cell holds its own run, not another batch size's
        assert data["summary"][f"{r['variant']}, batch {r['batch']}"]["total_s"]["median"] == r["total_s"]
    total = {(r["variant"], r["batch"]): r["total_s"] for r in data["runs"]}
    expected = total["date-lowres", 2] / total["fixed", 2]  # against fixed at the same batch size
    assert data["summary"]["date-lowres, batch 2"]["time_ratio"] == pytest.approx(expected, rel=1e-12)
    assert main(["bench-perf", "--batch-size", "0"]) == 2


def test_bench_perf_keeps_every_finished_run_when_interrupted(tmp_path, monkeypatch):
    from date_diffusion.perf import bench_perf as bp

    done = []

    def fake_run(config):
        if len(done) == 2:
            raise KeyboardInterrupt
        done.append(config["variant"])
        return {"variant": config["variant"], "batch": 1, "total_s": 2.0 + len(done), "per_image_s": 1.0,
                "normal_step_s": 0.1, "update_step_s": None, "peak_rss_mb": 100.0 * len(done)}  # fmt: skip

    monkeypatch.setattr(bp, "run_one", fake_run)
    with pytest.raises(KeyboardInterrupt):
        bp.bench_perf("toy", tmp_path, repeats=1, variants=("fixed", "date", "date-checkpointing"))
    data = json.loads((tmp_path / "perf-toy.json").read_text())
    assert [r["variant"] for r in data["runs"]] == ["fixed", "date"]
    assert data["summary"]["date"]["memory_ratio"] == 2.0 and data["summary"]["date-checkpointing"] == {}
    assert "| date-checkpointing | - |" in (tmp_path / "perf-toy.md").read_text()
    # both files say the measurement stopped short (before, the table read as a whole measurement)
    assert data["header"]["runs_measured"] == "2 of 3"
    assert "INCOMPLETE: 2 of 3 runs measured" in (tmp_path / "perf-toy.md").read_text()


def test_generate_timings_say_where_the_time_went(tmp_path, tokenizer, clip_dir, capsys):
    from conftest import make_components

    from date_diffusion.perf.timings import PREFIX

    StableDiffusionPipeline(**make_components(tokenizer)).save_pretrained(tmp_path / "model")
    argv = ["generate", "a red circle", "--model", str(tmp_path / "model"), "--reward", f"clip:{clip_dir}",
            "--steps", "4", "--update-every", "2", "--compare", "--out", str(tmp_path / "out")]  # fmt: skip
    assert main(argv) == 0
    assert PREFIX not in capsys.readouterr().err  # only when asked
    assert main([*argv, "--timings", "json"]) == 0  # the JSON line (a bare --timings prints a table)
    (line,) = [x for x in capsys.readouterr().err.splitlines() if x.startswith(PREFIX)]
    record = json.loads(line[len(PREFIX) :])
    parts, marks = record["parts"], record["marks"]
    assert set(parts) == {"imports and checks", "loading", "sampling", "evaluating and writing"}
    assert all(v > 0 for v in parts.values())
    assert parts["imports and checks"] + parts["loading"] < marks["first sampling step done"] < marks["end"]
    assert sum(parts.values()) <= marks["end"]


def test_first_command_table_from_fresh_processes(tmp_path):
    from date_diffusion.perf.first_command import first_command

    result = first_command(repeats=1, threads=1, out=tmp_path)
    (run,) = result["runs"]
    assert run["to_first_step_s"] < run["wall_s"]
    table = (tmp_path / "first-command.md").read_text()
    assert "| **wall, launch to exit** |" in table and "| sampling |" in table
    assert json.loads((tmp_path / "first-command.json").read_text())["header"]["repeats"] == 1
    assert json.loads((tmp_path / "first-command.json").read_text())["runs"] == [run]  # what was measured is kept


def test_first_command_splits_the_wall_time_with_the_commands_own_record(tmp_path, monkeypatch):
    """Known answers for the split of the outside wall time (the real run above can only check its own sum)."""
    from types import SimpleNamespace

    from date_diffusion.perf import first_command as fc
    from date_diffusion.perf.timings import PREFIX

    record = {
        "parts": {"imports and checks": 1.0, "loading": 2.0, "sampling": 4.0, "evaluating and writing": 0.5},
        "marks": {"first sampling step done": 4.0, "end": 8.0},
    }
    launched = []

    def fake_run(argv, **kwargs):
        launched.append(argv)
        return SimpleNamespace(returncode=0, stderr="a warning\n" + PREFIX + json.dumps(record) + "\n")

    clock = iter([100.0, 110.0, 200.0, 212.0])  # (launch, exit) of two runs: 10 s and 12 s of wall time
    monkeypatch.setattr(fc, "subprocess", SimpleNamespace(run=fake_run))
    monkeypatch.setattr(fc, "time", SimpleNamespace(perf_counter=lambda: next(clock)))
    result = fc.first_command(repeats=2, threads=1, out=tmp_path)
    assert len(launched) == 2 and all("--timings" in argv for argv in launched)
    first = result["runs"][0]
    assert first["wall_s"] == 10.0
    assert first["before_the_command_s"] == 2.0  # 10 s wall - 8 s from the command's start to its end
    assert first["other_s"] == 0.5  # 8 s - the 7.5 s of named parts
    assert first["to_first_step_s"] == 6.0  # 2 s before the command + 4 s into it
    assert result["runs"][1]["before_the_command_s"] == 4.0
    assert result["summary"]["wall_s"] == {"median": 11.0, "min": 10.0, "max": 12.0}
    assert result["summary"]["sampling_s"] == {"median": 4.0, "min": 4.0, "max": 4.0}
    assert "| **wall, launch to exit** | 11.00 [10.00, 12.00] |" in (tmp_path / "first-command.md").read_text()
    monkeypatch.setattr(
        fc, "subprocess", SimpleNamespace(run=lambda argv, **kw: SimpleNamespace(returncode=3, stderr="boom"))
    )
    clock = iter([0.0, 1.0])
    with pytest.raises(RuntimeError, match="exit 3"):
        fc.first_command(repeats=1, threads=1)


def test_update_step_counted_in_normal_steps_of_its_own_run():
    from date_diffusion.perf.bench_perf import summarize, table

    def run(variant, total, normal, update=None):
        return {"variant": variant, "batch": 1, "steps": 10, "update_steps": [0] if update else [],
                "total_s": total, "per_image_s": total, "normal_step_s": normal, "update_step_s": update,
                "peak_rss_mb": 100.0}  # fmt: skip

    runs = [run("fixed", 20.0, 2.0), run("date", 14.0, 1.0, 5.0), run("date", 15.0, 1.0, 6.0)]
    summary = summarize(runs, ["fixed", "date"], "peak_rss_mb")
    assert summary["date"]["update_in_normal_steps"]["median"] == 5.5
    assert summary["date"]["step_time_ratio"] == (9 + 5.5) / 10  # the wall-clock ratio would say 0.725
    assert summary["date"]["time_ratio"] == 14.5 / 20.0
    header = dict(model="m", steps=10, update_every=10, n_updates=1, dtype="float32", device="cpu", threads=1,
                  repeats=2, machine="x")  # fmt: skip
    assert "| 0.725 | 1.450 | 1.000 |" in table(summary, header, "peak_rss_mb")


def test_a_failing_worker_is_one_line_and_its_traceback_only_with_debug(tmp_path, capsys):
    from date_diffusion.perf.bench_perf import WorkerFailed
    from date_diffusion.toyworld.world import PIPELINE

    (tmp_path / "not-a-model").mkdir()  # its index reads (the checks before measuring pass); its weights are missing
    (tmp_path / "not-a-model" / "model_index.json").write_text((PIPELINE / "model_index.json").read_text())
    argv = ["bench-perf", "--model", str(tmp_path / "not-a-model"), "--repeats", "1", "--steps", "2", "--variants",
            "fixed", "--out", str(tmp_path / "perf")]  # fmt: skip
    assert main(argv) == 1
    err = capsys.readouterr().err
    ours = [line for line in err.splitlines() if "date-diffusion bench-perf:" in line]
    assert len(ours) == 1 and "Traceback" not in err and 'File "' not in err, err
    # what failed, the worker's error and the fix
    assert "variant fixed, batch 1 failed (exit 1)" in ours[0] and "ComponentError" in ours[0]
    assert f"check --model {str(tmp_path / 'not-a-model')!r}" in ours[0]
    with pytest.raises(WorkerFailed):
        main(["--debug", *argv])
    err = capsys.readouterr().err
    assert "the failed process's output:" in err and "Traceback (most recent call last)" in err


def test_the_error_line_of_a_worker_traceback():
    from date_diffusion.perf.bench_perf import last_error

    stderr = (
        'a warning before\nTraceback (most recent call last):\n  File "w.py", line 1, in <module>\n    boom()\n'
        "OSError: first line of the message\nits second line\n"
    )
    assert last_error(stderr) == "OSError: first line of the message its second line"
    chained = (
        stderr
        + "\nDuring handling of the above exception, another exception occurred:\n\n"
        + ('Traceback (most recent call last):\n  File "w.py", line 3\n    raise\nRuntimeError: the last one\n')
    )
    assert last_error(chained) == "RuntimeError: the last one"
    assert last_error("") == "no error message" and len(last_error("E: " + "x" * 1000)) == 300
