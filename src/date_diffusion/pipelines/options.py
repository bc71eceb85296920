"""DATE's per-call options (the keyword arguments every DATE pipeline adds to the stock ones), and their checks."""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field, fields
from pathlib import Path

from date_diffusion.core.config import DATEConfig
from date_diffusion.core.prediction import check_scheduler
from date_diffusion.core.settings import Integer, Real
from date_diffusion.outputs import unwritable
from date_diffusion.pipelines.embeddings import as_saved
from date_diffusion.sampling.guidance import guidance_refusal


@dataclass(frozen=True, eq=False)
class DATEOptions:
    """DATE's per-call options (the keyword arguments a DATE pipeline adds to the stock ones).

    date: DATE settings; None samples with fixed embeddings.
    reward: the score DATE raises (e.g. `CLIPScoreReward`); required when `date` updates.
    reward_prompt: text the reward scores against (default: `prompt`); needed with `prompt_embeds`.
    save_embeddings: a .safetensors path for the original, final and per-update conditioning, each part with its
        stock name and shape, and metadata (see `pipelines.embeddings`).
    replay_embeddings: a file written by `save_embeddings` (or a loaded `SavedEmbeddings`): re-create the DATE
        sample from its adapted embeddings, without a reward (same prompt, seed and settings give the same image).
    ug_scale, ug_every: baseline data-space reward guidance (`sampling.guidance.UniversalGuidance`) with this
        scale at every `ug_every`-th loop index; uses `reward`, keeps the embedding fixed; epsilon models only.
    gradient_checkpointing: memory-saving mode: recompute denoiser, VAE-decoder and reward activations during the
        backward pass of update steps instead of storing them, and on CPUs (glibc) give the memory freed by each
        part of an update step back to the OS before the next (less memory, a little more time; see
        `sampling.checkpointing`). Same values.
    reward_decoder: APPROXIMATE path: decode x0_hat for the reward with this decoder (e.g. `AutoencoderTiny`)
        instead of the VAE; the final image is still decoded by the VAE. Traces record `reward_decoder`.
    reward_resolution: APPROXIMATE path that keeps the real VAE: x0_hat's latents are resized (bilinear,
        antialiased) so that the decoded image the reward sees is this many pixels per side (e.g. 224 for CLIP,
        whose input size it is anyway) instead of the full image. Traces record it in `reward_decoder`.
    reward_frames: video pipelines: which frames of x0_hat the (image) reward scores, a video's score being the
        mean over them: an int K (default 4) for K evenly spaced latent frames (first and last included), or a
        list of latent-frame indices. Only the chosen latent frames are decoded, each on its own as a one-frame
        clip (`pipelines.reward_path`): exact for the first latent frame, APPROXIMATE for later ones under a
        causal video VAE (Wan's, LTX's), which would decode them with the earlier frames as context. Image
        pipelines ignore it.
    attend_and_excite: Attend-and-Excite in the same loop (UNet cross-attention families): a dict with
        `token_indices` (one list per prompt) or `subjects` (words whose tokens are excited), and optionally
        `max_iter_to_alter` (25), `thresholds`, `scale_factor` (20), `attn_res` ((16, 16)).
    adapt_pooled: also adapt the pooled text embedding (SDXL, SD3, FLUX), normalised jointly per sample.
    ebca: energy-based cross-attention (`sampling.ebca`, UNet families) for this call: an `EbcaConfig` or a dict of
        its fields (`gamma_attn`, `gamma_norm`, `tau`, `iters`).

    Frozen: the template checks the options a call gives once (`prepare`) and runs the checked copy.
    """

    date: DATEConfig | None = None
    reward: object | None = None
    reward_prompt: str | list[str] | None = None
    save_embeddings: str | Path | None = None
    replay_embeddings: object | None = None
    ug_scale: float | None = None
    ug_every: int = 1
    gradient_checkpointing: bool = False
    reward_decoder: object | None = None
    reward_resolution: int | None = None
    reward_frames: int | tuple[int, ...] = 4
    attend_and_excite: dict | None = None
    adapt_pooled: bool = False
    ebca: object | None = None
    # filled by the template: the text the reward scores for each image
    texts: list[str] = field(default_factory=list, repr=False)

    @property
    def updating(self) -> bool:
        """Whether DATE moves the embedding at all in this call."""
        return self.date is not None and self.date.moves


PARAMETERS = [
    inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default)
    for f in fields(DATEOptions)
    if f.name != "texts"
]


def as_list(x, n: int, name: str) -> list:
    if x is None or isinstance(x, str):
        return [x] * n
    if len(x) != n:
        raise ValueError(f"`{name}` has {len(x)} entries but `prompt` has {n}; give one per prompt or a single one")
    return list(x)


# What a pipeline call accepts: wider than the command line's ranges (`core.settings.SAMPLING`), as a stock call
# takes any guidance scale, but never a zero step count (stock: ZeroDivisionError) or a non-finite guidance (stock:
# a black image without a word).
CALL_KINDS = {"num_inference_steps": Integer(1, 10**6), "guidance_scale": Real(-1e6, 1e6)}


def check_sampling(request):
    """The request with its step count and guidance scale through `CALL_KINDS` (numpy scalars count as numbers),
    refused before any work, naming the argument."""
    checked = {}
    for name, kind in CALL_KINDS.items():
        value = getattr(request, name)
        custom_schedule = request.timesteps is not None or request.sigmas is not None
        if value is None or (name == "num_inference_steps" and custom_schedule):
            continue
        checked[name] = kind.check(value, f"`{name}`")
    return dataclasses.replace(request, **checked)


def as_config(date) -> DATEConfig | None:
    """`date=` as a `DATEConfig`: a config, None, or a dict of its fields."""
    if date is None or isinstance(date, DATEConfig):
        return date
    if isinstance(date, dict):
        return DATEConfig.from_dict(date)
    raise TypeError(f"`date` must be a DATEConfig, a dict of its fields or None, got {type(date).__name__}")


def prepare(pipe, request, options: DATEOptions, attend_excite: bool) -> DATEOptions:
    """DATE's arguments of a call to `pipe`, checked before any work, with `texts` (one text per image) filled in
    (`attend_excite`: whether the family supports Attend-and-Excite)."""
    options = dataclasses.replace(options, date=as_config(options.date))
    if isinstance(options.reward, str):
        raise TypeError(
            f"`reward` must be a reward object, got the text {options.reward!r}: build it with "
            "date_diffusion.reward_from_spec(...) (or resolve_settings(...).load_reward())"
        )
    if options.reward is not None and not callable(options.reward):
        raise TypeError(f"`reward` must be callable as reward(images, prompts) -> scores, got {options.reward!r}")
    prompt, prompt_embeds = request.prompt, request.prompt_embeds
    if prompt is not None:
        batch_size = 1 if isinstance(prompt, str) else len(prompt)
    else:  # a tensor, or Z-Image's list of one tensor per prompt
        batch_size = prompt_embeds.shape[0] if hasattr(prompt_embeds, "shape") else len(prompt_embeds)
    guided = options.updating or bool(options.ug_scale)
    if options.replay_embeddings is not None:
        if guided:
            raise ValueError("replay_embeddings re-creates a DATE run: leave `date` and `ug_scale` unset")
        options = dataclasses.replace(options, replay_embeddings=as_saved(options.replay_embeddings))
    if guided and options.reward is None:
        raise ValueError("`date` and `ug_scale` need a `reward`, e.g. reward=CLIPScoreReward.from_pretrained(...)")
    if guided:
        check_reading(pipe.scheduler, bool(options.ug_scale))
    texts = options.reward_prompt if options.reward_prompt is not None else prompt
    if guided and texts is None:
        raise ValueError("with `prompt_embeds`, pass `reward_prompt` (the text the reward scores against)")
    per_prompt = request.per_prompt
    texts = [p for p in as_list(texts, batch_size, "reward_prompt") for _ in range(per_prompt)]
    if guided and not all(isinstance(t, str) and t.strip() for t in texts):  # stock samples an empty prompt
        raise ValueError("the prompt DATE's reward scores is empty: give a non-empty text (or `reward_prompt`)")
    r = options.reward_resolution
    if r is not None and (isinstance(r, bool) or not isinstance(r, int) or r < pipe.vae_scale_factor
                          or r % pipe.vae_scale_factor):  # fmt: skip
        raise ValueError(
            f"reward_resolution must be a positive multiple of {pipe.vae_scale_factor} (the VAE's scale), got {r!r}"
        )
    options = dataclasses.replace(options, reward_frames=check_reward_frames(options.reward_frames))
    if options.save_embeddings is not None:
        if options.replay_embeddings is not None:
            raise ValueError("save_embeddings and replay_embeddings: a replay writes no new embeddings; give one")
        why = unwritable(options.save_embeddings)
        if why:
            raise ValueError(f"save_embeddings {str(options.save_embeddings)!r} cannot be written: {why}")
    if options.attend_and_excite is not None and not attend_excite:
        raise ValueError(
            f"attend_and_excite needs a UNet's cross-attention maps: {type(pipe).__name__} does not support it"
        )
    ip_adapter = request.ip_adapter_image is not None or request.ip_adapter_image_embeds is not None
    if options.ebca is not None:
        options = check_ebca(pipe, ip_adapter, options)
    if options.attend_and_excite is not None and ip_adapter:
        raise ValueError(
            "attend_and_excite replaces the UNet's attention processors, the IP-Adapter's among them: "
            "use it without `ip_adapter_image` / `ip_adapter_image_embeds`"
        )
    return dataclasses.replace(options, texts=texts)


def check_reward_frames(frames) -> int | tuple[int, ...]:
    """`reward_frames=`: a positive int, or a non-empty list of distinct latent-frame indices (as a tuple)."""
    if isinstance(frames, int) and not isinstance(frames, bool):
        if frames < 1:
            raise ValueError(f"reward_frames must be at least 1 (the number of frames the reward scores), got {frames}")
        return frames
    if isinstance(frames, (list, tuple)) and frames and all(isinstance(k, int) and not isinstance(k, bool)
                                                            and k >= 0 for k in frames):  # fmt: skip
        if len(set(frames)) != len(frames):
            raise ValueError(f"reward_frames lists a frame twice: {list(frames)}")
        return tuple(frames)
    raise ValueError(f"reward_frames must be a positive int or a list of latent-frame indices, got {frames!r}")


def check_reading(scheduler, universal_guidance: bool) -> None:
    """The scheduler's clean estimate can be derived (`core.prediction.check_scheduler`: else refused, naming it),
    and with `ug_scale` the model's output is the noise of a variance-preserving input."""
    if check_scheduler(scheduler) == "edm" and universal_guidance:
        raise ValueError(guidance_refusal(scheduler))


def check_ebca(pipe, ip_adapter: bool, options: DATEOptions) -> DATEOptions:
    """`ebca=`: a config, on a UNet with plain cross-attention, without what also replaces or re-runs its attention."""
    from date_diffusion.sampling.ebca import as_ebca_config, cross_attention_names

    options = dataclasses.replace(options, ebca=as_ebca_config(options.ebca))
    if getattr(pipe, "unet", None) is None:
        raise ValueError(f"ebca updates a UNet's cross-attention context: {type(pipe).__name__} has no UNet")
    cross_attention_names(pipe.unet)
    if options.attend_and_excite is not None:
        raise ValueError("ebca and attend_and_excite both replace the UNet's attention processors: use one")
    if ip_adapter:
        raise ValueError("ebca needs the text context alone: use it without IP-Adapter images")
    if options.gradient_checkpointing:
        raise ValueError(
            "ebca carries its context from layer to layer, which recomputed layers cannot replay: "
            "use it without gradient_checkpointing"
        )
    return options
