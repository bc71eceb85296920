"""DATE pipelines per model family, and which one a checkpoint needs (from its `model_index.json`)."""

from __future__ import annotations

from importlib import import_module

# stock diffusers pipeline class -> (module, DATE pipeline class)
FAMILIES = {
    "StableDiffusionPipeline": ("stable_diffusion", "StableDiffusionDATEPipeline"),
    "StableDiffusionXLPipeline": ("stable_diffusion_xl", "StableDiffusionXLDATEPipeline"),
    "StableDiffusion3Pipeline": ("stable_diffusion_3", "StableDiffusion3DATEPipeline"),
    "FluxPipeline": ("flux", "FluxDATEPipeline"),
    "PixArtAlphaPipeline": ("pixart", "PixArtAlphaDATEPipeline"),
}


def date_pipeline_class(stock_class_name: str):
    if stock_class_name not in FAMILIES:
        raise ValueError(f"no DATE pipeline for {stock_class_name!r}; supported: {', '.join(FAMILIES)}")
    module, name = FAMILIES[stock_class_name]
    return getattr(import_module(f"date_diffusion.pipelines.{module}"), name)


def date_pipeline_for(model) -> type:
    """The DATE pipeline class for a checkpoint folder or hub id (reads `model_index.json`, cache-aware)."""
    from diffusers import DiffusionPipeline

    from date_diffusion.hub import explain_load_error

    try:
        config = DiffusionPipeline.load_config(str(model))
    except (OSError, ValueError) as err:
        raise explain_load_error(model, err) from err
    return date_pipeline_class(config["_class_name"].replace("DATEPipeline", "Pipeline").replace("DATE", ""))
