"""DATE pipelines per model family, the auto class that picks the family of a checkpoint, and model loading."""

from __future__ import annotations

from date_diffusion.core.text import json_kind
from date_diffusion.families import by_pipeline_class


def date_pipeline_class(class_name: str):
    """The DATE pipeline class for a stock diffusers pipeline class name (DATE class names are accepted too)."""
    return by_pipeline_class(class_name).date_pipeline()


def model_index(model) -> dict:
    """A checkpoint folder's or hub id's `model_index.json` (cache-aware)."""
    from diffusers import DiffusionPipeline

    from date_diffusion.hub import explain_load_error

    try:
        config = DiffusionPipeline.load_config(str(model))
    except (OSError, ValueError) as err:
        raise explain_load_error(model, err) from err
    if not isinstance(config, dict) or not isinstance(config.get("_class_name"), str):
        raise ValueError(
            f"{str(model)!r}: its model_index.json is not a diffusers pipeline index (an object naming the pipeline "
            f"in '_class_name'; found {json_kind(config)}): repair it or save the model again with save_pretrained"
        )
    return config


def pipeline_class_name(model) -> str:
    """The pipeline class a checkpoint folder or hub id names in its `model_index.json` (cache-aware)."""
    return model_index(model)["_class_name"]


def scheduler_class_name(model) -> str | None:
    """The scheduler class a checkpoint folder or hub id ships (its `model_index.json`); None for a single file."""
    from date_diffusion.pipelines.loading import is_single_file

    if is_single_file(model):
        return None
    entry = model_index(model).get("scheduler")
    return entry[1] if isinstance(entry, list) and len(entry) == 2 else None


def date_pipeline_for(model) -> type:
    """The DATE pipeline class for a checkpoint folder or hub id, once its index lists every component the class
    needs (checked before any weights load: a folder whose index names another pipeline than its parts were saved
    by, e.g. SDXL over SD 1.x parts, is refused naming what is missing)."""
    from date_diffusion.families import required_components

    index = model_index(model)
    cls = date_pipeline_class(index["_class_name"])
    missing = [name for name in required_components(cls) if name not in index]
    if missing:
        from pathlib import Path

        folder = Path(str(model))
        listed = [name for name, entry in index.items() if not name.startswith("_") and isinstance(entry, list)]
        if folder.is_dir() and not any((folder / name).is_dir() for name in listed):  # no part at all
            why = (f"and the folder holds none of its parts (no folder of {', '.join(listed) or 'any component'}): "
                   "copy the whole saved pipeline there")  # fmt: skip
        else:
            why = (
                "and its index lists none of them: it holds another pipeline's parts; name the pipeline that saved them"  # noqa: E501
            )
        raise ValueError(
            f"{str(model)!r}: its model_index.json names {index['_class_name']}, which needs {', '.join(missing)}, "
            + why
        )
    return cls


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
