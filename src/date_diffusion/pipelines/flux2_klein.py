"""`Flux2KleinDATEPipeline`: FLUX.2 [klein] (rectified flow, Qwen3 text encoder) with DATE.

What is adapted: the text tokens the transformer reads (`prompt_embeds`: the hidden states of several Qwen3 layers,
stacked per token). The transformer takes no guidance input. Classifier-free guidance runs exactly where stock runs
it, `guidance_scale > 1` on a model whose pipeline config is not `is_distilled` (the base models; the step-distilled
ones sample without it, whatever the scale): a separate transformer call per step on the empty prompt's tokens
(or `negative_prompt_embeds`; the stock pipeline takes no negative prompt), combined with the call's
`guidance_scale`; that negative branch is never adapted. x0_hat is the guided `x_t - sigma * v`, decoded as stock
decodes (`pipelines.flux2.Flux2Base`: unpacked by position ids, de-normalised with the VAE's batch-norm
statistics); `output_type="latent"` returns those de-normalised latents, as stock. Text and latent position ids and
the conditioning images' latents (`image`) are fixed inputs.
"""

from __future__ import annotations

from diffusers import Flux2KleinPipeline

from date_diffusion.pipelines.common import DATEPipelineMixin
from date_diffusion.pipelines.flux2 import Flux2Base, Flux2Conditioning
from date_diffusion.pipelines.true_cfg import SeparateNegative


class Flux2KleinAdapter(SeparateNegative, Flux2Base):
    """FLUX.2 [klein]: the Qwen3 tokens; stock classifier-free guidance (empty negative prompt) unless distilled."""

    negative_branch = False  # the stock pipeline takes no negative prompt (its negative branch is the empty one)
    cache_contexts = True

    def guidance_input(self) -> tuple[bool, str]:
        name = type(self.pipe.transformer).__name__
        return False, f"{name} takes no guidance input"

    def no_cfg_reason(self, guidance_scale: float) -> str:
        if self.pipe.config.is_distilled:
            return "the model is step-wise distilled (is_distilled): stock ignores the guidance scale"
        return "it runs at guidance_scale above 1"

    def encode(self, request, device) -> Flux2Conditioning:
        r = request
        tokens, text_ids = self.encode_prompt(r, device)
        negative = negative_ids = None
        if self.cfg(r):  # as stock: the empty prompt, one per prompt of a list
            empty = [""] * len(r.prompt) if isinstance(r.prompt, list) else ""
            negative_tokens, negative_ids = self.pipe.encode_prompt(
                prompt=empty, prompt_embeds=r.negative_prompt_embeds, device=device,
                num_images_per_prompt=r.num_images_per_prompt, max_sequence_length=r.max_sequence_length,
                text_encoder_out_layers=r.text_encoder_out_layers,
            )  # fmt: skip
            negative = [negative_tokens]
        packed = self.pack(request, device, [tokens], negative, [True], ("prompt_embeds",), concat_cfg=False)
        return self.conditioning(request, device, packed, text_ids, negative_ids)

    def latent_output(self, request, latents):
        return self.to_vae(request, latents)

    def unpack(self, request, latents):
        """Klein's stock helper, with the grid size given (as stock calls it)."""
        ids = self.latent_ids(request, latents.shape[0], latents.device)
        return self.pipe._unpack_latents_with_ids(latents, ids, *self.latent_size(request))


class Flux2KleinDATEPipeline(DATEPipelineMixin, Flux2KleinPipeline):
    """FLUX.2 [klein] with Diffusion Adaptive Text Embedding; with no update the output equals
    `Flux2KleinPipeline`'s."""

    adapter = Flux2KleinAdapter
