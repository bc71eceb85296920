import json

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
    assert summary["date"]["time_ratio"] > 0 and summary["date"]["memory_ratio"] > 0
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
    assert len(two) == 3 and all(abs(r["per_image_s"] * 2 - r["total_s"]) < 1e-9 for r in two)
    assert data["summary"]["date-lowres, batch 2"]["time_ratio"] > 0
    assert main(["bench-perf", "--batch-size", "0"]) == 2
