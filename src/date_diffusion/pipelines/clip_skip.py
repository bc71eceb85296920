"""Stock Stable Diffusion's `clip_skip` for transformers 5, where the stock method fails (a fix of the stock
pipeline, not part of DATE: with it, SD 1.x/2.x take `clip_skip` as the stock pipeline intends)."""

from __future__ import annotations

import torch
from diffusers.pipelines.stable_diffusion import pipeline_stable_diffusion as _stock


class ClipSkipFix:
    """Mixed in front of `StableDiffusionPipeline`: `encode_prompt` with `clip_skip` also for transformers 5."""

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
        # returned by name, as stock's: diffusers' tests read `encode_prompt`'s outputs from its return statement
        prompt_embeds, negative_prompt_embeds = super().encode_prompt(
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
        return prompt_embeds, negative_prompt_embeds

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
