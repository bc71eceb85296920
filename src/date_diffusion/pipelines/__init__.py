"""DATE pipelines per model family, the auto class that picks the family of a checkpoint, and model loading."""

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
    """The DATE pipeline class for a stock diffusers pipeline class name (DATE class names are accepted too)."""
    from date_diffusion.hub import stock_pipeline_name

    name = stock_pipeline_name(stock_class_name)
    if name not in FAMILIES:
        raise ValueError(f"no DATE pipeline for {stock_class_name!r}; supported: {', '.join(FAMILIES)}")
    module, cls = FAMILIES[name]
    return getattr(import_module(f"date_diffusion.pipelines.{module}"), cls)


def date_pipeline_for(model) -> type:
    """The DATE pipeline class for a checkpoint folder or hub id (reads `model_index.json`, cache-aware)."""
    from diffusers import DiffusionPipeline

    from date_diffusion.hub import explain_load_error

    try:
        config = DiffusionPipeline.load_config(str(model))
    except (OSError, ValueError) as err:
        raise explain_load_error(model, err) from err
    return date_pipeline_class(config["_class_name"])


class DATEPipeline:
    """Auto class: `DATEPipeline.from_pretrained(path_or_id, **kwargs)` returns the DATE pipeline of the checkpoint's
    family (read from its `model_index.json`); `DATEPipeline.from_pipe(stock_pipe)` converts a loaded pipeline."""

    def __init__(self, *args, **kwargs):
        raise TypeError("DATEPipeline is an auto class: use DATEPipeline.from_pretrained(...) or .from_pipe(...)")

    @staticmethod
    def from_pretrained(pretrained_model_name_or_path, **kwargs):
        from date_diffusion.hub import load_component

        cls = date_pipeline_for(pretrained_model_name_or_path)
        return load_component(cls, pretrained_model_name_or_path, **kwargs)

    @staticmethod
    def from_pipe(pipeline, **kwargs):
        return date_pipeline_class(type(pipeline).__name__).from_pipe(pipeline, **kwargs)


from date_diffusion.pipelines.loading import load_date_pipeline as load_date_pipeline  # noqa: E402  (after the names it uses)
