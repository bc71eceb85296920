"""Stock arguments that once were refused, now computed as the stock pipelines compute them: SD3's skip-layer
guidance, FLUX's true CFG, IP-Adapter in every family that has it. With DATE off (`date=None`) or `rho=0` every
output equals the stock pipeline's exactly: both run the same float32 operations in the same order on the CPU, so
the images (float numpy arrays) are compared for max abs difference 0, not a tolerance. With DATE on: every update
moves the adapted parts by rho per sample and never the image embeddings; finite differences confirm the update's
direction where the new paths enter x0_hat (skip-layer guidance, true CFG)."""

import inspect

import numpy as np
import pytest
import torch
from conftest import make_components
from diffusers import FluxPipeline, StableDiffusion3Pipeline
from diffusers.callbacks import SD3CFGCutoffCallback
from PIL import Image
from test_flux import call as flux_call
from test_flux import flux_components  # noqa: F401  (fixtures)
from test_pixart import pixart_components  # noqa: F401
from test_sd3 import call as sd3_call
from test_sd3 import sd3_components  # noqa: F401
from test_sdxl import sdxl_components  # noqa: F401
from test_template import FAMILIES

from date_diffusion import CLIPScoreReward, DATEConfig
from date_diffusion.core.prediction import predicted_x0
from date_diffusion.core.vae import vae_input
from date_diffusion.pipelines import date_pipeline_class
from date_diffusion.pipelines.embeddings import load_embeddings
from date_diffusion.pipelines.flux import FluxDATEPipeline
from date_diffusion.pipelines.options import PARAMETERS
from date_diffusion.pipelines.stable_diffusion_3 import StableDiffusion3DATEPipeline

SLG = dict(skip_guidance_layers=[0], skip_layer_guidance_start=0.1, skip_layer_guidance_stop=0.7)  # steps 1-3 of 5
TRUE_CFG = dict(true_cfg_scale=3.0, negative_prompt="a green square")


def pair(stock_cls, ours_cls, comps):
    stock, ours = stock_cls(**comps), ours_cls(**comps)
    for p in (stock, ours):
        p.set_progress_bar_config(disable=True)
    return stock, ours


def max_diff(a, b) -> float:
    return float(np.abs(np.asarray(a) - np.asarray(b)).max())


def assert_equals_stock(stock, ours, run, reward, acts=True, **kw):
    """Stock, DATE off and rho=0 give the same image bit for bit; with `acts`, `kw` changes the stock image."""
    expected = run(stock, **kw).images
    assert max_diff(run(ours, **kw).images, expected) == 0
    assert max_diff(run(ours, date=DATEConfig(rho=0.0), reward=reward, **kw).images, expected) == 0
    if acts:
        assert max_diff(run(stock).images, expected) > 1e-3


def assert_moves_rho(out, rho=0.5):
    updates = [u for t in out.traces for u in t["updates"]]
    assert updates and all(abs(u["update_norm"] - rho) < 1e-5 for u in updates)
    assert np.isfinite(np.asarray(out.images)).all()


# ------------------------------------------------------------------ the signature: stock + DATE, nothing refused


@pytest.mark.parametrize("family", list(FAMILIES))
def test_signature_is_exactly_the_stock_one_plus_dates_and_nothing_is_refused(family):
    stock_cls = FAMILIES[family][0]
    cls = date_pipeline_class(stock_cls.__name__)
    stock = [p for p in inspect.signature(stock_cls.__call__).parameters.values() if p.kind != p.VAR_KEYWORD]
    ours = list(inspect.signature(cls.__call__).parameters.values())
    # PixArt's newer callbacks, and the deprecated arguments stock reads from its **kwargs (SD's `callback`)
    beyond = {**cls.adapter.extra_parameters, **cls.adapter.deprecated_kwargs}
    extra = [p.name for p in ours[len(stock) :] if p.name in beyond]
    assert [(p.name, p.default) for p in ours[: len(stock)]] == [(p.name, p.default) for p in stock]
    assert [p.name for p in ours[len(stock) :]] == extra + [p.name for p in PARAMETERS]
    assert not hasattr(cls, "_date_unsupported")  # no stock argument is refused any more


# ------------------------------------------------------------------ SD3 skip-layer guidance


@pytest.fixture
def sd3_pair(sd3_components):  # noqa: F811
    return pair(StableDiffusion3Pipeline, StableDiffusion3DATEPipeline, sd3_components)


def test_sd3_skip_layer_guidance_equals_stock(sd3_pair, reward):
    stock, ours = sd3_pair
    assert_equals_stock(stock, ours, sd3_call, reward, **SLG)
    # outside its window (stock's defaults: no loop index of 5 steps lies strictly between 0.05 and 1) it adds nothing
    assert max_diff(sd3_call(ours, skip_guidance_layers=[0]).images, sd3_call(stock).images) == 0


def test_sd3_skip_layer_guidance_ends_with_guidance_as_stock(sd3_pair):
    """SD3CFGCutoffCallback turns classifier-free guidance off after step 1: skip-layer guidance (which stock
    applies under CFG only) stops with it."""
    stock, ours = sd3_pair
    cutoff = lambda: SD3CFGCutoffCallback(cutoff_step_ratio=None, cutoff_step_index=1)  # noqa: E731
    expected = sd3_call(stock, callback_on_step_end=cutoff(), **SLG).images
    assert max_diff(sd3_call(ours, callback_on_step_end=cutoff(), **SLG).images, expected) == 0
    assert max_diff(sd3_call(stock, **SLG).images, expected) > 1e-4


def test_sd3_skip_layer_guidance_at_update_steps(sd3_pair, reward):
    """Updates at 0, 2, 4 (2 inside the window): each moves rho; the update's guided output includes the term, so
    a run whose only update lies in the window differs from the same update without skip-layer guidance."""
    _, ours = sd3_pair
    out = sd3_call(ours, date=DATEConfig(rho=0.5, update_every=2), reward=reward, **SLG)
    assert_moves_rho(out)
    inside = dict(date=DATEConfig(rho=0.5, update_steps=[2]), reward=reward)
    with_slg, without = sd3_call(ours, **inside, **SLG).images, sd3_call(ours, **inside).images
    assert max_diff(with_slg, without) > 1e-4


# ------------------------------------------------------------------ FLUX true CFG


@pytest.fixture
def flux_pair(flux_components):  # noqa: F811
    return pair(FluxPipeline, FluxDATEPipeline, flux_components)


def test_flux_true_cfg_equals_stock(flux_pair, reward):
    stock, ours = flux_pair
    assert_equals_stock(stock, ours, flux_call, reward, **TRUE_CFG)


def test_flux_true_cfg_with_negative_embeddings_of_their_own_length_equals_stock(flux_pair, reward):
    """Negative embeddings given directly (6 T5 tokens against the prompt's 8), with their own pooled embedding and
    text ids: two separate transformer calls, as stock."""
    stock, ours = flux_pair
    tokens, pooled, _ = stock.encode_prompt("a cat", None, max_sequence_length=6)
    negative = dict(negative_prompt_embeds=tokens.repeat(2, 1, 1), negative_pooled_prompt_embeds=pooled.repeat(2, 1))
    assert_equals_stock(stock, ours, flux_call, reward, true_cfg_scale=2.5, **negative)


def test_flux_callbacks_see_and_replace_the_stock_tensors_under_true_cfg(flux_pair):
    """Stock FLUX hands `latents` and `prompt_embeds` (the positive ones) to callbacks; a replaced `prompt_embeds`
    takes effect in the positive branch only, as stock."""
    stock, ours = flux_pair
    seen = {"stock": [], "ours": []}

    def callback(key):
        def edit(pipe, i, t, kwargs):
            seen[key].append({k: v.clone() for k, v in kwargs.items()})
            return {**kwargs, "prompt_embeds": kwargs["prompt_embeds"] * 0.5} if i == 1 else kwargs

        return edit

    names = {"callback_on_step_end_tensor_inputs": ["latents", "prompt_embeds"]}
    expected = flux_call(stock, callback_on_step_end=callback("stock"), **names, **TRUE_CFG).images
    got = flux_call(ours, callback_on_step_end=callback("ours"), **names, **TRUE_CFG).images
    assert max_diff(got, expected) == 0 and max_diff(got, flux_call(ours, **TRUE_CFG).images) > 1e-4
    for a, b in zip(seen["stock"], seen["ours"], strict=True):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_flux_true_cfg_with_date_adapts_the_positive_conditioning_only(flux_pair, reward, tmp_path):
    _, ours = flux_pair
    path = tmp_path / "e.safetensors"
    out = flux_call(ours, date=DATEConfig(rho=0.5, update_every=2), reward=reward, save_embeddings=path, **TRUE_CFG)
    assert_moves_rho(out)
    saved = load_embeddings(path).stages
    assert set(saved["final"]) == {"prompt_embeds", "pooled_prompt_embeds"}  # the negative is not adapted
    assert torch.equal(saved["final"]["pooled_prompt_embeds"], saved["original"]["pooled_prompt_embeds"])


# ------------------------------------------------------------------ finite differences of one update


def _h_skip_layer(pipe, seen, x, t, w):
    """The reward of x0_hat from SD3's guided output with skip-layer guidance, written out."""
    call, cond = seen["call"], seen["cond"]
    adapter = pipe.date_adapter
    plain, skipped = adapter.denoiser(call, cond), adapter.denoiser(call, cond, skip_layers=[0])
    scale = call.skip_layer_guidance_scale

    def output(c):
        out_c, out_u = plain(x, t, c), plain(x, t, cond.uncond)
        return out_u + w * (out_c - out_u) + (out_c - skipped(x, t, c)) * scale

    return output


def _h_true_cfg(pipe, seen, x, t, w):
    """FLUX's true-CFG combination of its two separate branches, written out."""
    call, cond = seen["call"], seen["cond"]
    adapter = pipe.date_adapter
    positive, negative = adapter.denoiser(call, cond), adapter.denoiser(call, cond, negative=True)

    def output(c):
        out_c, out_u = positive(x, t, c), negative(x, t, cond.uncond)
        return out_u + call.true_cfg_scale * (out_c - out_u)

    return output


def _one_prompt(**fixed):  # one image: DATE normalises per sample, so the whole step is along one gradient
    def run(pipe, **kw):
        return pipe("a red circle", generator=torch.Generator().manual_seed(0), max_sequence_length=8, **fixed, **kw)

    return run


FD_CASES = {
    "sd3-skip-layer": ("sd3_components", StableDiffusion3DATEPipeline, _one_prompt(num_inference_steps=5), SLG,
                       _h_skip_layer),
    "flux-true-cfg": ("flux_components", FluxDATEPipeline, _one_prompt(num_inference_steps=4, height=16, width=16),
                      TRUE_CFG, _h_true_cfg),
}  # fmt: skip


@pytest.mark.parametrize("case", list(FD_CASES))
def test_update_follows_the_reward_gradient_of_the_new_guided_output(case, request, clip_dir, tmp_path, monkeypatch):
    """float64, one update at loop index 1 (inside the skip-layer window): the directional derivative of h (central
    differences; h: the guided output written out -> x0_hat -> decode -> reward) is positive along the saved step
    and ~0 across it, so DATE differentiates the output the scheduler takes (skip-layer term / true CFG included)."""
    fixture, cls, runner, kw, make_output = FD_CASES[case]
    pipe = cls(**request.getfixturevalue(fixture)).to(torch.float64)
    pipe.set_progress_bar_config(disable=True)
    reward = CLIPScoreReward.from_pretrained(clip_dir).double()
    seen, adapter = {}, type(pipe).adapter
    guidance = adapter.guidance

    def spy(self, call, cond, n_steps):
        seen.update(call=call, cond=cond)
        return guidance(self, call, cond, n_steps)

    def record(p, i, t, kwargs):
        seen.setdefault(i, kwargs["latents"].clone())
        return kwargs

    monkeypatch.setattr(adapter, "guidance", spy)
    path = tmp_path / "e.safetensors"
    date = DATEConfig(rho=0.5, update_steps=[1], track_reward_after=False)
    runner(
        pipe, date=date, reward=reward, output_type="latent", callback_on_step_end=record, save_embeddings=path, **kw
    )
    t, sigma = pipe.scheduler.timesteps[1], pipe.scheduler.sigmas[1].double()
    x, cond, call = seen[0], seen["cond"], seen["call"]
    output = make_output(pipe, seen, x, t, pipe._guidance_scale)

    def h(c):
        x0 = predicted_x0(x, output(c), 1 - sigma, sigma, "flow")
        image = pipe.vae.decode(vae_input(pipe.date_adapter.to_vae(call, x0), pipe.vae)).sample / 2 + 0.5
        return reward(image, ["a red circle"])[0]

    saved = load_embeddings(path)
    c0, step = cond.cond, saved.packed("final").double() - cond.cond
    mask = cond.mask.expand_as(c0)
    assert (step * (1 - mask)).abs().max() == 0
    direction = step / step.norm()
    across = torch.randn(c0.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * mask
    across = across - (across * direction).sum() * direction
    across = across / across.norm()

    def slope(v, eps=1e-4):
        with torch.no_grad():
            return float((h(c0 + eps * v) - h(c0 - eps * v)) / (2 * eps))

    along = slope(direction)
    assert along > 0
    assert abs(slope(across)) <= 1e-3 * along  # the saved step is float32: its direction is good to ~1e-4


# ------------------------------------------------------------------ IP-Adapter


def _rand(g, *shape, scale=0.3):
    return torch.randn(*shape, generator=g) * scale


def _image_projection(g, cross_dim: int, image_dim: int) -> dict:
    """`ImageProjection`'s weights in the IP-Adapter file format (`proj` -> 4 image tokens, LayerNorm)."""
    return {
        "proj.weight": _rand(g, 4 * cross_dim, image_dim),
        "proj.bias": _rand(g, 4 * cross_dim),
        "norm.weight": 1 + _rand(g, cross_dim),
        "norm.bias": _rand(g, cross_dim),
    }


def unet_ip_adapter(unet, image_dim: int = 16, seed: int = 0) -> dict:
    """A random IP-Adapter for a UNet, as `_load_ip_adapter_weights` reads it: `to_k_ip` / `to_v_ip` of every
    cross-attention processor, numbered 1, 3, 5, ... in processor order."""
    g = torch.Generator().manual_seed(seed)
    cross_attention = [n for n in unet.attn_processors if not n.endswith("attn1.processor")]
    weights = {}
    for k, name in enumerate(cross_attention):
        to_k = unet.get_submodule(name.removesuffix(".processor")).to_k.weight
        for which in ("to_k_ip", "to_v_ip"):
            weights[f"{2 * k + 1}.{which}.weight"] = _rand(g, *to_k.shape)
    return {"image_proj": _image_projection(g, unet.config.cross_attention_dim, image_dim), "ip_adapter": weights}


def flux_ip_adapter(transformer, image_dim: int = 16, seed: int = 0) -> dict:
    """A random FLUX IP-Adapter: `to_k_ip` / `to_v_ip` (with biases) of every double-stream block, from 0."""
    g = torch.Generator().manual_seed(seed)
    inner, joint = transformer.inner_dim, transformer.config.joint_attention_dim
    blocks = [n for n in transformer.attn_processors if not n.startswith("single_transformer_blocks")]
    weights = {}
    for k in range(len(blocks)):
        for which in ("to_k_ip", "to_v_ip"):
            weights[f"{k}.{which}.weight"], weights[f"{k}.{which}.bias"] = _rand(g, inner, joint), _rand(g, inner)
    return {"image_proj": _image_projection(g, joint, image_dim), "ip_adapter": weights}


def sd3_ip_adapter(transformer, image_dim: int = 16, seed: int = 0) -> dict:
    """A random SD3 IP-Adapter: the time-aware resampler (`IPAdapterTimeImageProjection`, depth 4 and 64-wide
    heads as the loader builds it) and one `SD3IPAdapterJointAttnProcessor2_0` per block, in the file's names."""
    from diffusers.models.attention_processor import SD3IPAdapterJointAttnProcessor2_0
    from diffusers.models.embeddings import IPAdapterTimeImageProjection

    torch.manual_seed(seed)
    hidden = transformer.config.attention_head_dim * transformer.config.num_attention_heads
    proj = IPAdapterTimeImageProjection(image_dim, hidden, 64, heads=1, num_queries=4, timestep_in_dim=8)
    weights = {}
    for k in range(len(transformer.attn_processors)):
        processor = SD3IPAdapterJointAttnProcessor2_0(hidden, hidden, transformer.config.attention_head_dim, 64)
        for name, value in processor.state_dict().items():
            weights[f"{k}.{name}"] = value + _rand(torch.Generator().manual_seed(seed + k), *value.shape, scale=0.1)
    return {"image_proj": proj.state_dict(), "ip_adapter": weights}


def tiny_image_encoder():
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    config = CLIPVisionConfig(image_size=32, patch_size=8, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                              num_attention_heads=2, projection_dim=16)  # fmt: skip
    return CLIPVisionModelWithProjection(config).eval(), CLIPImageProcessor(size=32, crop_size=32)


def picture(seed: int):
    pixels = np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


IP_FAMILIES = {  # components, the IP-Adapter in the file format, how the stock pipeline loads it
    "sd": (lambda r: make_components(r.getfixturevalue("tokenizer")), lambda p: unet_ip_adapter(p.unet),
           dict(subfolder="", weight_name="", image_encoder_folder=None)),
    "sdxl": (lambda r: r.getfixturevalue("sdxl_components"), lambda p: unet_ip_adapter(p.unet),
             dict(subfolder="", weight_name="", image_encoder_folder=None)),
    "sd3": (lambda r: r.getfixturevalue("sd3_components"), lambda p: sd3_ip_adapter(p.transformer),
            dict(image_encoder_folder=None)),
    "flux": (lambda r: r.getfixturevalue("flux_components"), lambda p: flux_ip_adapter(p.transformer),
             dict(weight_name="", image_encoder_pretrained_model_name_or_path=None)),
}  # fmt: skip
IP_CALL = {"sd3": {"max_sequence_length": 8}, "flux": {"max_sequence_length": 8, "guidance_scale": 3.5}}


def ip_pair(family, request):
    """Stock and DATE pipelines sharing tiny components, an image encoder and one loaded random IP-Adapter."""
    components, adapter, load = IP_FAMILIES[family]
    comps = dict(components(request))
    if family == "sdxl":
        comps["add_watermarker"] = False
    comps["image_encoder"], comps["feature_extractor"] = tiny_image_encoder()
    stock_cls = FAMILIES[family][0]
    stock, ours = pair(stock_cls, date_pipeline_class(stock_cls.__name__), comps)
    stock.load_ip_adapter(adapter(stock), **load)  # the shared denoiser carries it for both
    return stock, ours


def ip_run(family):
    def run(pipe, **kw):
        kw = {"guidance_scale": 5.0, **IP_CALL.get(family, {}), **kw}
        generators = [torch.Generator().manual_seed(s) for s in (0, 1)]
        return pipe(["a red circle", "a blue dog"], height=16, width=16, num_inference_steps=4, output_type="np",
                    generator=generators, **kw)  # fmt: skip

    return run


@pytest.mark.parametrize("family", list(IP_FAMILIES))
def test_ip_adapter_image_equals_stock(family, request, reward):
    stock, ours = ip_pair(family, request)
    run = ip_run(family)
    assert_equals_stock(stock, ours, run, reward, acts=False, ip_adapter_image=picture(0))
    # the image acts: another one gives another sample (without one, an IP-Adapter model refuses to run)
    other = run(stock, ip_adapter_image=picture(1)).images
    assert max_diff(other, run(stock, ip_adapter_image=picture(0)).images) > 1e-4


IP_EMBEDS = {  # precomputed embeddings as each stock pipeline takes them
    "sd": lambda e: [e(2, 1, 16)],  # a list per adapter, [negative; positive] under CFG
    "sdxl": lambda e: [e(2, 1, 16)],
    "sd3": lambda e: e(2, 17, 16),  # one tensor: the image encoder's hidden states, both halves
    "flux": lambda e: [e(1, 1, 16)],  # positive only (FLUX has no CFG layout)
}


@pytest.mark.parametrize("family", list(IP_EMBEDS))
def test_ip_adapter_image_embeds_equal_stock(family, request, reward):
    stock, ours = ip_pair(family, request)
    g = torch.Generator().manual_seed(3)
    given = IP_EMBEDS[family](lambda *shape: torch.randn(*shape, generator=g))
    assert_equals_stock(stock, ours, ip_run(family), reward, acts=False, ip_adapter_image_embeds=given)


def test_sd3_skip_layer_guidance_with_ip_adapter_runs_where_stock_fails(request):
    """Stock hands the skip-layer call (conditional batch) the image embeddings of both branches and fails; here it
    gets the conditional half. (Should diffusers fix it, the stock call runs and this test asks for a comparison.)"""
    stock, ours = ip_pair("sd3", request)
    run = ip_run("sd3")
    with pytest.raises(RuntimeError, match="must match the size"):
        run(stock, ip_adapter_image=picture(0), **SLG)
    got = run(ours, ip_adapter_image=picture(0), **SLG).images
    assert np.isfinite(got).all() and max_diff(got, run(ours, ip_adapter_image=picture(0)).images) > 1e-4


def test_flux_ip_adapter_with_true_cfg_and_negative_images_equals_stock(request, reward):
    """The positive IP-Adapter embeddings with the positive branch, the negative ones with the negative branch;
    a missing negative image is a black one, as stock."""
    stock, ours = ip_pair("flux", request)
    run = ip_run("flux")
    both = dict(ip_adapter_image=picture(0), negative_ip_adapter_image=picture(1), **TRUE_CFG)
    assert_equals_stock(stock, ours, run, reward, acts=False, **both)
    assert_equals_stock(stock, ours, run, reward, acts=False, ip_adapter_image=picture(0), **TRUE_CFG)
    embeds = torch.randn(1, 1, 16, generator=torch.Generator().manual_seed(4))
    assert_equals_stock(stock, ours, run, reward, acts=False, negative_ip_adapter_image_embeds=[embeds], **TRUE_CFG)
    assert max_diff(run(stock, **both).images, run(stock, ip_adapter_image=picture(0), **TRUE_CFG).images) > 1e-4


@pytest.mark.parametrize("family", list(IP_FAMILIES))
def test_date_with_ip_adapter_moves_the_text_by_rho_and_never_the_image_embeddings(family, request, reward, tmp_path):
    """The image embeddings travel with their branch at every step, update steps included (an update step without
    them would fail in the IP-Adapter's attention), and DATE never moves them."""
    _, ours = ip_pair(family, request)
    path = tmp_path / "e.safetensors"
    extra = TRUE_CFG if family == "flux" else {}
    date = DATEConfig(rho=0.5, update_every=2)
    out = ip_run(family)(ours, date=date, reward=reward, ip_adapter_image=picture(0), save_embeddings=path, **extra)
    assert_moves_rho(out)
    stages = load_embeddings(path).stages
    assert "ip_adapter_image_embeds_0" in stages["final"]
    assert torch.equal(stages["final"]["ip_adapter_image_embeds_0"], stages["original"]["ip_adapter_image_embeds_0"])
    assert not torch.equal(stages["final"]["prompt_embeds"], stages["original"]["prompt_embeds"])


@pytest.mark.parametrize("family", ["sd", "flux"])
def test_ip_adapter_with_several_images_per_prompt_equals_stock(family, request, reward):
    stock, ours = ip_pair(family, request)
    extra = TRUE_CFG if family == "flux" else {}

    def run(pipe, **kw):
        kw = {"guidance_scale": 5.0, **IP_CALL.get(family, {}), **extra, **kw}
        return pipe("a red circle", height=16, width=16, num_inference_steps=3, output_type="np",
                    num_images_per_prompt=2, generator=torch.Generator().manual_seed(0), **kw)  # fmt: skip

    assert_equals_stock(stock, ours, run, reward, acts=False, ip_adapter_image=picture(0))


def test_attend_and_excite_with_ip_adapter_is_refused_before_any_work(request):
    _, ours = ip_pair("sd", request)
    with pytest.raises(ValueError, match="attend_and_excite replaces the UNet's attention processors"):
        ip_run("sd")(ours, ip_adapter_image=picture(0), attend_and_excite={"token_indices": [[2]]})
