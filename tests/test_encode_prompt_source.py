"""A DATE pipeline's `encode_prompt` names its outputs in its return statement as the stock one does.

diffusers' own tests (`test_encode_prompt_works_in_isolation`, run against our classes by tests/peer/run.py) read
the names of `encode_prompt`'s outputs from the source of its return statement (`ReturnNameVisitor`) and pass the
outputs back to `__call__` under those names. An override that ends in `return super().encode_prompt(...)` gives
no names, so the pipeline without text encoders is called with neither `prompt` nor `prompt_embeds` and fails
where the stock pipeline passes (SD 1.x/2.x's clip-skip fix did, before it returned by name).
"""

from __future__ import annotations

import ast
import inspect
import textwrap

import pytest
from diffusers.utils.source_code_parsing_utils import ReturnNameVisitor

from date_diffusion import families


def return_names(method) -> list[str]:
    visitor = ReturnNameVisitor()
    visitor.visit(ast.parse(textwrap.dedent(inspect.getsource(method))))
    return visitor.return_names


def _pairs():
    for family in families.all_families():
        try:
            yield pytest.param(family.stock_pipeline(), family.date_pipeline(), id=family.name)
        except (ImportError, AttributeError):  # a family whose stock or DATE class this install lacks
            continue


@pytest.mark.parametrize(("stock", "ours"), list(_pairs()))
def test_encode_prompt_returns_the_stock_names(stock, ours):
    if not hasattr(stock, "encode_prompt"):
        pytest.skip(f"{stock.__name__} has no encode_prompt")
    expected = return_names(stock.encode_prompt)
    assert return_names(ours.encode_prompt) == expected
    call = inspect.signature(ours.__call__).parameters
    assert [n for n in expected if n in call], "no output of encode_prompt goes back into __call__ by name"


def test_the_clip_skip_fix_overrides_encode_prompt():
    """The case above is not vacuous: SD's DATE class has an `encode_prompt` of its own."""
    from diffusers import StableDiffusionPipeline

    from date_diffusion.pipelines.stable_diffusion import StableDiffusionDATEPipeline

    assert StableDiffusionDATEPipeline.encode_prompt is not StableDiffusionPipeline.encode_prompt
    assert return_names(StableDiffusionDATEPipeline.encode_prompt) == ["prompt_embeds", "negative_prompt_embeds"]
