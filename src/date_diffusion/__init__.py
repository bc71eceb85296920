"""DATE: Diffusion Adaptive Text Embedding for text-to-image diffusion models.

Names are imported lazily so that light parts (the update rule, the toy world's renderer and evaluator) do not
pay for importing diffusers and transformers.
"""

from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {
    "DATEConfig": "date_diffusion.core.config",
    "UpdateResult": "date_diffusion.core.update",
    "date_update": "date_diffusion.core.update",
    "date_sample": "date_diffusion.sampling.loop",
    "StableDiffusionDATEPipeline": "date_diffusion.pipelines.stable_diffusion",
    "DATEPipelineOutput": "date_diffusion.pipelines.stable_diffusion",
    "Reward": "date_diffusion.rewards.base",
    "WeightedReward": "date_diffusion.rewards.base",
    "CLIPScoreReward": "date_diffusion.rewards.clip",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'date_diffusion' has no attribute {name!r}")
