"""Every family against its stock diffusers pipeline, through the one `__call__` template: arguments, callbacks,
interrupt, LoRA scale, clip skip, guidance rescale, custom schedules, the tuple output, auto class, offload."""

import ast
import inspect
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import (
    EulerDiscreteScheduler,
)
from diffusers.callbacks import MultiPipelineCallbacks, SD3CFGCutoffCallback, SDCFGCutoffCallback, SDXLCFGCutoffCallback
from test_chroma import chroma_components  # noqa: F401
from test_flux import flux_components  # noqa: F401  (fixtures)
from test_flux2 import FLUX2_EXTRA, flux2_components  # noqa: F401
from test_flux2_klein import KLEIN_EXTRA, flux2_klein_components  # noqa: F401
from test_ltx import ltx_components  # noqa: F401
from test_pixart import pixart_components  # noqa: F401
from test_qwen_image import qwen_image_components  # noqa: F401
from test_sana import sana_components  # noqa: F401
from test_sd3 import sd3_components  # noqa: F401
from test_sdxl import sdxl_components  # noqa: F401
from test_wan import wan_components  # noqa: F401
from test_z_image import z_image_components  # noqa: F401

import date_diffusion
from date_diffusion import DATEConfig, DATEPipeline
from date_diffusion.families import FAMILIES as FAMILY_TABLE
from date_diffusion.pipelines import date_pipeline_class

# every family of the family table, with its tiny components' fixture and its family-specific call arguments;
# a family added to the table without tiny components here fails at import
FIXTURES = {"sd": "components", "sdxl": "sdxl_components", "sd3": "sd3_components", "flux": "flux_components",
            "flux2": "flux2_components", "flux2-klein": "flux2_klein_components", "pixart": "pixart_components",
            "pixart-sigma": "pixart_components", "qwen-image": "qwen_image_components",
            "z-image": "z_image_components", "sana": "sana_components", "chroma": "chroma_components",
            "wan": "wan_components", "ltx": "ltx_components"}  # fmt: skip
CALL_EXTRA = {
    "sd3": {"max_sequence_length": 8},
    "flux": {"max_sequence_length": 8},
    "flux2": FLUX2_EXTRA,
    "flux2-klein": KLEIN_EXTRA,
    "pixart": {"use_resolution_binning": False, "clean_caption": False, "max_sequence_length": 8},
    "pixart-sigma": {"use_resolution_binning": False, "clean_caption": False, "max_sequence_length": 8},
    "qwen-image": {"negative_prompt": "bad quality"},  # true CFG (stock's default true_cfg_scale 4) with its rescale
    "z-image": {"max_sequence_length": 16},
    # SANA takes sizes divisible by 32; the tiny model's sample size has no bins (the stock pipeline raises)
    "sana": {"height": 32, "width": 32, "use_resolution_binning": False, "max_sequence_length": 8},
    "chroma": {"max_sequence_length": 8},
    "wan": {"num_frames": 5, "max_sequence_length": 8},
    "ltx": {"height": 32, "width": 32, "num_frames": 9, "max_sequence_length": 8},  # LTX's sizes: multiples of 32
}
FAMILIES = {f.name: (f.stock_pipeline(), FIXTURES[f.name], CALL_EXTRA.get(f.name, {})) for f in FAMILY_TABLE}
CFG_CUTOFF = {"sd": SDCFGCutoffCallback, "sdxl": SDXLCFGCutoffCallback, "sd3": SD3CFGCutoffCallback}


def build(family, request):
    stock_cls, fixture, extra = FAMILIES[family]
    comps = request.getfixturevalue(fixture)
    if family == "sdxl":
        comps = {**comps, "add_watermarker": False}
    stock, ours = stock_cls(**comps), date_pipeline_class(stock_cls.__name__)(**comps)
    for p in (stock, ours):
        p.set_progress_bar_config(disable=True)
    return stock, ours, extra


def run(pipe, extra, prompt="a red circle", **kw):
    kw = {"height": 16, "width": 16, "num_inference_steps": 4, "output_type": "np", **extra, **kw}
    return pipe(prompt=prompt, generator=torch.Generator().manual_seed(0), **kw)  # by name: FLUX.2 takes `image` first


def pixels(out):
    """A pipeline output's images, or a video pipeline's frames."""
    return out.frames if hasattr(out, "frames") else out.images


def same(a, b, tol=1e-5):
    return float(np.abs(np.asarray(a) - np.asarray(b)).max()) <= tol


@pytest.mark.parametrize("family", list(FAMILIES))
def test_signature_is_the_stock_one_plus_date_options(family):
    stock_cls = FAMILIES[family][0]
    ours = inspect.signature(date_pipeline_class(stock_cls.__name__).__call__).parameters
    for name, p in inspect.signature(stock_cls.__call__).parameters.items():
        if p.kind != inspect.Parameter.VAR_KEYWORD:
            assert name in ours and ours[name].default == p.default, name
    assert {"date", "reward", "reward_prompt", "save_embeddings", "adapt_pooled"} <= set(ours)
    with pytest.raises(TypeError, match="unexpected keyword argument 'not_an_argument'"):
        inspect.signature(date_pipeline_class(stock_cls.__name__).__call__).bind(None, not_an_argument=1)


@pytest.mark.parametrize(
    "family", ["sd", "sdxl", "sd3", "flux", "flux2", "flux2-klein", "qwen-image", "sana", "chroma"]
)
def test_callback_returning_its_kwargs_unchanged_equals_stock(family, request):
    stock, ours, extra = build(family, request)
    names = list(stock._callback_tensor_inputs)
    seen = {"stock": [], "ours": []}

    def recorder(key):
        def callback(pipe, i, t, kwargs):
            seen[key].append({k: v.clone() for k, v in kwargs.items()})
            return kwargs

        return callback

    kw = {"callback_on_step_end_tensor_inputs": names}
    expected = run(stock, extra, callback_on_step_end=recorder("stock"), **kw).images
    got = run(ours, extra, callback_on_step_end=recorder("ours"), **kw).images
    assert same(got, expected)
    for a, b in zip(seen["stock"], seen["ours"]):  # the same tensors under the same names and shapes
        assert a.keys() == b.keys() and all(a[k].shape == b[k].shape and same(a[k], b[k]) for k in a)


@pytest.mark.parametrize("family", list(CFG_CUTOFF))
def test_diffusers_cfg_cutoff_callbacks_equal_stock(family, request):
    """PipelineCallback objects: their tensor_inputs are used; the callback's `_guidance_scale` and sliced
    embeddings take effect. Also inside MultiPipelineCallbacks."""
    stock, ours, extra = build(family, request)
    one = lambda: CFG_CUTOFF[family](cutoff_step_ratio=None, cutoff_step_index=2)  # noqa: E731
    for make in (one, lambda: MultiPipelineCallbacks([one()])):
        expected = run(stock, extra, guidance_scale=5.0, callback_on_step_end=make()).images
        got = run(ours, extra, guidance_scale=5.0, callback_on_step_end=make())
        plain = run(ours, extra, guidance_scale=5.0).images
        assert same(got.images, expected) and not same(got.images, plain)


@pytest.mark.parametrize(
    "family", ["sd", "sdxl", "sd3", "flux", "flux2", "flux2-klein", "qwen-image", "z-image", "sana", "chroma"]
)
def test_interrupt_equals_stock(family, request):
    stock, ours, extra = build(family, request)

    def stop_after_1(pipe, i, t, kwargs):
        if i == 1:
            pipe._interrupt = True
        return kwargs

    expected = run(stock, extra, callback_on_step_end=stop_after_1).images
    got = run(ours, extra, callback_on_step_end=stop_after_1)
    assert same(got.images, expected)
    assert not same(got.images, run(ours, extra).images)


def test_interrupt_stops_a_date_run_before_its_next_update(pipe, reward):
    def stop_after_0(p, i, t, kwargs):
        p._interrupt = i == 0 or p._interrupt
        return kwargs

    out = run(pipe, {}, date=DATEConfig(update_every=2), reward=reward, callback_on_step_end=stop_after_0)
    assert [u["step"] for u in out.traces[0]["updates"]] == [0]


def test_callback_edits_take_effect_and_negative_embeddings_too(pipe):
    """Replacing `negative_prompt_embeds` changes the sample (it is what the loop uses from then on); replacing it
    with itself changes nothing."""

    def edit(scale):
        def callback(p, i, t, kwargs):
            return {**kwargs, "negative_prompt_embeds": kwargs["negative_prompt_embeds"] * scale}

        return callback

    kw = {"callback_on_step_end_tensor_inputs": ["negative_prompt_embeds"]}
    plain = run(pipe, {}).images
    assert same(run(pipe, {}, callback_on_step_end=edit(1.0), **kw).images, plain)
    assert not same(run(pipe, {}, callback_on_step_end=edit(0.0), **kw).images, plain)


def test_callback_edit_of_prompt_embeds_is_where_date_continues(pipe, reward, tmp_path):
    """An edited `prompt_embeds` (the positive half) is the embedding the next steps and DATE's next update use."""
    from date_diffusion.pipelines.embeddings import load_packed as load_file

    def zero_positive_after_0(p, i, t, kwargs):
        if i == 0:
            negative, positive = kwargs["prompt_embeds"].chunk(2)
            kwargs["prompt_embeds"] = torch.cat([negative, positive * 0])
        return kwargs

    date = DATEConfig(rho=0.5, update_every=2)  # updates at steps 0 and 2 of 4
    kw = {"callback_on_step_end": zero_positive_after_0, "callback_on_step_end_tensor_inputs": ["prompt_embeds"]}
    edited = run(pipe, {}, date=date, reward=reward, save_embeddings=tmp_path / "e.safetensors", **kw)
    assert not same(edited.images, run(pipe, {}, date=date, reward=reward).images)
    # zeroed after step 0, then one update of rho at step 2: the final embedding is exactly rho from zero
    final = load_file(tmp_path / "e.safetensors")["final"]
    assert float(final.norm()) == pytest.approx(0.5, abs=1e-5)


@pytest.mark.parametrize("family", ["sd", "sdxl"])
def test_guidance_rescale_equals_stock(family, request):
    stock, ours, extra = build(family, request)
    expected = run(stock, extra, guidance_rescale=0.7).images
    assert same(run(ours, extra, guidance_rescale=0.7).images, expected)
    assert not same(expected, run(stock, extra).images)


@pytest.mark.parametrize("family", ["sdxl", "sd3"])  # stock SD's clip_skip fails with transformers 5's CLIPTextModel
def test_clip_skip_equals_stock(family, request):
    stock, ours, extra = build(family, request)
    expected = run(stock, extra, clip_skip=1).images
    assert same(run(ours, extra, clip_skip=1).images, expected)
    assert not same(expected, run(stock, extra).images)


@pytest.mark.parametrize(
    ("family", "schedule"),
    [
        ("sd", {"timesteps": [901, 601, 301, 1]}),
        ("sd3", {"sigmas": [1.0, 0.7, 0.4, 0.2]}),
        ("flux", {"sigmas": [1.0, 0.6, 0.3, 0.1]}),
        ("flux2", {"sigmas": [1.0, 0.6, 0.3, 0.1]}),
        ("flux2-klein", {"sigmas": [1.0, 0.6, 0.3, 0.1]}),
        ("qwen-image", {"sigmas": [1.0, 0.6, 0.3, 0.1]}),
        ("z-image", {"sigmas": [1.0, 0.6, 0.3, 0.1]}),
        ("sana", {"sigmas": [1.0, 0.7, 0.4, 0.2]}),
        ("chroma", {"sigmas": [1.0, 0.6, 0.3, 0.1]}),
    ],
)
def test_custom_schedules_equal_stock(family, schedule, request):
    stock, ours, extra = build(family, request)
    if family == "sd":  # DDIM takes no custom timesteps; Euler does
        for p in (stock, ours):
            p.scheduler = EulerDiscreteScheduler.from_config(p.scheduler.config)
    expected = run(stock, extra, **schedule).images
    assert same(run(ours, extra, **schedule).images, expected)
    assert not same(expected, run(stock, extra).images)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_return_dict_false_returns_the_stock_tuple(family, request):
    stock, ours, extra = build(family, request)
    expected, got = run(stock, extra, return_dict=False), run(ours, extra, return_dict=False)
    assert isinstance(got, tuple) and len(got) == len(expected)
    assert same(got[0], expected[0])
    assert all(g == e for g, e in zip(got[1:], expected[1:]))


def _tiny_lora(model):
    from peft import LoraConfig

    model.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn_like(p) * 0.5)


@pytest.mark.parametrize(
    ("family", "kwargs_name"),
    [
        ("sd", "cross_attention_kwargs"),
        ("sd3", "joint_attention_kwargs"),
        ("qwen-image", "attention_kwargs"),
        ("z-image", "joint_attention_kwargs"),
        ("sana", "attention_kwargs"),
        ("chroma", "joint_attention_kwargs"),
    ],
)
def test_lora_scale_through_attention_kwargs_equals_stock(family, kwargs_name, request):
    stock, ours, extra = build(family, request)
    _tiny_lora(getattr(stock, "unet", None) or stock.transformer)  # shared module: both pipelines carry the LoRA
    half = {kwargs_name: {"scale": 0.5}}
    expected = run(stock, extra, **half).images
    assert same(run(ours, extra, **half).images, expected)
    assert not same(expected, run(stock, extra).images)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_auto_class_and_from_pipe_pick_the_family(family, request, tmp_path):
    stock, _, _ = build(family, request)
    stock.save_pretrained(tmp_path / "model")
    name = date_pipeline_class(type(stock).__name__).__name__
    assert type(DATEPipeline.from_pretrained(tmp_path / "model")).__name__ == name
    assert type(DATEPipeline.from_pipe(stock)).__name__ == name
    assert getattr(date_diffusion, name).__name__ == name  # importable from the package root


def test_model_cpu_offload_hooks_give_the_same_date_image(components, reward):
    """With accelerate's offload hooks installed (execution device = CPU), DATE updates run through the hooked
    models and give the same image. (Sequential offload cannot run on a CPU-only machine: accelerate fails there
    for the stock pipeline too.)"""
    pipe = date_pipeline_class("StableDiffusionPipeline")(**components)
    pipe.set_progress_bar_config(disable=True)
    date = DATEConfig(rho=0.5, update_every=2)
    expected = run(pipe, {}, date=date, reward=reward)
    pipe.enable_model_cpu_offload(device="cpu")
    assert hasattr(pipe.unet, "_hf_hook")
    got = run(pipe, {}, date=date, reward=reward)
    assert same(got.images, expected.images)
    assert [u["update_norm"] for u in got.traces[0]["updates"]] == pytest.approx(
        [u["update_norm"] for u in expected.traces[0]["updates"]]
    )


def test_nothing_below_the_cli_imports_the_cli():
    root = Path(date_diffusion.__file__).parent
    offenders = []
    for path in root.rglob("*.py"):
        if path.parent.name == "cli" or path.name == "__main__.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            names += [a.name for a in node.names] if isinstance(node, ast.Import) else []
            offenders += [f"{path.relative_to(root)}: {n}" for n in names if n.startswith("date_diffusion.cli")]
    assert offenders == []


@pytest.mark.parametrize("family", list(FAMILIES))
def test_saved_embeddings_have_named_shaped_parts_and_replay_the_date_image(family, request, reward, tmp_path):
    from date_diffusion.pipelines.embeddings import load_embeddings

    _, ours, extra = build(family, request)
    path = tmp_path / "e.safetensors"
    date = DATEConfig(rho=0.5, update_every=2)
    dated = run(ours, extra, date=date, reward=reward, save_embeddings=path)
    plain = run(ours, extra)
    saved = load_embeddings(path)
    assert saved.metadata["pipeline"] == type(ours).__name__ and saved.update_steps() == [0, 2]
    names = [n for n, _ in saved.parts]
    assert names[0] in ("prompt_embeds", "pooled_prompt_embeds") and len(set(names)) == len(names)
    for name, shape in saved.parts:
        assert tuple(saved.stages["final"][name].shape) == (1, *shape)
    replayed = run(ours, extra, replay_embeddings=path)  # no reward, no DATE
    assert np.array_equal(pixels(replayed), pixels(dated))
    assert not same(pixels(plain), pixels(dated), tol=1e-6)
    with pytest.raises(ValueError, match=r"saved for the prompt \['a red circle'\], this call has \['a blue dog'\]"):
        run(ours, extra, prompt="a blue dog", replay_embeddings=path)
    with pytest.raises(ValueError, match="leave `date`"):
        run(ours, extra, date=date, reward=reward, replay_embeddings=path)


@pytest.mark.parametrize("family", ["sd", "flux"])
def test_an_empty_prompt_samples_as_stock_and_is_refused_only_where_date_scores_it(family, request, reward):
    """Stock samples the empty prompt (diffusers' own fast tests do); DATE's reward has no text to score then."""
    stock, ours, extra = build(family, request)
    assert same(pixels(run(ours, extra, prompt="")), pixels(run(stock, extra, prompt="")))
    with pytest.raises(ValueError, match="the prompt DATE's reward scores is empty"):
        run(ours, extra, prompt=" ", date=DATEConfig(update_every=2), reward=reward)
    run(ours, extra, prompt="", reward_prompt="a red circle", date=DATEConfig(update_every=2), reward=reward)
