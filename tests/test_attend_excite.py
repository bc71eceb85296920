"""Attend-and-Excite as a hook: equal to diffusers' pipeline alone, and combinable with DATE."""

import torch

from date_diffusion import DATEConfig
from date_diffusion.sampling.attend_excite import noun_token_indices

AE = dict(attn_res=(4, 4), max_iter_to_alter=3, thresholds={0: 0.05, 2: 0.5}, scale_factor=20)


def test_alone_equals_diffusers_attend_and_excite(components, pipe):
    from diffusers.pipelines.deprecated.stable_diffusion_attend_and_excite.pipeline_stable_diffusion_attend_and_excite import (  # noqa: E501
        StableDiffusionAttendAndExcitePipeline,
    )

    stock = StableDiffusionAttendAndExcitePipeline(**components)
    stock.set_progress_bar_config(disable=True)
    processors = dict(pipe.unet.attn_processors)
    expected = stock(
        ["a red circle and a blue dog"],
        token_indices=[3, 7],
        num_inference_steps=5,
        guidance_scale=8.0,
        generator=[torch.Generator().manual_seed(0)],
        output_type="np",
        **AE,
    ).images
    pipe.unet.set_attn_processor(processors)  # the stock pipeline leaves its processors installed
    ours = pipe(
        ["a red circle and a blue dog"],
        num_inference_steps=5,
        guidance_scale=8.0,
        output_type="np",
        generator=[torch.Generator().manual_seed(0)],
        attend_and_excite={"token_indices": [[3, 7]], **AE},
    )
    assert abs(ours.images - expected).max() <= 1e-5
    assert len(ours.traces[0]["attend_excite_losses"]) == 5
    assert all(type(p).__name__ != "AttendExciteAttnProcessor" for p in pipe.unet.attn_processors.values())


def test_auto_indices_find_the_subject_nouns(tokenizer):
    assert noun_token_indices(tokenizer, "a red circle and a blue dog", {"circle", "dog"}) == [3, 7]


def test_combined_with_date_both_act(pipe, reward):
    kw = dict(num_inference_steps=5, guidance_scale=8.0, output_type="np")
    g = lambda: [torch.Generator().manual_seed(0)]  # noqa: E731
    ae = pipe(
        ["a red circle and a blue dog"], generator=g(), attend_and_excite={"subjects": ["circle", "dog"], **AE}, **kw
    )
    both = pipe(
        ["a red circle and a blue dog"],
        generator=g(),
        attend_and_excite={"subjects": ["circle", "dog"], **AE},
        date=DATEConfig(rho=0.5, update_every=2),
        reward=reward,
        **kw,
    )
    assert abs(both.images - ae.images).max() > 0
    assert [u["step"] for u in both.traces[0]["updates"]] == [0, 2, 4]
    assert all(abs(u["update_norm"] - 0.5) < 1e-5 for u in both.traces[0]["updates"])
