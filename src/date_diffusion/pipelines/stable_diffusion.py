"""`StableDiffusionDATEPipeline`: diffusers' Stable Diffusion 1.x/2.x pipeline with DATE sampling."""

from __future__ import annotations

import torch
from diffusers import StableDiffusionPipeline
from diffusers.pipelines.stable_diffusion import pipeline_stable_diffusion as _stock

from date_diffusion.editing.interface import EditingMixin
from date_diffusion.pipelines.common import DATEPipelineMixin, DATEPipelineOutput

__all__ = ["DATEPipelineOutput", "StableDiffusionDATEPipeline"]


class StableDiffusionDATEPipeline(DATEPipelineMixin, EditingMixin, StableDiffusionPipeline):
    """Stable Diffusion 1.x/2.x with Diffusion Adaptive Text Embedding.

    Loads like the stock pipeline (`from_pretrained(id_or_path)`, or `from_pipe(existing_pipeline)`) and takes
    the stock arguments, plus `date=DATEConfig(...)`, `reward=...` (see `DATEOptions`). With `date=None` (or
    `rho=0`, or no update index in the run) the output equals `StableDiffusionPipeline` for the same inputs.
    What is adapted: the text encoder's token embeddings (`prompt_embeds`, [B, 77, 768] for SD 1.x). IP-Adapter
    image embeddings (`ip_adapter_image` / `ip_adapter_image_embeds`, as the stock pipeline prepares them) are
    carried beside them and never moved. `edit(...)`: text-guided editing by edit-friendly DDPM inversion
    (`editing.interface`).
    """

    def _date_default_size(self) -> int:
        return self.unet.config.sample_size * self.vae_scale_factor

    def encode_prompt(
        self,
        prompt,
        device,
        num_images_per_prompt,
        do_classifier_free_guidance,
        negative_prompt=None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        lora_scale: float | None = None,
        clip_skip: int | None = None,
    ):
        """The stock `encode_prompt` (same arguments and outputs), with `clip_skip` also for transformers 5.

        Stock diffusers (0.42) takes the final LayerNorm for `clip_skip` from `text_encoder.text_model`, which
        transformers 5's flattened `CLIPTextModel` no longer has (its children are `embeddings`, `encoder`,
        `final_layer_norm`), so stock `clip_skip` raises AttributeError there. Only in that case (a `clip_skip`,
        no `prompt_embeds`, an encoder without `text_model`) the positive prompt's embeddings are computed here as
        stock intends: hidden state `-(clip_skip + 1)` through the final LayerNorm, with stock's LoRA scaling,
        textual-inversion expansion, truncation warning and attention mask. They are then handed to the stock
        method as `prompt_embeds`, which does the rest (dtype, `num_images_per_prompt`, negative prompt, LoRA
        state). Everything else is the stock method unchanged.

        Computing it here rather than giving the encoder a temporary `text_model` attribute for the stock call:
        nothing of the user's model is touched even for a moment (text encoders are shared between pipelines,
        e.g. by `from_pipe`, and may be used from other threads or wrapped by `torch.compile` / accelerate hooks).
        """
        text_encoder = self.text_encoder
        own = (
            clip_skip is not None
            and prompt_embeds is None
            and text_encoder is not None
            and not hasattr(text_encoder, "text_model")
        )
        if own:
            prompt_embeds = self._date_clip_skip_embeds(prompt, device, lora_scale, clip_skip)
            clip_skip = None  # stock: embeddings given, no text encoding left to do for the positive prompt
        return super().encode_prompt(
            prompt,
            device,
            num_images_per_prompt,
            do_classifier_free_guidance,
            negative_prompt=negative_prompt,
            prompt_embeds=prompt_embeds,
            negative_prompt_embeds=negative_prompt_embeds,
            lora_scale=lora_scale,
            clip_skip=clip_skip,
        )

    def _date_clip_skip_embeds(self, prompt, device, lora_scale, clip_skip: int) -> torch.Tensor:
        """The positive prompt's `clip_skip` embeddings, [B, T, D], exactly as stock `encode_prompt` computes them
        (before its dtype cast and per-prompt duplication), for a text encoder with the final LayerNorm at its top
        level. Uses the stock module's own helpers, so LoRA and textual inversion act as in the stock call."""
        text_encoder, tokenizer = self.text_encoder, self.tokenizer
        final_layer_norm = getattr(text_encoder, "final_layer_norm", None)
        if final_layer_norm is None:
            raise AttributeError(
                f"clip_skip needs the text encoder's final LayerNorm: {type(text_encoder).__name__} has neither "
                "`text_model.final_layer_norm` nor `final_layer_norm`"
            )
        scaled = lora_scale is not None and isinstance(self, _stock.StableDiffusionLoraLoaderMixin)
        if scaled:  # as stock: PEFT scales multiplicatively (undone below), the legacy path sets the scale
            if _stock.USE_PEFT_BACKEND:
                _stock.scale_lora_layers(text_encoder, lora_scale)
            else:
                _stock.adjust_lora_scale_text_encoder(text_encoder, lora_scale)
        try:
            if isinstance(self, _stock.TextualInversionLoaderMixin):
                prompt = self.maybe_convert_prompt(prompt, tokenizer)
            max_length = tokenizer.model_max_length
            inputs = tokenizer(
                prompt, padding="max_length", max_length=max_length, truncation=True, return_tensors="pt"
            )
            ids = inputs.input_ids
            untruncated = tokenizer(prompt, padding="longest", return_tensors="pt").input_ids
            if untruncated.shape[-1] >= ids.shape[-1] and not torch.equal(ids, untruncated):
                removed = tokenizer.batch_decode(untruncated[:, max_length - 1 : -1])
                _stock.logger.warning(
                    "The following part of your input was truncated because CLIP can only handle sequences up to"
                    f" {max_length} tokens: {removed}"
                )
            mask = None
            if getattr(text_encoder.config, "use_attention_mask", False):
                mask = inputs.attention_mask.to(device)
            out = text_encoder(ids.to(device), attention_mask=mask, output_hidden_states=True)
            # all hidden states: the embeddings' output, then each layer's (before the final LayerNorm)
            hidden_states = out.hidden_states if hasattr(out, "hidden_states") else out[-1]
            return final_layer_norm(hidden_states[-(clip_skip + 1)])
        finally:
            if scaled and _stock.USE_PEFT_BACKEND:
                _stock.unscale_lora_layers(text_encoder, lora_scale)

    def _date_encode(self, call, options, device):
        cond, uncond = self._date_encode_prompt(call, device)
        uncond_parts = [uncond] if self._date_cfg() else None
        names, negative_names = ("prompt_embeds",), ("negative_prompt_embeds",)
        return self._date_pack(call, device, [cond], uncond_parts, [True], names, negative_names)

    def _date_denoise(self, call, cond):
        timestep_cond = self._date_timestep_cond(cond)

        def denoise(x, t, packed):
            tokens, *images = cond.parts(packed)  # images: the IP-Adapter embeddings, one per adapter
            return self.unet(
                x,
                t,
                encoder_hidden_states=tokens,
                timestep_cond=timestep_cond,
                added_cond_kwargs={"image_embeds": images} if images else None,
                cross_attention_kwargs=self.cross_attention_kwargs,
                return_dict=False,
            )[0]

        return denoise

    def _date_finish_image(self, call, image, dtype, device):
        return self.run_safety_checker(image, device, dtype)

    def _date_tuple(self, image, nsfw):
        return (image, nsfw)

    def _date_attend_excite(self, call, options: dict, n_steps: int, cond):
        from date_diffusion.sampling.attend_excite import AttendExcite, noun_token_indices

        options = dict(options)
        prompts = [call.prompt] if isinstance(call.prompt, str) else list(call.prompt)
        indices = options.pop("token_indices", None)
        subjects = options.pop("subjects", None)
        if indices is None:
            if subjects is None:
                raise ValueError("attend_and_excite needs `token_indices` (one list per prompt) or `subjects` (words)")
            indices = [noun_token_indices(self.tokenizer, p, set(subjects)) for p in prompts]
        elif indices and isinstance(indices[0], int):
            indices = [indices]
        if len(indices) != len(prompts):
            raise ValueError(f"attend_and_excite token_indices: {len(indices)} lists for {len(prompts)} prompts")
        per_image = [ind for ind in indices for _ in range(call.num_images_per_prompt)]
        return AttendExcite(self, per_image, n_steps, tokens=lambda packed: cond.parts(packed)[0], **options)
