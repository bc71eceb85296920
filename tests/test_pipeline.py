import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline

from date_diffusion import DATEConfig, Reward, StableDiffusionDATEPipeline
from date_diffusion.pipelines.embeddings import load_packed as load_file
from date_diffusion.schedulers import SCHEDULERS, make_scheduler

PROMPTS = ["a red circle", "a blue dog"]


def gens(*seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


def run(pipe, prompts=PROMPTS, seeds=(0, 1), **kw):
    kw.setdefault("num_inference_steps", 10)
    kw.setdefault("guidance_scale", 8.0)
    return pipe(prompts, generator=gens(*seeds), output_type="np", **kw)


@pytest.mark.parametrize("scheduler", ["ddim", "euler", "dpm++"])
@pytest.mark.parametrize(
    "date", [None, DATEConfig(rho=0.0), DATEConfig(update_steps=[])], ids=["none", "rho0", "nosteps"]
)
def test_equals_stock_pipeline_without_updates(components, reward, scheduler, date):
    components["scheduler"] = make_scheduler(scheduler, components["scheduler"].config)
    stock = StableDiffusionPipeline(**components)
    stock.set_progress_bar_config(disable=True)
    ours = StableDiffusionDATEPipeline(**components)
    ours.set_progress_bar_config(disable=True)
    expected = stock(PROMPTS, generator=gens(0, 1), num_inference_steps=10, guidance_scale=8.0, output_type="np").images
    got = run(ours, date=date, reward=reward).images
    assert abs(got - expected).max() <= 1e-5


def test_equals_stock_for_v_prediction(tokenizer):
    from conftest import make_components

    components = make_components(tokenizer, prediction_type="v_prediction")
    stock = StableDiffusionPipeline(**components)
    stock.set_progress_bar_config(disable=True)
    ours = StableDiffusionDATEPipeline(**components)
    ours.set_progress_bar_config(disable=True)
    expected = stock(PROMPTS, generator=gens(0, 1), num_inference_steps=6, guidance_scale=8.0, output_type="np").images
    assert abs(run(ours, num_inference_steps=6).images - expected).max() <= 1e-5


@pytest.mark.parametrize("anchor", ["previous", "original"])
def test_each_update_moves_exactly_rho(pipe, reward, tmp_path, anchor):
    path = tmp_path / "emb.safetensors"
    out = run(pipe, date=DATEConfig(rho=0.5, update_every=3, anchor=anchor), reward=reward, save_embeddings=path)
    saved = load_file(path)
    steps = sorted(k for k in saved if k.startswith("step_"))
    assert [int(k[5:]) for k in steps] == [0, 3, 6, 9] == out.traces[0]["update_steps"]
    previous = saved["original"]
    for k in steps:
        ref = previous if anchor == "previous" else saved["original"]
        dist = (saved[k] - ref).flatten(1).double().norm(dim=1)
        torch.testing.assert_close(dist, torch.full((2,), 0.5, dtype=torch.float64), atol=1e-5, rtol=0)
        previous = saved[k]
    for trace in out.traces:
        norms = [u["update_norm"] for u in trace["updates"]]  # distance moved by each update step
        assert norms[0] == pytest.approx(0.5, abs=1e-5)
        if anchor == "previous":
            assert norms == pytest.approx([0.5] * 4, abs=1e-5)
        assert trace["skipped_steps"] == []
        if anchor == "original":
            assert trace["final_distance"] == pytest.approx(0.5, abs=1e-5)
    assert torch.equal(saved["final"], saved["step_0009"])


def test_update_direction_agrees_with_finite_differences(tokenizer, clip_dir):
    """float64 end to end: the loop's step equals +rho * grad h / |grad h| with grad h from central differences."""
    from conftest import make_components

    from date_diffusion import CLIPScoreReward

    comps = make_components(tokenizer, dtype=torch.float64)
    pipe = StableDiffusionDATEPipeline(**comps)
    pipe.set_progress_bar_config(disable=True)
    reward = CLIPScoreReward.from_pretrained(clip_dir).double()
    prompt, w = "a red circle", 8.0
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    captured = {}
    pipe(
        [prompt],
        latents=latents.clone(),
        num_inference_steps=4,
        guidance_scale=w,
        output_type="latent",
        date=DATEConfig(rho=0.5, update_steps=[1]),
        reward=reward,
        callback_on_step_end=lambda p, i, t, kw: captured.setdefault(i, {k: v.clone() for k, v in kw.items()}) and {},
        callback_on_step_end_tensor_inputs=["latents", "prompt_embeds", "negative_prompt_embeds"],
    )
    # as in diffusers, callbacks see `prompt_embeds` as cat([negative, positive]) under guidance
    x, c0, c1 = captured[0]["latents"], captured[0]["prompt_embeds"][1:], captured[1]["prompt_embeds"][1:]
    uncond = captured[0]["negative_prompt_embeds"]
    sched = pipe.scheduler
    t = sched.timesteps[1]
    a = sched.alphas_cumprod[int(t)].double()

    def h(c):  # written independently of the loop: CFG -> Tweedie x0 -> decode -> CLIP score
        eps_u = pipe.unet(x, t, encoder_hidden_states=uncond).sample
        eps_c = pipe.unet(x, t, encoder_hidden_states=c).sample
        eps = eps_u + w * (eps_c - eps_u)
        x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
        img = pipe.vae.decode(x0 / pipe.vae.config.scaling_factor).sample / 2 + 0.5
        return reward(img, [prompt])[0]

    fd = torch.zeros_like(c0)
    eps = 1e-5
    with torch.no_grad():
        for idx in range(c0.numel()):
            e = torch.zeros(c0.numel(), dtype=torch.float64)
            e[idx] = eps
            e = e.view_as(c0)
            fd.view(-1)[idx] = (h(c0 + e) - h(c0 - e)) / (2 * eps)
    step = (c1 - c0).flatten()
    cos = torch.nn.functional.cosine_similarity(step, fd.flatten(), dim=0)
    print(f"finite-difference cosine {float(cos):.6f}")
    assert cos > 0.99, float(cos)
    assert abs(step.norm().item() - 0.5) < 1e-9


def test_batch_independence_and_seed_determinism(pipe, reward):
    date = DATEConfig(rho=0.5, update_every=3)
    alone = run(pipe, ["a red circle"], seeds=(7,), date=date, reward=reward)
    mixed = run(pipe, ["a green square", "a red circle", "a dog"], seeds=(1, 7, 3), date=date, reward=reward)
    again = run(pipe, ["a red circle"], seeds=(7,), date=date, reward=reward)
    assert abs(mixed.images[1] - alone.images[0]).max() <= 1e-5
    assert mixed.traces[1]["updates"][0]["reward_before"] == pytest.approx(
        alone.traces[0]["updates"][0]["reward_before"], abs=1e-5
    )
    assert (again.images == alone.images).all() and again.traces == alone.traces


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_every_scheduler_runs_date_with_one_step_call_per_step(pipe, reward, name):
    pipe.scheduler = make_scheduler(name, pipe.scheduler.config)
    calls = []
    original_step = pipe.scheduler.step
    pipe.scheduler.step = lambda *a, **k: calls.append(1) or original_step(*a, **k)
    out = run(pipe, num_inference_steps=6, date=DATEConfig(rho=0.5, update_every=2), reward=reward)
    assert len(calls) == len(pipe.scheduler.timesteps)
    assert all(abs(u["update_norm"] - 0.5) < 1e-5 for tr in out.traces for u in tr["updates"])
    # update steps count sampling steps, not the scheduler's loop iterations (PNDM: 7 for 6 steps; Heun: 11)
    assert [u["step"] for u in out.traces[0]["updates"]] == [0, 2, 4]
    fixed = run(pipe, num_inference_steps=6)
    assert np.isfinite(out.images).all()  # no NaN or inf
    assert abs(out.images - fixed.images).max() > 0  # the updates changed the sample


def test_negative_embedding_never_changes_and_weights_stay_frozen(pipe, reward):
    seen = []
    run(
        pipe,
        date=DATEConfig(rho=0.5, update_every=2),
        reward=reward,
        callback_on_step_end=lambda p, i, t, kw: seen.append({k: v.clone() for k, v in kw.items()}) or {},
        callback_on_step_end_tensor_inputs=["prompt_embeds", "negative_prompt_embeds"],
    )
    assert all(torch.equal(s["negative_prompt_embeds"], seen[0]["negative_prompt_embeds"]) for s in seen)
    assert not torch.equal(seen[0]["prompt_embeds"], seen[-1]["prompt_embeds"])
    for module in (pipe.unet, pipe.vae, pipe.text_encoder, reward):
        assert all(p.grad is None and not p.requires_grad for p in module.parameters())


class ConstantReward(Reward):
    def forward(self, images, prompts):
        return images.sum(dim=(1, 2, 3)) * 0.0 + 1.0


def test_constant_reward_gives_no_nan_and_records_skips(pipe):
    out = run(pipe, date=DATEConfig(rho=0.5, update_every=5), reward=ConstantReward())
    fixed = run(pipe)
    assert np.isfinite(out.images).all()
    assert abs(out.images - fixed.images).max() <= 1e-6
    assert out.traces[0]["skipped_steps"] == [0, 5]
    assert all(u["skipped"] and u["update_norm"] == 0 for u in out.traces[0]["updates"])


def test_errors_are_early_and_named(pipe, reward):
    with pytest.raises(ValueError, match="reward"):
        run(pipe, date=DATEConfig())
    with pytest.raises(ValueError, match="the prompt DATE's reward scores is empty"):
        run(pipe, ["  "], seeds=(0,), date=DATEConfig(), reward=reward)
    with pytest.raises(ValueError, match="update_steps"):
        run(pipe, date=DATEConfig(update_steps=[10]), reward=reward)


def test_loads_with_from_pretrained_and_from_pipe(components, tmp_path):
    StableDiffusionPipeline(**components).save_pretrained(tmp_path / "model")
    loaded = StableDiffusionDATEPipeline.from_pretrained(tmp_path / "model")
    assert isinstance(loaded, StableDiffusionDATEPipeline)
    stock = StableDiffusionPipeline(**components)
    converted = StableDiffusionDATEPipeline.from_pipe(stock)
    assert converted.unet is stock.unet


def test_images_per_prompt_negative_prompt_and_long_prompts(pipe, reward):
    import logging

    messages = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logging.getLogger("diffusers").addHandler(handler)
    long = " ".join(["red circle"] * 20)  # past the 16-token limit of the tiny text encoder and reward
    with pytest.warns(UserWarning, match="truncated"):
        out = pipe(
            [long, "a dog"],
            negative_prompt=["blue", "green"],
            num_images_per_prompt=2,
            num_inference_steps=4,
            guidance_scale=8.0,
            output_type="np",
            date=DATEConfig(update_every=2),
            reward=reward,
            generator=gens(0, 1, 2, 3),
        )
    assert out.images.shape[0] == 4 and len(out.traces) == 4
    assert out.prompts == [long, long, "a dog", "a dog"]
    assert all(len(t["updates"]) == 2 for t in out.traces)
    logging.getLogger("diffusers").removeHandler(handler)
    assert any("was truncated" in m for m in messages)  # the UNet branch truncates too (diffusers warns)


def test_each_image_carries_its_record_and_saves_with_it(pipe, reward, tmp_path):
    """`out.records[k]`: what image k was made with, as the command line records it; `out.save(path, k)` writes it
    into the PNG, where `info` reads it."""
    from date_diffusion.cli.main import main
    from date_diffusion.outputs import read_png_metadata

    date = DATEConfig(rho=1.0, update_every=2)
    out = pipe(["a red circle", "a blue square"], negative_prompt=["green", "grey"], num_images_per_prompt=2,
               num_inference_steps=4, guidance_scale=7.0, generator=gens(3, 4, 5, 6), date=date,
               reward=reward)  # fmt: skip
    assert [r["prompt"] for r in out.records] == ["a red circle", "a red circle", "a blue square", "a blue square"]
    assert [r["seed"] for r in out.records] == [3, 4, 5, 6] and [r["negative_prompt"] for r in out.records] == [
        "green",
        "green",
        "grey",
        "grey",
    ]
    first = out.records[0]
    assert (first["steps"], first["guidance_scale"], first["height"], first["width"]) == (4, 7.0, 16, 16)
    assert first["pipeline"] == "StableDiffusionDATEPipeline" and first["scheduler"] == type(pipe.scheduler).__name__
    assert first["date"] == date.to_dict() and first["reward"] == reward.name and first["dtype"] == "float32"
    assert [r["trace"] for r in out.records] == out.traces and {r["method"] for r in out.records} == {"date"}
    assert out.save(tmp_path / "second.png", 1) == tmp_path / "second.png"
    assert read_png_metadata(tmp_path / "second.png")["record"] == out.records[1]
    assert np.array_equal(np.asarray(out.images[1]), np.asarray(read_png(tmp_path / "second.png")))
    assert main(["info", str(tmp_path / "second.png")]) == 0

    shared = pipe("a red circle", num_images_per_prompt=2, num_inference_steps=2, generator=torch.manual_seed(9))
    # one generator for both images: image k is its k-th draw, which its seed alone does not make again
    seeds = [(r.get("seed"), r["generator_seed"], r["image_in_batch"]) for r in shared.records]
    assert seeds == [(None, 9, 0), (None, 9, 1)]
    assert {(r["method"], r["date"], r["reward"]) for r in shared.records} == {("fixed", None, None)}  # no DATE
    still = pipe("a red circle", num_inference_steps=2, generator=gens(1), date=DATEConfig(rho=0.0), reward=reward)
    assert still.records[0]["method"] == "fixed" and still.records[0]["seed"] == 1  # DATE did not move it
    with pytest.raises(TypeError, match="output_type='pil'"):
        run(pipe, num_inference_steps=2).save(tmp_path / "array.png")


def read_png(path):
    from PIL import Image

    with Image.open(path) as image:
        return image.convert("RGB")


def test_prompt_embeds_need_reward_prompt(pipe, reward):
    embeds, negative = pipe.encode_prompt(["a cat"], "cpu", 1, True)
    with pytest.raises(ValueError, match="reward_prompt"):
        pipe(
            prompt_embeds=embeds,
            negative_prompt_embeds=negative,
            num_inference_steps=2,
            date=DATEConfig(),
            reward=reward,
        )
    out = pipe(
        prompt_embeds=embeds,
        negative_prompt_embeds=negative,
        num_inference_steps=2,
        output_type="np",
        date=DATEConfig(update_every=1),
        reward=reward,
        reward_prompt="a cat",
    )
    assert len(out.traces[0]["updates"]) == 2


def test_legacy_callback_through_kwargs_as_stock(components):
    """SD's stock `__call__` takes the deprecated `callback` / `callback_steps` through `**kwargs` (warned, still
    called with the latents); the DATE class takes them the same way instead of refusing them."""
    stock = StableDiffusionPipeline(**components)
    ours = StableDiffusionDATEPipeline(**components)
    calls = {}
    for name, p in (("stock", stock), ("ours", ours)):
        p.set_progress_bar_config(disable=True)
        seen = calls[name] = []
        with pytest.warns(FutureWarning, match="callback"):
            p(PROMPTS, generator=gens(0, 1), num_inference_steps=4, output_type="np", callback_steps=2,
              callback=lambda i, t, latents, seen=seen: seen.append((i, int(t), latents.clone())))  # fmt: skip
    assert [c[:2] for c in calls["ours"]] == [c[:2] for c in calls["stock"]] and calls["stock"]
    for (_, _, a), (_, _, b) in zip(calls["ours"], calls["stock"]):
        assert abs(a - b).max() <= 1e-5
