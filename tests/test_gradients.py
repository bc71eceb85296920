"""DATE's step against finite differences for every family's packing (SDXL tokens + pooled + time ids, SD3 / FLUX
flow matching, PixArt's masked tokens), v-prediction and an Euler scheduler; grad_steps and the prior in the
pipelines; and `date_sample` called directly, as the README shows."""

from types import SimpleNamespace

import pytest
import torch
from diffusers import DDIMScheduler, EulerDiscreteScheduler
from test_chroma import chroma_components  # noqa: F401
from test_flux import flux_components  # noqa: F401  (fixtures)
from test_flux2 import flux2_components  # noqa: F401
from test_flux2_klein import flux2_klein_components  # noqa: F401
from test_ltx import ltx_components  # noqa: F401
from test_pixart import pixart_components  # noqa: F401
from test_qwen_image import qwen_image_components  # noqa: F401
from test_sana import sana_components  # noqa: F401
from test_sd3 import sd3_components  # noqa: F401
from test_sdxl import sdxl_components  # noqa: F401
from test_template import FAMILIES, run
from test_wan import wan_components  # noqa: F401
from test_z_image import z_image_components  # noqa: F401

from date_diffusion import CLIPScoreReward, DATEConfig, date_sample
from date_diffusion.core.prediction import predicted_x0
from date_diffusion.core.vae import decode_image, vae_input
from date_diffusion.pipelines import date_pipeline_class
from date_diffusion.pipelines.embeddings import load_packed as load_file
from date_diffusion.pipelines.reward_path import reward_frame_indices


def _noise_level(scheduler, t):
    """(alpha, sigma) of the model input at step 1, from the scheduler's own tables (written out here)."""
    name = type(scheduler).__name__
    if name.startswith("FlowMatch"):
        s = scheduler.sigmas[1].double()
        return 1 - s, s
    if name.startswith("Euler"):
        s = scheduler.sigmas[1].double()
        return 1 / (1 + s**2).sqrt(), s / (1 + s**2).sqrt()
    a = scheduler.alphas_cumprod[int(t)].double()
    return a.sqrt(), (1 - a).sqrt()


CASES = {  # family, prediction type
    "sd": ("sd", "epsilon"),
    "sd-v-euler": ("sd", "v_prediction"),  # with an Euler scheduler
    "sdxl": ("sdxl", "epsilon"),  # Euler
    "sdxl-pooled": ("sdxl", "epsilon"),
    "sd3": ("sd3", "flow"),
    "flux": ("flux", "flow"),
    "flux2": ("flux2", "flow"),
    "flux2-klein": ("flux2-klein", "flow"),  # the base model: classifier-free guidance, a separate negative call
    "pixart": ("pixart", "epsilon"),
    "pixart-sigma": ("pixart-sigma", "epsilon"),
    "qwen-image": ("qwen-image", "flow"),
    "z-image": ("z-image", "flow"),
    "sana": ("sana", "flow"),
    "chroma": ("chroma", "flow"),
    "wan": ("wan", "flow"),  # video: the reward is the mean over 4 frames of x0_hat, each decoded alone
    "ltx": ("ltx", "flow"),  # video: packed latents, unpacked for the reward's frames
}
# the finite differences' step where h is exact only to float32 (the model computes parts of it in float32 even in
# a float64 run): diffusers' Qwen-Image rotary embedding rotates q and k in float32 (`x.float()` in
# `apply_rotary_emb_qwen`), so a 1e-4 step measures its rounding (across-slopes of 1e-6 to 1e-4 for eps 1e-3 to 1e-6,
# measured); at 1e-2 the across/along ratio measured 5e-5. (Z-Image's float32 latents and outputs leave 6e-5 at
# 1e-4, measured.) SANA's linear attention casts its query, key and value to float32: h carries rounding noise of
# ~5e-9, which a step of 1e-4 turns into ~5e-5 of the slope (measured); 3e-3 keeps it under 2e-6 while the
# curvature's error stays ~1e-6 (measured over runs: the across slope 4e-7 to 1.4e-6, the along slope within 1e-3
# of autograd's)
EPS = {"qwen-image": 1e-2, "sana": 3e-3}


@pytest.mark.parametrize("case", list(CASES))
def test_step_follows_the_reward_gradient_for_every_packing(case, request, clip_dir, tmp_path, monkeypatch):
    """float64: the loop moves the adapted part along grad h; the directional derivative of h (central
    differences, h written out: guided output -> x0_hat -> decode -> reward) is |grad h| along the step, ~0
    across it, and the frozen parts of the conditioning never move."""
    family, prediction = CASES[case]
    stock_cls, fixture, extra = FAMILIES[family]
    comps = dict(request.getfixturevalue(fixture))
    if case == "sd-v-euler":
        from conftest import make_components

        comps = make_components(request.getfixturevalue("tokenizer"), prediction_type="v_prediction")
        comps["scheduler"] = EulerDiscreteScheduler.from_config(comps["scheduler"].config)
    pipe = date_pipeline_class(stock_cls.__name__)(**comps).to(torch.float64)
    pipe.set_progress_bar_config(disable=True)
    reward = CLIPScoreReward.from_pretrained(clip_dir).double()
    seen = {}
    adapter = type(pipe).adapter
    make_denoise = adapter.denoiser

    def spy(self, call, cond, **branch):  # keep the run's own denoiser and conditioning to differentiate it
        if branch:  # a separate negative branch (`negative=True`: true CFG's, Chroma's, Wan's)
            return make_denoise(self, call, cond, **branch)
        seen.update(call=call, cond=cond, denoise=make_denoise(self, call, cond))
        return seen["denoise"]

    monkeypatch.setattr(adapter, "denoiser", spy)
    make_guidance = adapter.guidance
    if family in ("wan", "ltx"):  # diffusers' Wan modules compute parts in float32 (`.float()`) whatever the
        # dtype, as LTX's rotary embedding (`apply_rotary_emb`: `x.float()`), its pipeline's prediction
        # (`noise_pred.float()`, which the adapter keeps) and diffusers' RMSNorm (LTX's block norms: the variance
        # of `.to(torch.float32)`) do, whose rounding would swamp a float64 difference quotient: here float64
        # tensors stay float64 throughout
        to_float, to = torch.Tensor.float, torch.Tensor.to
        monkeypatch.setattr(
            torch.Tensor, "float", lambda t, *a, **k: t if t.dtype == torch.float64 else to_float(t, *a, **k)
        )
        if family == "ltx":
            keep = lambda t, *a, **k: t.dtype == torch.float64 and a == (torch.float32,) and not k  # noqa: E731
            monkeypatch.setattr(torch.Tensor, "to", lambda t, *a, **k: t if keep(t, *a, **k) else to(t, *a, **k))

    def record(p, i, t, kwargs):
        seen.setdefault(i, kwargs["latents"].clone())
        return kwargs

    w, path = 5.0, tmp_path / "e.safetensors"
    out = run(
        pipe,
        extra,
        guidance_scale=w,
        output_type="latent",
        date=DATEConfig(rho=0.5, update_steps=[1], track_reward_after=False),
        reward=reward,
        adapt_pooled=case == "sdxl-pooled",
        callback_on_step_end=record,
        save_embeddings=path,
    )
    assert out.traces[0]["final_distance"] == pytest.approx(0.5, abs=1e-9)
    cond, denoise, call = seen["cond"], seen["denoise"], seen["call"]
    t = pipe.scheduler.timesteps[1]
    alpha, sigma = _noise_level(pipe.scheduler, t)
    x = seen[0] * (alpha if type(pipe.scheduler).__name__.startswith("Euler") else 1)  # the scaled model input

    # the family's guidance (true CFG's own negative denoiser and scale, a family's own rule), else CFG at w
    guidance = make_guidance(pipe.date_adapter, call, cond, len(pipe.scheduler.timesteps))
    rule, scale = guidance.get("rule"), guidance.get("cfg_scale", w)

    def h(c):
        out_c = denoise(x, t, c)
        if cond.uncond is not None:
            out_u = guidance.get("uncond_denoise", denoise)(x, t, cond.uncond)
            state = SimpleNamespace(index=1, timestep=t, guidance_scale=w)
            s = scale(state) if callable(scale) else scale  # Wan 2.2: a scale per step
            out_c = rule(state, out_u, out_c, s) if rule else out_u + s * (out_c - out_u)
        x0 = predicted_x0(x, out_c, alpha, sigma, prediction)
        if pipe.video_fps is not None:  # the default 4 frames, each latent frame decoded alone, the mean reward
            x0 = pipe.date_adapter.to_vae(call, x0)  # LTX's packed latents -> [B, C, F, h, w]
            chosen = reward_frame_indices(4, x0.shape[2])
            clips = x0[:, :, chosen].transpose(1, 2).flatten(0, 1).unsqueeze(2)
            frames = pipe.date_adapter.vae_decode(clips)[:, :, 0] / 2 + 0.5
            return reward(frames, ["a red circle"] * len(chosen)).mean()
        image = (
            decode_image(pipe.vae, vae_input(pipe.date_adapter.to_vae(call, x0).to(pipe.vae.dtype), pipe.vae)) / 2 + 0.5
        )
        return reward(image, ["a red circle"])[0]

    c0, saved = cond.cond, load_file(path)
    mask = torch.ones_like(c0) if cond.mask is None else cond.mask.expand_as(c0)
    frozen = (saved["final"] - saved["original"]) * (1 - mask.float())
    assert frozen.abs().max() == 0  # frozen parts (masks, time ids, pooled unless adapted) stay
    step = saved["final"].double() - c0
    direction = step / step.norm()
    across = torch.randn(c0.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * mask
    across = across - (across * direction).sum() * direction
    across = across / across.norm()
    eps = EPS.get(case, 1e-4)

    def slope(v):
        with torch.no_grad():
            return float((h(c0 + eps * v) - h(c0 - eps * v)) / (2 * eps))

    along = slope(direction)
    assert along > 0
    assert abs(slope(across)) <= 1e-3 * along  # the saved step is float32: its direction is good to ~1e-4


def test_grad_steps_take_several_rho_steps_per_update(pipe, reward, tmp_path):
    one = run(pipe, {}, date=DATEConfig(rho=0.5, update_every=2), reward=reward)
    path = tmp_path / "three.safetensors"
    three = run(pipe, {}, date=DATEConfig(rho=0.5, update_every=2, grad_steps=3), reward=reward, save_embeddings=path)
    for update in three.traces[0]["updates"]:
        assert len(update["grad_norms"]) == 3
        assert update["update_norm"] == pytest.approx(1.5, abs=1e-5)  # three steps of rho each
    # the reported distance is the saved final embedding's distance from the saved original, measured here
    saved = load_file(path)
    measured = float((saved["final"].double() - saved["original"].double()).norm())
    assert 0.5 < three.traces[0]["final_distance"] == pytest.approx(measured, rel=1e-5)
    assert abs(one.images - three.images).max() > 0


def test_prior_weight_bends_later_updates_but_keeps_each_step_rho(pipe, reward, tmp_path):
    from date_diffusion.pipelines.embeddings import load_packed as load_file

    finals = {}
    for w in (0.0, 1e4):
        path = tmp_path / f"{w}.safetensors"
        out = run(
            pipe, {}, date=DATEConfig(rho=0.5, update_every=2, prior_weight=w), reward=reward, save_embeddings=path
        )
        assert all(u["update_norm"] == pytest.approx(0.5, abs=1e-5) for u in out.traces[0]["updates"])
        finals[w] = load_file(path)
    # the first update starts at c_org, where the prior's gradient is zero: same step; the second differs
    assert torch.allclose(finals[0.0]["step_0000"], finals[1e4]["step_0000"])
    assert not torch.allclose(finals[0.0]["step_0002"], finals[1e4]["step_0002"])


def test_date_sample_directly_over_any_denoiser():
    """The README's `date_sample(scheduler=..., denoise=..., decode=..., reward=...)` on a hand-made denoiser."""
    torch.manual_seed(0)
    weight = torch.randn(8, 4)
    scheduler = DDIMScheduler()
    scheduler.set_timesteps(6)

    def denoise(x, t, embeds):  # any function (x_in, t, embeds) -> model output
        return 0.1 * x + (embeds @ weight).mean(1)[:, :, None, None]

    def decode(x0):
        return x0[:, :3] / 10

    def reward(images):
        return -((images - 0.5) ** 2).mean(dim=(1, 2, 3))

    kw = dict(
        scheduler=scheduler,
        denoise=denoise,
        latents=torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(1)),
        cond_embeds=torch.randn(2, 3, 8, generator=torch.Generator().manual_seed(2)),
        uncond_embeds=torch.zeros(2, 3, 8),
        guidance_scale=4.0,
        prediction_type="epsilon",
        decode=decode,
        reward=reward,
    )
    result = date_sample(date=DATEConfig(rho=0.01, update_every=2), **kw)
    again = date_sample(date=DATEConfig(rho=0.01, update_every=2), **kw)
    fixed = date_sample(date=None, **kw)
    assert torch.equal(result.latents, again.latents)
    assert [len(t.updates) for t in result.traces] == [3, 3]
    assert all(u.update_norm == pytest.approx(0.01, abs=1e-6) for t in result.traces for u in t.updates)
    assert all(u.reward_after > u.reward_before for t in result.traces for u in t.updates)
    assert not torch.equal(result.latents, fixed.latents)
