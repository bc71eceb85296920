import json
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from date_diffusion.toyworld import scene
from date_diffusion.toyworld.training.config import TrainConfig
from date_diffusion.toyworld.training.data import images_to_tensor
from date_diffusion.toyworld.training.recipe import train_all
from date_diffusion.toyworld.training.runner import Stage
from date_diffusion.toyworld.training.vae import reconstruction_accuracy, reconstruction_loss


def test_smoke_training_produces_stock_loadable_models(tmp_path):
    from diffusers import StableDiffusionPipeline
    from transformers import CLIPModel, CLIPTokenizer

    from date_diffusion import StableDiffusionDATEPipeline

    timings = train_all(TrainConfig.smoke(tmp_path, seed=0))
    stages = {"clip", "clip_eval", "vae", "latents", "vae_decoder", "tiny_decoder", "unet"}
    assert set(timings) == stages | {"total_s"}  # every stage ran and was timed
    assert json.loads((tmp_path / "work" / "timings.json").read_text()) == timings
    stock = StableDiffusionPipeline.from_pretrained(tmp_path / "pipeline")
    assert stock.unet.config.cross_attention_dim == 128  # the base toy CLIP's width, as the shipped pipeline's
    # the pipeline's text encoder is the trained reward CLIP's text tower, weight for weight
    reward_text = CLIPModel.from_pretrained(tmp_path / "clip").text_model.state_dict()
    ours_text = {k.removeprefix("text_model."): v for k, v in stock.text_encoder.state_dict().items()}  # transformers 4
    assert list(ours_text) == list(reward_text) and all(torch.equal(ours_text[k], reward_text[k]) for k in reward_text)
    assert stock.vae.config.scaling_factor != 0.18215  # measured from the toy latents
    ours = StableDiffusionDATEPipeline.from_pretrained(tmp_path / "pipeline")
    ours.set_progress_bar_config(disable=True)
    img = ours("a red circle", num_inference_steps=2, output_type="np").images
    assert img.shape == (1, 64, 64, 3)
    from diffusers import AutoencoderTiny

    tiny = AutoencoderTiny.from_pretrained(tmp_path / "tiny-decoder")
    assert tiny.decode(torch.zeros(1, 4, 8, 8)).sample.shape == (1, 3, 64, 64)
    for name in ("clip", "clip-eval"):
        CLIPModel.from_pretrained(tmp_path / name)
        assert len(CLIPTokenizer.from_pretrained(tmp_path / name)("a red circle").input_ids) == 5
    assert all(p.suffix != ".bin" for p in tmp_path.rglob("*") if p.is_file())  # safetensors only, no pickle

    # a second run finds every training stage done and trains nothing: no trained file is written again, and the
    # pipeline it assembles again is the same bytes
    def files():
        return {str(p.relative_to(tmp_path)): (p.stat().st_mtime_ns, p.read_bytes()) for p in tmp_path.rglob("*")
                if p.is_file()}  # fmt: skip

    before = files()
    train_all(TrainConfig.smoke(tmp_path, seed=0))
    after = files()
    run_notes = ("work/timings.json", "work/config.json")  # what each invocation records about itself
    rewritten = sorted(p for p in after if before.get(p) != after[p] and p not in run_notes)
    assert rewritten and all(p.startswith("pipeline/") for p in rewritten), rewritten

    def content(path, data):  # configs: without the bookkeeping keys diffusers writes (`_name_or_path`, ...)
        if not path.endswith(".json"):
            return data
        return {k: v for k, v in json.loads(data).items() if not k.startswith("_")}

    assert [p for p in rewritten if content(p, before[p][1]) != content(p, after[p][1])] == []
    # round twelve: the VAE's scaling factor is derived from the latents, never read from the record beside the
    # UNet (an edited record gave the assembled pipeline its value; `finalize` recomputed it)
    record = tmp_path / "work" / "assemble" / "scaling_factor.json"
    trained = json.loads(record.read_text())
    record.write_text(json.dumps({**trained, "scaling_factor": 1e-3}))
    train_all(TrainConfig.smoke(tmp_path, seed=0))
    assembled = json.loads((tmp_path / "pipeline" / "vae" / "config.json").read_text())["scaling_factor"]
    assert assembled == trained["scaling_factor"] == stock.vae.config.scaling_factor
    assert json.loads(record.read_text()) == trained
    # round thirteen: a finished stage's files are sealed when it finishes; one edited since is named, never trained
    # on (the captions the UNet learns from) or assembled (the UNet's config)
    from date_diffusion.schemas import SchemaError

    for path, edit in ((tmp_path / "work" / "latents" / "captions.json", lambda t: t.replace("red", "green")),
                       (tmp_path / "work" / "unet" / "final" / "config.json",
                        lambda t: t.replace('"freq_shift": 0', '"freq_shift": 7'))):  # fmt: skip
        text = path.read_text()
        assert edit(text) != text
        path.write_text(edit(text))
        with pytest.raises(SchemaError, match="were changed since it finished"):
            train_all(TrainConfig.smoke(tmp_path, seed=0))
        path.write_text(text)
    train_all(TrainConfig.smoke(tmp_path, seed=0))  # as it was: resumes
    # a smoke run is never exported, and export needs a destination
    from date_diffusion.cli.main import main

    argv = ["toyworld", "export", "--from", str(tmp_path), "--guidance", "5", "--rho", "0.5", "--update-every", "10"]
    assert main([*argv, "--dest", str(tmp_path / "dest")]) == 2
    assert not (tmp_path / "dest").exists()
    with pytest.raises(SystemExit):
        main(argv)  # neither --dest nor --into-package
    # a run that claims to be complete still has to pass the quality gate (the smoke VAE cannot)
    config = json.loads((tmp_path / "work" / "config.json").read_text())
    (tmp_path / "work" / "config.json").write_text(json.dumps({**config, "unet_steps": 8000}))
    (tmp_path / "work" / "assemble").mkdir(exist_ok=True)
    from date_diffusion.toyworld.training.export import export

    with pytest.raises(ValueError, match="fails the quality gate"):
        export(tmp_path, tmp_path / "dest", {"guidance_scale": 5.0, "rho": 0.5, "update_every": 10})
    assert not (tmp_path / "dest").exists()


class Boom(RuntimeError):
    pass


def run_stage(tmp_path, fail_at=None, seed=0):
    cfg = TrainConfig(tmp_path, seed=seed, checkpoint_every=2)
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    stage = Stage(cfg, "toy", model, steps=6, lr=0.1, ema_decay=0.9)

    def loss_fn(step):
        if step == fail_at:
            raise Boom
        g = torch.Generator().manual_seed(step)
        x = torch.randn(8, 3, generator=g)
        return ((model(x) - x.sum(1, keepdim=True)) ** 2).mean()

    return stage, stage.run(loss_fn)


def test_resumed_stage_equals_uninterrupted(tmp_path):
    _, straight = run_stage(tmp_path / "a")
    with pytest.raises(Boom):
        run_stage(tmp_path / "b", fail_at=5)  # dies after the checkpoint at step 4
    meta = json.loads((tmp_path / "b" / "work" / "toy" / "checkpoint.json").read_text())
    assert meta["step"] == 4
    stage, resumed = run_stage(tmp_path / "b")
    assert stage.start == 4
    for p, q in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(p, q)


def _log(out):
    lines = (out / "work" / "toy" / "log.jsonl").read_text().splitlines()
    return [(e["step"], e["loss"]) for e in map(json.loads, lines)]


@pytest.mark.parametrize("cut", ["model", "optimizer", "ema", "moving"])
def test_resume_after_an_interruption_inside_the_last_checkpoint_equals_uninterrupted(tmp_path, monkeypatch, cut):
    """SIGTERM (a KeyboardInterrupt) can land while a checkpoint is being written, after the last step's log line:
    the resumed run must still start from one whole checkpoint, never the new weights beside the old step number
    (the VAE's step 2 once logged 1.99 and, resumed, 1.71), and its log must read as an uninterrupted run's."""
    from pathlib import Path

    from date_diffusion.toyworld.training import runner

    _, straight = run_stage(tmp_path / "a")
    writes = []
    save_file, replace = runner.save_tensors, Path.replace

    def cutting_save(tensors, path, *args, **kwargs):  # dies writing `cut` in the final checkpoint (step 6)
        writes.append(Path(path).name.removesuffix(".new"))
        if writes.count("model.safetensors") == 3 and writes[-1] == f"{cut}.safetensors":
            raise Boom
        return save_file(tensors, path, *args, **kwargs)

    def cutting_replace(self, target):  # dies with the new model moved into place and the optimizer not yet
        if cut == "moving" and writes.count("model.safetensors") == 3 and self.name == "optimizer.safetensors.new":
            raise Boom
        return replace(self, target)

    monkeypatch.setattr(runner, "save_tensors", cutting_save)
    monkeypatch.setattr(Path, "replace", cutting_replace)
    with pytest.raises(Boom):
        run_stage(tmp_path / "b")
    monkeypatch.undo()
    stage, resumed = run_stage(tmp_path / "b")
    assert stage.start == (6 if cut == "moving" else 4)  # a whole new set is completed, a partial one dropped
    for p, q in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(p, q)
    assert _log(tmp_path / "b") == _log(tmp_path / "a")  # each step once, with the uninterrupted run's loss


def test_clip_tokenizer_is_the_same_in_every_process():
    """The BPE trainer numbers tokens in hash-map order, new in each process: the toy CLIP's token ids (and so
    its trained weights, and every stage after it) once differed between fresh runs with one seed."""
    import subprocess
    import sys

    code = (
        "import json; from date_diffusion.toyworld import scene; from date_diffusion.toyworld.tokenizer import "
        "build_clip_tokenizer as b; t = b(scene.vocabulary(), 24); print(json.dumps([t.get_vocab(), "
        "json.loads(t.backend_tokenizer.to_str())['model']['merges']], sort_keys=True))"
    )
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
            for _ in range(3)]  # fmt: skip
    assert runs[0] == runs[1] == runs[2]
    vocab, _ = json.loads(runs[0])
    words = scene.vocabulary()
    assert vocab["<|startoftext|>"] == 0 and vocab["<|endoftext|>"] == 1 and all(w + "</w>" in vocab for w in words)


class _RoundTrip(torch.nn.Module):
    """Stands in for a VAE: `encode(x).latent_dist.mean` then `decode(z).sample`, perfect or blank."""

    def __init__(self, blank: bool):
        super().__init__()
        self.blank = blank
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def encode(self, x):
        return SimpleNamespace(latent_dist=SimpleNamespace(mean=x))

    def decode(self, z):
        return SimpleNamespace(sample=torch.full_like(z, z[0, 0, 0, 0].item()) if self.blank else z)


def test_reconstruction_accuracy_reads_the_round_trip_with_the_evaluator():
    perfect = reconstruction_accuracy(_RoundTrip(blank=False), per_category=6, batch=4)
    blank = reconstruction_accuracy(_RoundTrip(blank=True), per_category=6, batch=4)
    assert set(perfect) == {"single", "two_object", "counting", "position", "novel", "all"}
    assert perfect["all"] == 1.0 and blank["all"] == 0.0


def test_halo_weights_the_background_around_objects_as_much_as_the_objects():
    cross = scene.Scene([scene.PlacedObject("red", "cross", "small", 32, 32)])
    blob = scene.Scene([scene.PlacedObject("red", "square", "small", 32, 32)])  # the cross with its notches filled
    x, filled = (images_to_tensor(scene.render(s)[None], "cpu") for s in (cross, blob))
    stray = x.clone()
    stray[..., 2:6, 2:6] = filled[..., 32, 32, None, None]  # an error far from any object
    # Filling the notches costs over 3x more with the halo (their anti-aliased rims are already object pixels);
    # an error far from objects costs the same either way.
    assert reconstruction_loss(filled, x, halo=2) > 3 * reconstruction_loss(filled, x)
    assert torch.isclose(reconstruction_loss(stray, x, halo=2), reconstruction_loss(stray, x))
    assert reconstruction_loss(x, x, halo=2) == 0


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d.update(step="2"), "field 'step'"),
        (lambda d: d.update(step=2.0), "field 'step'"),
        (lambda d: d.update(step=-3), "step"),
        (lambda d: d.pop("sched"), "field 'sched' is missing"),
        (lambda d: d.update(step=999), "its step 999 lies past the stage's 6 steps"),
        (lambda d: d.update(step=2), "its step 2 is not its learning-rate schedule's (4)"),
        (lambda d: d.pop("ema_step"), "field 'ema_step' is missing"),
        (lambda d: d["opt"].update(param_groups="x"), "does not load into the stage's model and optimizer"),
    ],
)
def test_a_damaged_checkpoint_is_named_and_nothing_trains(tmp_path, edit, message):
    """A checkpoint.json edited or damaged is a `SchemaError` naming the file, never a resume from a step the
    weights are not of, nor a raw TypeError."""
    from date_diffusion.schemas import SchemaError

    with pytest.raises(Boom):
        run_stage(tmp_path, fail_at=5)  # a checkpoint at step 4
    ckpt = tmp_path / "work" / "toy" / "checkpoint.json"
    meta = json.loads(ckpt.read_text())
    edit(meta)
    ckpt.write_text(json.dumps(meta))
    with pytest.raises(SchemaError, match="checkpoint") as err:
        run_stage(tmp_path)
    assert message in str(err.value)


def test_a_folder_trained_with_other_settings_is_not_resumed_under_new_ones(tmp_path, capsys):
    """`toyworld train` over a folder trained with another seed or step counts is refused naming work/config.json
    and each setting that differs (before, the run finished at once and the file took the new settings)."""
    from date_diffusion.cli.main import main

    config = tmp_path / "work" / "config.json"
    config.parent.mkdir(parents=True)
    settings = json.loads(json.dumps({**asdict(TrainConfig.smoke(tmp_path)), "out": str(tmp_path)}))
    config.write_text(json.dumps(settings))
    assert main(["toyworld", "train", "--out", str(tmp_path), "--seed", "7"]) == 2
    err = capsys.readouterr().err
    assert "config.json: this folder was trained with other settings: seed 0 (now 7); clip_steps 3 (now 1000)" in err
    assert json.loads(config.read_text()) == settings and not (tmp_path / "work" / "clip").exists()


@pytest.mark.parametrize(
    ("edit", "said"),
    [
        ({"unet_steps": 3.0}, "field 'unet_steps' must be a whole number, got 3.0"),
        ({"latent_images": 16.0}, "field 'latent_images' must be a whole number, got 16.0"),
        ({"checkpoint_every": 2.0}, "field 'checkpoint_every' must be a whole number, got 2.0"),
        ({"unet_stop_at": 2.0}, "field 'unet_stop_at' must be a whole number, got 2.0"),
        ({"stages": "clip"}, "field 'stages' must be an array"),
        ({"extra_key": 1}, "field 'extra_key' is none of its fields"),
    ],
)
def test_a_training_settings_file_is_read_with_every_fields_kind(tmp_path, capsys, edit, said):
    """Round fourteen: work/config.json was checked for `seed` only, so `"unet_steps": 3.0` (equal to 3) and
    unknown keys were taken and the file rewritten without a word; its schema is now TrainConfig's own fields and
    kinds (`schemas.schema_of`, closed), each refusal naming the file and the key, the file left as it was."""
    from date_diffusion.cli.main import main

    config = tmp_path / "work" / "config.json"
    config.parent.mkdir(parents=True)
    settings = json.loads(json.dumps({**asdict(TrainConfig.smoke(tmp_path)), "out": str(tmp_path)}))
    config.write_text(json.dumps({**settings, **edit}))
    assert main(["toyworld", "train", "--smoke", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "config.json is not a valid toy-world training settings file" in err and said in err, err
    assert json.loads(config.read_text()) == {**settings, **edit} and not (tmp_path / "work" / "clip").exists()


def test_a_finished_stage_whose_files_were_damaged_or_edited_is_named(tmp_path):
    """A resume reads the finished stages back: truncated latents, captions that are no text or fewer than the
    latents are each a `SchemaError` naming work/latents, never a library's error or a silent mismatch."""
    from safetensors.torch import save_file

    from date_diffusion.schemas import SchemaError
    from date_diffusion.toyworld.training.latents import encode_latents
    from date_diffusion.toyworld.training.runner import done_marker, stage_dir

    cfg = TrainConfig.smoke(tmp_path)
    folder = stage_dir(cfg, "latents")
    folder.mkdir(parents=True)
    done_marker(cfg, "latents").touch()
    cases = [
        (lambda: (folder / "latents.safetensors").write_bytes(b"\0" * 100), "SafetensorError"),
        (lambda: (folder / "captions.json").write_text(json.dumps([5] * 16)), "no list of captions"),
        (lambda: (folder / "captions.json").write_text(json.dumps(["a"] * 3)), "3 captions for 16 latents"),
    ]
    for damage, message in cases:
        save_file({"latents": torch.zeros(16, 4, 8, 8)}, folder / "latents.safetensors")
        (folder / "captions.json").write_text(json.dumps(["a red circle"] * 16))
        damage()
        with pytest.raises(SchemaError, match="latents") as err:
            encode_latents(cfg, vae=None)
        assert message in str(err.value) and "delete that folder" in str(err.value)


@pytest.mark.parametrize("name", ["model.safetensors", "optimizer.safetensors", "ema.safetensors"])
def test_a_truncated_checkpoint_weights_file_is_named(tmp_path, name):
    """Round nine: a truncated weights file of a checkpoint was `SafetensorError` (no OSError), exit 1 without the
    file; it is a `SchemaError` naming the file and the fix."""
    from date_diffusion.schemas import SchemaError

    with pytest.raises(Boom):
        run_stage(tmp_path, fail_at=5)
    weights = tmp_path / "work" / "toy" / name
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(SchemaError, match="is not a readable tensors file") as err:
        run_stage(tmp_path)
    assert str(weights) in str(err.value) and "delete the stage's folder" in str(err.value)


def test_the_files_training_writes_have_the_umask_mode(tmp_path):
    """Round nine: safetensors writes its files private (0600) whatever the umask; the checkpoints and models
    training writes are readable as every other file the package writes."""
    import os

    from transformers import CLIPTokenizer

    from date_diffusion import TOY_WORLD
    from date_diffusion.outputs import save_pretrained

    run_stage(tmp_path)
    save_pretrained(CLIPTokenizer.from_pretrained(Path(TOY_WORLD) / "tokenizer"), tmp_path / "tok")
    umask = os.umask(0)
    os.umask(umask)
    files = [*(tmp_path / "work" / "toy").glob("*.safetensors"), *(tmp_path / "tok").iterdir()]
    assert files and {oct(f.stat().st_mode & 0o777) for f in files} == {oct(0o666 & ~umask)}


def test_a_work_folder_without_its_settings_is_not_resumed(tmp_path, capsys):
    """Round nine: with work/config.json gone, a resume took any settings over the trained stages and recorded
    the new ones; it is refused naming the file and the stages."""
    from date_diffusion.cli.main import main

    with pytest.raises(Boom):
        run_stage(tmp_path, fail_at=5)  # work/toy holds a checkpoint, and no config.json is there
    assert main(["toyworld", "train", "--out", str(tmp_path), "--smoke", "--seed", "1"]) == 2
    err = capsys.readouterr().err
    assert "config.json is missing" in err and "holds trained stages (toy)" in err, err
    assert not (tmp_path / "work" / "config.json").exists() and not (tmp_path / "work" / "clip").exists()


def test_a_unet_stop_past_the_last_step_is_refused(tmp_path, capsys):
    from date_diffusion.cli.main import main

    assert main(["toyworld", "train", "--out", str(tmp_path / "o"), "--smoke", "--unet-stop-at", "100000000"]) == 2
    err = capsys.readouterr().err
    assert (
        "--unet-stop-at 100000000 is not before the UNet's last step (3 steps)" in err and not (tmp_path / "o").exists()
    )


def test_a_stage_copied_from_a_run_of_other_settings_is_named(tmp_path):
    """Round ten: a checkpoint or a finished stage copied from a run of another seed was resumed (or assembled) as
    this run's; each records its run (`config.run_id`) and another run's is named."""
    import shutil

    from date_diffusion.schemas import SchemaError
    from date_diffusion.toyworld.training.runner import finished, mark_done

    with pytest.raises(Boom):
        run_stage(tmp_path / "seed1", fail_at=5, seed=1)
    shutil.copytree(tmp_path / "seed1" / "work" / "toy", tmp_path / "mine" / "work" / "toy")
    with pytest.raises(SchemaError, match="this checkpoint was written by another run"):
        run_stage(tmp_path / "mine")
    mark_done(TrainConfig(tmp_path / "seed1", seed=1), "toy")
    shutil.copy(tmp_path / "seed1" / "work" / "toy" / "done", tmp_path / "mine" / "work" / "toy" / "done")
    with pytest.raises(SchemaError, match="the finished stage 'toy' was trained by another run"):
        finished(TrainConfig(tmp_path / "mine"), "toy", lambda: None)
    assert finished(TrainConfig(tmp_path / "seed1", seed=1, device="cuda"), "toy", lambda: "read") == "read"


def test_finalize_reads_the_folders_own_stages_as_train_does(tmp_path, capsys):
    """Round fifteen: `toyworld finalize` assembled a UNet copied from a run of another seed (exit 0) where `train`
    refused it, and a damaged checkpoint was a failure (exit 1): finalize reads the folder's own settings
    (`config.trained_config`), each finished stage as a resume reads it, and the UNet's checkpoint through the one
    check (`runner.read_checkpoint`); every refusal is a usage error naming the file."""
    import shutil

    from date_diffusion.cli.main import main

    for seed in (0, 1):
        assert main(["toyworld", "train", "--smoke", "--seed", str(seed), "--out", str(tmp_path / f"s{seed}")]) == 0
    capsys.readouterr()
    assert main(["toyworld", "finalize", "--out", str(tmp_path / "s1")]) == 0  # its own stages: assembled
    shutil.rmtree(tmp_path / "s1" / "work" / "unet")
    shutil.copytree(tmp_path / "s0" / "work" / "unet", tmp_path / "s1" / "work" / "unet")
    assert main(["toyworld", "finalize", "--out", str(tmp_path / "s1")]) == 2
    assert "checkpoint.json: this checkpoint was written by another run" in capsys.readouterr().err
    ckpt = tmp_path / "s0" / "work" / "unet" / "checkpoint.json"
    ckpt.write_text(ckpt.read_text().replace('"step": 3,', '"step": 3.0,'))
    assert main(["toyworld", "finalize", "--out", str(tmp_path / "s0")]) == 2
    assert "field 'step' must be a whole number, got 3.0" in capsys.readouterr().err


def test_a_unet_stopped_early_trains_on_when_a_later_stop_or_none_is_given(tmp_path):
    """Round fifteen: a UNet stopped with `--unet-stop-at` was marked finished, and a resume with a later stop (or
    none) left it at its step without a word while work/config.json said it was not stopped: it trains on from its
    checkpoint (`unet.stopped_before`)."""
    from date_diffusion.cli.main import main

    ckpt = tmp_path / "work" / "unet" / "checkpoint.json"
    for stop, reached in (["--unet-stop-at", "1"], 1), (["--unet-stop-at", "2"], 2), ([], 3):
        assert main(["toyworld", "train", "--smoke", "--out", str(tmp_path), *stop]) == 0
        assert json.loads(ckpt.read_text())["step"] == reached
        assert (tmp_path / "work" / "unet" / "done").exists()
    assert json.loads((tmp_path / "work" / "config.json").read_text())["unet_stop_at"] is None
