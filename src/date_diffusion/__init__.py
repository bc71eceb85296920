"""DATE: Diffusion Adaptive Text Embedding for text-to-image diffusion models.

Names are imported lazily so that light parts (the update rule, the toy world's renderer and evaluator) do not
pay for importing diffusers and transformers.
"""

from importlib import import_module

from date_diffusion import quiet
from date_diffusion.version import __version__ as __version__  # (re-exported)

quiet.install()  # the libraries' remarks that tell this package's users nothing (quiet.REMARKS), and only those

_EXPORTS = {
    "DATEConfig": "date_diffusion.core.config",
    "UpdateResult": "date_diffusion.core.update",
    "date_update": "date_diffusion.core.update",
    "date_sample": "date_diffusion.sampling.date_step",
    "DATEPipeline": "date_diffusion.pipelines",
    "load_date_pipeline": "date_diffusion.pipelines",
    "DATEOptions": "date_diffusion.pipelines.common",
    "DATEPipelineOutput": "date_diffusion.pipelines.common",
    "DATEVideoPipelineOutput": "date_diffusion.pipelines.common",
    "StableDiffusionDATEPipeline": "date_diffusion.pipelines.stable_diffusion",
    "StableDiffusionXLDATEPipeline": "date_diffusion.pipelines.stable_diffusion_xl",
    "StableDiffusion3DATEPipeline": "date_diffusion.pipelines.stable_diffusion_3",
    "FluxDATEPipeline": "date_diffusion.pipelines.flux",
    "Flux2DATEPipeline": "date_diffusion.pipelines.flux2",
    "Flux2KleinDATEPipeline": "date_diffusion.pipelines.flux2_klein",
    "PixArtAlphaDATEPipeline": "date_diffusion.pipelines.pixart",
    "PixArtSigmaDATEPipeline": "date_diffusion.pipelines.pixart_sigma",
    "QwenImageDATEPipeline": "date_diffusion.pipelines.qwen_image",
    "ZImageDATEPipeline": "date_diffusion.pipelines.z_image",
    "WanDATEPipeline": "date_diffusion.pipelines.wan",
    "SanaDATEPipeline": "date_diffusion.pipelines.sana",
    "ChromaDATEPipeline": "date_diffusion.pipelines.chroma",
    "LTXDATEPipeline": "date_diffusion.pipelines.ltx",
    "Reward": "date_diffusion.rewards.base",
    "WeightedReward": "date_diffusion.rewards.base",
    "CLIPScoreReward": "date_diffusion.rewards.clip",
    "PickScoreReward": "date_diffusion.rewards.clip",
    "ImageRewardReward": "date_diffusion.rewards.imagereward",
    "AestheticReward": "date_diffusion.rewards.aesthetic",
    "reward_from_spec": "date_diffusion.rewards.registry",
    "resolve_settings": "date_diffusion.resolver",
    "Resolved": "date_diffusion.resolver",
    "FAMILIES": "date_diffusion.families",
}
__all__ = sorted([*_EXPORTS, "TOY_WORLD"])


def __getattr__(name):
    if name == "TOY_WORLD":  # the shipped toy world's pipeline folder: DATEPipeline.from_pretrained(TOY_WORLD)
        from date_diffusion.toyworld.world import PIPELINE

        return str(PIPELINE)
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'date_diffusion' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *__all__])
