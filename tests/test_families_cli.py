"""Every family runs DATE through the CLI on a tiny local checkpoint; the adapter comes from model_index.json."""

import json

import pytest
from diffusers import FluxPipeline
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
from test_template import FAMILIES as TEMPLATE_FAMILIES
from test_template import pixels
from test_wan import wan_components  # noqa: F401
from test_z_image import z_image_components  # noqa: F401

from date_diffusion.cli.main import main
from date_diffusion.families import by_name
from date_diffusion.pipelines import date_pipeline_class, date_pipeline_for

# the families of the family table beyond SD 1.x/2.x (which test_cli.py covers)
FAMILIES = {
    name: (stock, fixture, by_name(name).date_class)
    for name, (stock, fixture, _) in TEMPLATE_FAMILIES.items()
    if name != "sd"
}


# families whose denoiser computes another function when checkpointed, and so refuse it (with this message)
NO_CHECKPOINTING = {"chroma": "drops the attention mask in its checkpointed single-stream blocks"}


def side(family) -> int:
    """The tiny size the family samples in the tests (its template call's, e.g. SANA's 32; else 16)."""
    return TEMPLATE_FAMILIES[family][2].get("height", 16)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_generate_runs_date_for_each_family(family, request, tmp_path, clip_dir):
    stock_cls, fixture, date_name = FAMILIES[family]
    stock_cls(**request.getfixturevalue(fixture)).save_pretrained(tmp_path / "model")
    assert date_pipeline_for(tmp_path / "model").__name__ == date_name
    argv = [
        "generate",
        "a red circle",
        "--model",
        str(tmp_path / "model"),
        "--reward",
        f"clip:{clip_dir}",
        "--steps",
        "4",
        "--update-every",
        "2",
        "--height",
        str(side(family)),
        "--width",
        str(side(family)),
        "--out",
        str(tmp_path / "out"),
        *(["--frames", "5"] if date_pipeline_for(tmp_path / "model").adapter.video_fps else []),  # a short video
    ]
    assert main(argv) == 0
    meta = json.loads((tmp_path / "out" / "a-red-circle-s0.json").read_text())
    assert [u["step"] for u in meta["trace"]["updates"]] == [0, 2]
    assert all(abs(u["update_norm"] - 0.5) < 1e-5 for u in meta["trace"]["updates"])


def test_flux_rejects_a_negative_prompt(flux_components, tmp_path, clip_dir, capsys):  # noqa: F811
    FluxPipeline(**flux_components).save_pretrained(tmp_path / "model")
    argv = [
        "generate",
        "a red circle",
        "--model",
        str(tmp_path / "model"),
        "--reward",
        f"clip:{clip_dir}",
        "--steps",
        "2",
        "--height",
        "16",
        "--width",
        "16",
        "--negative-prompt",
        "blue",
        "--out",
        str(tmp_path),
    ]
    assert main(argv) == 2
    assert "not supported by FluxDATEPipeline" in capsys.readouterr().err


def test_unknown_family_is_named():
    with pytest.raises(ValueError, match="no DATE pipeline for 'KandinskyPipeline'"):
        date_pipeline_class("KandinskyPipeline")


@pytest.mark.parametrize("family", list(FAMILIES))
def test_memory_options_and_frozen_weights_apply_to_every_family(family, request, reward):
    from date_diffusion import DATEConfig

    stock_cls, fixture, date_name = FAMILIES[family]
    pipe = date_pipeline_class(stock_cls.__name__)(**request.getfixturevalue(fixture))
    pipe.set_progress_bar_config(disable=True)
    kw = dict(
        num_inference_steps=4,
        height=side(family),
        width=side(family),
        output_type="np",
        date=DATEConfig(update_every=2),
        reward=reward,
    )
    import torch

    kw.update(TEMPLATE_FAMILIES[family][2])
    plain = pipe(prompt=["a red circle"], generator=[torch.Generator().manual_seed(0)], **kw)
    if family in NO_CHECKPOINTING:
        with pytest.raises(ValueError, match=NO_CHECKPOINTING[family]):
            pipe(prompt=["a red circle"], generator=[torch.Generator().manual_seed(0)], gradient_checkpointing=True,
                 **kw)  # fmt: skip
    else:
        ckpt = pipe(prompt=["a red circle"], generator=[torch.Generator().manual_seed(0)], gradient_checkpointing=True,
                    **kw)  # fmt: skip
        assert abs(pixels(plain) - pixels(ckpt)).max() <= 1e-5
    denoiser = getattr(pipe, "unet", None) or pipe.transformer
    for module in (denoiser, pipe.vae, pipe.text_encoder):
        assert all(p.grad is None and not p.requires_grad for p in module.parameters())
    assert not denoiser.is_gradient_checkpointing
