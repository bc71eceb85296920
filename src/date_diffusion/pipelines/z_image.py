"""`ZImageDATEPipeline`: Z-Image (single-stream DiT, rectified flow, a Qwen3 text encoder) with DATE.

What is adapted: the conditional text hidden states the transformer reads (`prompt_embeds`): stock hands the
transformer a list of variable-length tensors, one per prompt (the Qwen3 second-to-last hidden states of the
prompt in its chat template, its padding removed). Here each is padded to a fixed length (`max_sequence_length`,
or the longest given embedding where that is longer) and carried with a mask of its real tokens (packed, never
adapted); the denoiser hands the transformer exactly stock's list (each prompt's real tokens). The padding is never
read, so it receives no gradient and never moves; the fixed length keeps every sample's packing, its normalised
step and DATE's prior independent of the other prompts of the batch. There is no pooled embedding.

Guidance is stock's: classifier-free guidance with `guidance_scale > 0` (a negative prompt, default ""), combined
as stock: `cond + s * (cond - neg)`, with `cfg_normalization` (the guided prediction's norm capped at that multiple
of the conditional one's) and `cfg_truncation` (no guidance once the normalised time passes it); the model's output
is negated as stock hands it to the scheduler, and latents stay float32. At DATE's update steps the reward's x0_hat
is made from that same guided output. The two branches run batched `[negative; positive]` (stock batches
`[positive; negative]`; each sample's result is the same up to float rounding), and at a truncated step both still
run, the negative one unused.

`edit(...)`: FlowEdit on the model's Euler schedule (the template's per-branch `guidance_scale` is Z-Image's `s`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import ZImagePipeline
from diffusers.pipelines.z_image.pipeline_z_image import get_default_z_image_sigmas

from date_diffusion.pipelines.adapter import Adapter, flow_shift
from date_diffusion.pipelines.common import DATEPipelineMixin
from date_diffusion.pipelines.conditioning import PackedConditioning, pack


def padded(embeds: list[torch.Tensor], length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A list of `[L_i, D]` tensors -> (`[B, length, D]` zero-padded, `[B, length]` mask of the real tokens)."""
    tokens = torch.stack([torch.cat([e, e.new_zeros(length - e.shape[0], e.shape[1])]) for e in embeds])
    mask = torch.stack([(torch.arange(length, device=e.device) < e.shape[0]).to(e.dtype) for e in embeds])
    return tokens, mask


def real_tokens(tokens: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
    """The inverse of `padded`: each prompt's real tokens, as stock's list."""
    return [t[m > 0.5] for t, m in zip(tokens, mask)]


@dataclass
class ZImageConditioning(PackedConditioning):
    """Callbacks see and replace `prompt_embeds` as stock's list of variable-length tensors (the positive prompts)."""

    def callback_view(self, latents, cond, uncond) -> dict:
        return {"latents": latents, "prompt_embeds": real_tokens(*self.parts(cond))}

    def apply_callback(self, view, returned, cond, uncond):
        new = returned.get("prompt_embeds", view["prompt_embeds"])
        if new is view["prompt_embeds"]:
            return cond, uncond
        length = self.shapes[0][0]
        if any(e.shape[0] > length for e in new):
            raise ValueError(f"a callback's prompt_embeds hold more than {length} tokens, the length this call packs")
        return pack(*padded([e.to(cond.dtype) for e in new], length)), uncond


class ZImageAdapter(Adapter):
    """Z-Image: Qwen3 hidden states per prompt (variable lengths), float32 latents, stock's CFG rule."""

    latents_first = True

    def default_size(self) -> int:
        return 1024  # stock: `height or 1024`

    def check(self, request):
        scale = self.pipe.vae_scale_factor * 2
        for name in ("height", "width"):
            side = getattr(request, name)
            if side % scale != 0:
                raise ValueError(
                    f"{name.capitalize()} must be divisible by {scale} (got {side}). "
                    f"Please adjust the {name} to a multiple of {scale}."
                )
        self.pipe._cfg_normalization = request.cfg_normalization
        self.pipe._cfg_truncation = request.cfg_truncation
        return request

    def encode(self, request, device) -> ZImageConditioning:
        r, cfg = request, self.cfg(request)
        if r.prompt_embeds is not None and r.prompt is None:
            if cfg and r.negative_prompt_embeds is None:
                raise ValueError(
                    "When `prompt_embeds` is provided without `prompt`, "
                    "`negative_prompt_embeds` must also be provided for classifier-free guidance."
                )
            positive, negative = r.prompt_embeds, r.negative_prompt_embeds
        else:
            copy = lambda p: list(p) if isinstance(p, list) else p  # noqa: E731  (stock rewrites a list in place)
            positive, negative = self.pipe.encode_prompt(
                prompt=copy(r.prompt), negative_prompt=copy(r.negative_prompt), do_classifier_free_guidance=cfg,
                prompt_embeds=r.prompt_embeds, negative_prompt_embeds=r.negative_prompt_embeds, device=device,
                max_sequence_length=r.max_sequence_length,
            )  # fmt: skip
        n = r.num_images_per_prompt or 1
        positive = [e for e in positive for _ in range(n)]
        negative = [e for e in negative for _ in range(n)] if cfg and negative else None
        length = max([r.max_sequence_length, *(e.shape[0] for e in [*positive, *(negative or [])])])
        parts = list(padded(positive, length))
        negative_parts = list(padded(negative, length)) if negative is not None else None
        names = ("prompt_embeds", "prompt_masks")
        packed = self.pack(request, device, parts, negative_parts, [True, False], names)
        return ZImageConditioning(**vars(packed))

    def latents(self, request, n, dtype, device):
        # stock samples in float32 whatever the model's dtype
        return self.pipe.prepare_latents(n, self.pipe.transformer.in_channels, request.height, request.width,
                                         torch.float32, device, request.generator, request.latents)  # fmt: skip

    def timesteps(self, request, device, scheduler=None, latents=None):
        scheduler = self.pipe.scheduler if scheduler is None else scheduler
        steps = request.num_inference_steps
        sigmas = get_default_z_image_sigmas(steps) if request.sigmas is None else request.sigmas
        if latents is not None:
            height, width = latents.shape[2:]
        else:  # the latents' size, as stock `prepare_latents` makes them
            patch = self.pipe.vae_scale_factor * 2
            height, width = (2 * (int(side) // patch) for side in (request.height, request.width))
        mu = flow_shift(scheduler, (height // 2) * (width // 2), max_shift=1.15)
        return super().timesteps(request, device, scheduler, sigmas=sigmas, mu=mu)

    def denoiser(self, request, cond):
        pipe = self.pipe

        def denoise(x, t, packed):
            feats = real_tokens(*cond.parts(packed))
            timestep = (1000 - t.expand(x.shape[0])) / 1000
            latents = list(x.to(pipe.transformer.dtype).unsqueeze(2).unbind(dim=0))
            out = pipe.transformer(latents, timestep, feats, joint_attention_kwargs=pipe.joint_attention_kwargs,
                                   return_dict=False)[0]  # fmt: skip
            return -torch.stack([o.float() for o in out], dim=0).squeeze(2)  # stock negates what the scheduler takes

        return denoise

    def guidance(self, request, cond, n_steps):
        truncation = request.cfg_truncation
        truncated = None
        if truncation is not None and float(truncation) <= 1:
            truncated = lambda t: (1000 - float(t)) / 1000 > truncation  # noqa: E731  (stock's normalised time)
        normalization = request.cfg_normalization

        def rule(state, uncond_out, cond_out, scale):
            # stock's rule on its (negated) outputs, which commute with it: pos + s * (pos - neg), norm capped
            if scale <= 0 or (truncated is not None and truncated(state.timestep)):
                return cond_out  # stock runs the positive branch alone here
            out = []
            for pos, neg in zip(cond_out, uncond_out):
                pred = pos + scale * (pos - neg)
                if normalization and float(normalization) > 0.0:
                    ori_norm, new_norm = torch.linalg.vector_norm(pos), torch.linalg.vector_norm(pred)
                    max_norm = ori_norm * float(normalization)
                    if new_norm > max_norm:
                        pred = pred * (max_norm / new_norm)
                out.append(pred)
            return torch.stack(out, dim=0)

        return {"rule": rule}

    def no_cfg_reason(self, guidance_scale: float) -> str:
        return "it runs at guidance_scale above 0"


class ZImageDATEPipeline(DATEPipelineMixin, ZImagePipeline):
    """Z-Image with Diffusion Adaptive Text Embedding; with no update the output equals `ZImagePipeline`'s."""

    adapter = ZImageAdapter
