"""The model families DATE supports: one record per family, and everything else derives from this table.

Loading (`pipelines.loading`), the auto class (`DATEPipeline`), the command line's `--family` choices and help,
the default reward and the tiny decoder of each family, and the tests' family lists all read `FAMILIES`. Adding a
family means one pipeline module under `pipelines/` and one record here; a plugin (`plugins.py`) adds its own with
`register(Family(...))`, and every lookup here (`by_name`, `by_pipeline_class`, `by_single_file_type`,
`all_families`) sees it.

This module imports nothing heavy: the command line builds its parsers from it before torch is imported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import import_module

from date_diffusion import plugins

# The paper's reward model, and the CLIP the paper scores its COCO table with (transformers format).
PAPER_REWARD = "clip-l"
PAPER_EVAL_CLIP = "clip:laion/CLIP-ViT-g-14-laion2B-s12B-b42K"


EDIT_STEPS = 100
EDIT_SKIP = 36
SKIP_FRACTION = EDIT_SKIP / EDIT_STEPS
CFG_SRC = 3.5
CFG_TAR = 15.0


@dataclass(frozen=True)
class EditDefaults:
    """editor: `ddpm` or `flowedit`; steps; skip: steps not regenerated at `steps` (FlowEdit: steps - n_max);
    cfg_src, cfg_tar: guidance of the source (inversion) and target branch."""

    editor: str
    steps: int
    skip: int
    cfg_src: float
    cfg_tar: float

    @property
    def skip_fraction(self) -> float:
        return self.skip / self.steps

    def skip_for(self, steps: int) -> int:
        """The default skip for another step count (the same fraction)."""
        return round(self.skip_fraction * steps)


DDPM_EDIT = EditDefaults("ddpm", EDIT_STEPS, EDIT_SKIP, CFG_SRC, CFG_TAR)
FLOWEDIT_SD3 = EditDefaults("flowedit", 50, 50 - 33, 3.5, 13.5)  # FlowEdit's SD3 setting: T 50, n_max 33
FLOWEDIT_FLUX = EditDefaults("flowedit", 28, 28 - 24, 1.5, 5.5)  # FlowEdit's FLUX setting: T 28, n_max 24
# FlowEdit has no Z-Image setting: its SD3 one (real CFG, T 50, n_max 33, guidance 3.5 / 13.5) in Z-Image's guidance
# convention (`cond + s * (cond - neg)`: s = w - 1); untested on real weights
FLOWEDIT_Z_IMAGE = EditDefaults("flowedit", 50, 50 - 33, 2.5, 12.5)


@dataclass(frozen=True)
class Family:
    """What the project knows about one model family.

    name: the short name (`--family`); stock: the stock diffusers pipeline class; module, date_class: where the
    DATE pipeline lives (`date_diffusion.pipelines.<module>`); single_file_types: diffusers' single-file model
    types (`infer_diffusers_model_type`) that are this family; sampling: sampling defaults that replace the stock
    pipeline's (the paper's, where the paper ran the family; empty: the stock `__call__` defaults); reward: the
    default reward spec; eval_clip: the benchmark's default held-out CLIP; tiny_decoder: the TAESD-style decoder
    of the approximate reward path; bf16: released weights are bfloat16 (`--dtype auto` prefers it on CUDA);
    paper_scheduler: the sampler the paper ran the family with (`schedulers.SCHEDULERS` name), which
    `--paper-defaults` puts in place of whatever scheduler a checkpoint ships; aliases: diffusers pipeline classes
    that are this family under another name (the same components and text-to-image sampling; a folder whose
    `model_index.json` names one loads into the family's DATE pipeline, e.g. an LCM checkpoint as shipped, an SD 1.5
    model with an LCM scheduler).
    """

    name: str
    title: str
    stock: str
    module: str
    date_class: str
    single_file_types: tuple[str, ...]
    tiny_decoder: str
    bf16: bool = False
    sampling: dict = field(default_factory=dict)
    paper_scheduler: str | None = None
    aliases: tuple[str, ...] = ()
    reward: str = PAPER_REWARD
    eval_clip: str = PAPER_EVAL_CLIP
    edit: EditDefaults | None = None  # its editor (`pipe.edit`, `date-diffusion edit`) and defaults; None: no editing

    def date_pipeline(self) -> type:
        """The DATE pipeline class (imports diffusers)."""
        return getattr(import_module(f"date_diffusion.pipelines.{self.module}"), self.date_class)

    def stock_pipeline(self) -> type:
        """The stock diffusers pipeline class (imports diffusers)."""
        return getattr(import_module("diffusers"), self.stock)


FAMILIES: tuple[Family, ...] = (
    Family(
        "sd",
        "Stable Diffusion 1.x/2.x",
        "StableDiffusionPipeline",
        "stable_diffusion",
        "StableDiffusionDATEPipeline",
        ("v1", "v2"),
        "madebyollin/taesd",
        sampling={"num_inference_steps": 50, "guidance_scale": 8.0},  # the paper: DDIM 50, guidance 8
        paper_scheduler="ddim",
        aliases=("LatentConsistencyModelPipeline",),
        edit=DDPM_EDIT,
    ),
    Family(
        "sdxl",
        "SDXL",
        "StableDiffusionXLPipeline",
        "stable_diffusion_xl",
        "StableDiffusionXLDATEPipeline",
        ("xl_base", "playground-v2-5"),
        "madebyollin/taesdxl",
        edit=DDPM_EDIT,
    ),
    Family(
        "sd3",
        "Stable Diffusion 3",
        "StableDiffusion3Pipeline",
        "stable_diffusion_3",
        "StableDiffusion3DATEPipeline",
        ("sd3", "sd35_medium", "sd35_large"),
        "madebyollin/taesd3",
        bf16=True,
        edit=FLOWEDIT_SD3,
    ),
    Family(
        "flux",
        "FLUX",
        "FluxPipeline",
        "flux",
        "FluxDATEPipeline",
        ("flux-dev", "flux-schnell"),
        "madebyollin/taef1",
        bf16=True,
        edit=FLOWEDIT_FLUX,
    ),
    Family(
        "flux2",
        "FLUX.2 [dev]",
        "Flux2Pipeline",
        "flux2",
        "Flux2DATEPipeline",
        (),  # diffusers loads no FLUX.2 pipeline from a single file (its transformer only)
        "madebyollin/taef2",
        bf16=True,
        edit=FLOWEDIT_FLUX,  # FlowEdit's FLUX.1 setting (a guidance-distilled flow model); untested on FLUX.2
    ),
    Family(
        "flux2-klein",
        "FLUX.2 [klein]",
        "Flux2KleinPipeline",
        "flux2_klein",
        "Flux2KleinDATEPipeline",
        (),  # diffusers loads no FLUX.2 pipeline from a single file (its transformer only)
        "madebyollin/taef2",  # the FLUX.2 VAE
        bf16=True,
        edit=FLOWEDIT_SD3,  # FlowEdit's setting for a flow model with classifier-free guidance; untested on klein
    ),
    Family(
        "pixart",
        "PixArt-alpha",
        "PixArtAlphaPipeline",
        "pixart",
        "PixArtAlphaDATEPipeline",
        (),
        "madebyollin/taesd",
        edit=DDPM_EDIT,
    ),
    Family(
        "pixart-sigma",
        "PixArt-Sigma",
        "PixArtSigmaPipeline",
        "pixart_sigma",
        "PixArtSigmaDATEPipeline",
        (),
        "madebyollin/taesdxl",  # PixArt-Sigma decodes with the SDXL VAE
        edit=DDPM_EDIT,
    ),
    Family(
        "qwen-image",
        "Qwen-Image",
        "QwenImagePipeline",
        "qwen_image",
        "QwenImageDATEPipeline",
        (),  # diffusers loads no single-file Qwen-Image pipeline
        # none: the published tiny decoder of its (Wan 2.1) VAE, madebyollin/taew2_1, is a TAEHV video decoder, not
        # an AutoencoderTiny; --reward-decoder tiny is refused, --reward-resolution works
        "",
        bf16=True,
        edit=None,  # the editor sets guidance_scale per branch; Qwen-Image guides with true_cfg_scale
    ),
    Family(
        "z-image",
        "Z-Image",
        "ZImagePipeline",
        "z_image",
        "ZImageDATEPipeline",
        ("z-image-turbo",),
        "madebyollin/taef1",  # Z-Image decodes with the FLUX.1 VAE
        bf16=True,
        edit=FLOWEDIT_Z_IMAGE,
    ),
    Family(
        "sana",
        "SANA",
        "SanaPipeline",
        "sana",
        "SanaDATEPipeline",
        (),  # diffusers reads SANA single files for the transformer only; SanaPipeline has no from_single_file
        "madebyollin/taesana",  # SANA's DC-AE (f32c32)
        bf16=True,
        edit=None,  # FlowEdit integrates with Euler steps; SANA ships a multistep DPM-Solver
    ),
    Family(
        "chroma",
        "Chroma",
        "ChromaPipeline",
        "chroma",
        "ChromaDATEPipeline",
        ("chroma",),
        "madebyollin/taef1",  # Chroma decodes with the FLUX.1 VAE
        bf16=True,
        edit=FLOWEDIT_SD3,  # FlowEdit's setting for a real-CFG flow model (FLUX's is for its guidance input)
    ),
    Family(
        "wan",
        "Wan 2.x (text-to-video)",
        "WanPipeline",
        "wan",
        "WanDATEPipeline",
        (),
        "",  # none: its published tiny decoder, madebyollin/taew2_1, is a TAEHV video decoder, not an AutoencoderTiny
        bf16=True,
    ),
    Family(
        "ltx",
        "LTX-Video (text-to-video)",
        "LTXPipeline",
        "ltx",
        "LTXDATEPipeline",
        ("ltx-video", "ltx-video-0.9.1", "ltx-video-0.9.5", "ltx-video-0.9.7"),
        # none: no AutoencoderTiny exists for LTX-Video's 128-channel video latents (tiny video decoders published
        # for other LTX latents, e.g. LTX-2's, are TAEHVs, not AutoencoderTiny); --reward-decoder refuses videos
        "",
        bf16=True,
    ),
)
NAMES: tuple[str, ...] = tuple(f.name for f in FAMILIES)  # the built-in families' (`names()`: with plugins')
_REGISTERED: list[Family] = []


def register(family: Family) -> None:
    """Add a family (a plugin's): the lookups below see it. A name, DATE class or pipeline class another family
    has already is refused (registering the same record again does nothing)."""
    if not isinstance(family, Family):
        raise TypeError(f"register() takes a Family record, got {type(family).__name__}")
    if family in _REGISTERED:
        return
    names = lambda f: {f.name, f.date_class, f.stock, *f.aliases}
    for known in (*FAMILIES, *_REGISTERED):
        shared = names(family) & names(known)
        if shared:
            raise ValueError(f"family {family.name!r} takes {', '.join(sorted(shared))} of family {known.name!r}")
    _REGISTERED.append(family)


def all_families() -> tuple[Family, ...]:
    """The built-in families, then the plugins' (loaded on first use)."""
    plugins.load()
    return (*FAMILIES, *_REGISTERED)


def names() -> tuple[str, ...]:
    return tuple(f.name for f in all_families())


def by_name(name: str) -> Family:
    for family in all_families():
        if family.name == name:
            return family
    raise ValueError(f"unknown family {name!r}; use one of {', '.join(names())}")


def by_pipeline_class(class_name: str) -> Family:
    """The family of a stock, DATE or alias pipeline class name (`StableDiffusionXLPipeline`,
    `StableDiffusionXLDATEPipeline`, `LatentConsistencyModelPipeline`), e.g. a checkpoint's `model_index.json`
    `_class_name`. Another class is refused; where it is a diffusers pipeline with a family's components, the
    message names the line that loads its folder as that family."""
    for family in all_families():
        if class_name in (family.stock, family.date_class, *family.aliases):
            return family
    supported = ", ".join(name for f in all_families() for name in (f.stock, *f.aliases))
    raise ValueError(f"no DATE pipeline for {class_name!r}; supported: {supported}{_same_components(class_name)}")


def _same_components(class_name: str) -> str:
    """For a diffusers pipeline class whose components are a family's stock pipeline's: how to load it as that
    family (imports diffusers; only on the way to an error)."""
    import diffusers

    def components(cls) -> set[str]:
        return set(required_components(cls))

    try:
        given = components(getattr(diffusers, class_name))
    except (AttributeError, ImportError, TypeError, ValueError):  # not a diffusers pipeline (or not installed)
        return ""
    for family in all_families():
        if components(family.stock_pipeline()) == given:
            return (
                f". {class_name} has the components of {family.stock}: if the folder holds a {family.title} "
                f"text-to-image model, {family.date_class}.from_pretrained(folder) loads it as one"
            )
    return ""


def required_components(cls) -> list[str]:
    """The components a pipeline class cannot be built without (its `__init__` parameters without a default)."""
    import inspect

    params = inspect.signature(cls.__init__).parameters.values()
    return [p.name for p in params if p.name != "self" and p.default is inspect.Parameter.empty]


def by_single_file_type(model_type: str) -> Family | None:
    """The family of a diffusers single-file model type, or None."""
    return next((f for f in all_families() if model_type in f.single_file_types), None)
