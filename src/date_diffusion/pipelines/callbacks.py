"""diffusers' step-end callback contract for DATE pipelines: the callback sees the family's stock tensors by their stock
names, and whatever it replaces (latents, embeddings, the guidance scale on the pipeline) takes effect."""

from __future__ import annotations

from date_diffusion.sampling.hooks import StepCallback


def callback_names(request) -> list[str]:
    """The tensor names the call's callback asks for (`PipelineCallback` objects carry their own)."""
    callback = request.callback_on_step_end
    if hasattr(callback, "tensor_inputs"):  # PipelineCallback / MultiPipelineCallbacks, as the stock pipelines
        return list(callback.tensor_inputs)
    return list(request.callback_on_step_end_tensor_inputs or ["latents"])


def callback_hooks(pipe, cfg, request, cond) -> list:
    """The call's callbacks (`callback_on_step_end`, the legacy `callback`) as loop hooks; none when it has none.
    `cfg()`: whether the next step runs classifier-free guidance (the family adapter's)."""
    callback, legacy = request.callback_on_step_end, request.callback
    if callback is None and legacy is None:
        return []
    names = callback_names(request)

    def on_step_end(i, t, state):
        view = cond.callback_view(state["latents"], state["prompt_embeds"], state["negative_prompt_embeds"])
        replaced = {}
        if callback is not None:
            returned = callback(pipe, i, t, {k: view[k] for k in names})
            positive, negative = cond.apply_callback(
                view, returned, state["prompt_embeds"], state["negative_prompt_embeds"]
            )
            latents = returned.get("latents", state["latents"])
            replaced = dict(latents=latents, prompt_embeds=positive, guidance_scale=pipe._guidance_scale)
            replaced["negative_prompt_embeds"] = negative if cfg() else None
        if legacy is not None and i % request.callback_steps == 0:
            legacy(i // getattr(pipe.scheduler, "order", 1), t, replaced.get("latents", state["latents"]))
        return replaced

    return [StepCallback(on_step_end)]
