"""`StableDiffusionDATEPipeline`: diffusers' Stable Diffusion 1.x/2.x pipeline with DATE.

What is adapted: the text encoder's token embeddings (`prompt_embeds`, [B, 77, 768] for SD 1.x). IP-Adapter image
embeddings (as the stock pipeline prepares them) are carried beside them and never moved. Attend-and-Excite runs
in the same loop (`attend_and_excite=`). `edit(...)`: edit-friendly DDPM inversion.
"""

from __future__ import annotations

from diffusers import StableDiffusionPipeline

from date_diffusion.pipelines.adapter import LEGACY_CALLBACK, Adapter, timestep_cond
from date_diffusion.pipelines.clip_skip import ClipSkipFix
from date_diffusion.pipelines.common import DATEPipelineMixin, DATEPipelineOutput

__all__ = ["DATEPipelineOutput", "StableDiffusionAdapter", "StableDiffusionDATEPipeline"]


class StableDiffusionAdapter(Adapter):
    """SD 1.x/2.x: one text encoder's tokens, a UNet (with LCM's guidance embedding where it has one)."""

    deprecated_kwargs = LEGACY_CALLBACK

    def default_size(self) -> int:
        return self.pipe.unet.config.sample_size * self.pipe.vae_scale_factor

    def encode(self, request, device):
        cond, uncond = self.encode_prompt(request, device)
        names, negative_names = ("prompt_embeds",), ("negative_prompt_embeds",)
        return self.pack(
            request, device, [cond], [uncond] if self.cfg(request) else None, [True], names, negative_names
        )

    def denoiser(self, request, cond):
        pipe, guidance_embedding = self.pipe, timestep_cond(self.pipe, cond)

        def denoise(x, t, packed):
            tokens, *images = cond.parts(packed)  # images: the IP-Adapter embeddings, one per adapter
            return pipe.unet(x, t, encoder_hidden_states=tokens, timestep_cond=guidance_embedding,
                             added_cond_kwargs={"image_embeds": images} if images else None,
                             cross_attention_kwargs=pipe.cross_attention_kwargs, return_dict=False)[0]  # fmt: skip

        return denoise

    def finish(self, request, image, dtype, device):
        return self.pipe.run_safety_checker(image, device, dtype)

    def output_tuple(self, image, nsfw) -> tuple:
        return (image, nsfw)

    def attend_excite(self, request, options: dict, n_steps: int, cond):
        """Attend-and-Excite's hook: token indices per prompt (given, or found for `subjects`), one list per image."""
        from date_diffusion.sampling.attend_excite import AttendExcite, noun_token_indices

        options = dict(options)
        prompts = [request.prompt] if isinstance(request.prompt, str) else list(request.prompt)
        indices, subjects = options.pop("token_indices", None), options.pop("subjects", None)
        if indices is None:
            if subjects is None:
                raise ValueError("attend_and_excite needs `token_indices` (one list per prompt) or `subjects` (words)")
            indices = [noun_token_indices(self.pipe.tokenizer, p, set(subjects)) for p in prompts]
        elif indices and isinstance(indices[0], int):
            indices = [indices]
        if len(indices) != len(prompts):
            raise ValueError(f"attend_and_excite token_indices: {len(indices)} lists for {len(prompts)} prompts")
        per_image = [ind for ind in indices for _ in range(request.num_images_per_prompt)]
        return AttendExcite(self.pipe, per_image, n_steps, tokens=lambda packed: cond.parts(packed)[0], **options)


class StableDiffusionDATEPipeline(DATEPipelineMixin, ClipSkipFix, StableDiffusionPipeline):
    """Stable Diffusion 1.x/2.x with Diffusion Adaptive Text Embedding.

    Loads like the stock pipeline (`from_pretrained(id_or_path)`, or `from_pipe(existing_pipeline)`) and takes the
    stock arguments, plus `date=DATEConfig(...)`, `reward=...` (see `DATEOptions`). With `date=None` (or `rho=0`,
    or no update index in the run) the output equals `StableDiffusionPipeline` for the same inputs.
    """

    adapter = StableDiffusionAdapter
