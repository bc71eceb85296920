"""A negative branch computed by a separate call, as several stock pipelines run it (mixed into a family's adapter
in front of `Adapter`):

- `SeparateNegative`: after the positive call, a call of the adapter's `denoiser(request, cond, negative=True)`,
  combined at `cfg_scale(request)`, the call's `guidance_scale` (Chroma, FLUX.2 [klein]; a callback that changes
  `pipe._guidance_scale` can only turn guidance off, as in stock);
- `TrueCFG`: true classifier-free guidance of guidance-distilled models (FLUX's `true_cfg_scale`): the same call,
  only with `true_cfg_scale > 1` and a negative prompt (or negative embeddings), combined at `true_cfg_scale`.
"""

from __future__ import annotations


class SeparateNegative:
    """The negative branch as a separate call of the adapter's denoiser, combined at `cfg_scale(request)`."""

    def cfg_scale(self, request) -> float:
        return request.guidance_scale

    def guidance(self, request, cond, n_steps):
        if not self.cfg(request):
            return {}
        return {"uncond_denoise": self.denoiser(request, cond, negative=True), "cfg_scale": self.cfg_scale(request)}


class TrueCFG(SeparateNegative):
    """An adapter's negative branch as true CFG (the family's guidance is otherwise an input of the model)."""

    negative_branch = False  # a negative prompt acts only with `true_cfg_scale > 1`
    guidance_is_cfg_scale = False  # true CFG runs at `true_cfg_scale`
    negative_embeds = ("negative_prompt_embeds", "negative_pooled_prompt_embeds")  # what stands in for the prompt

    def check(self, request):
        request = super().check(request)
        given = request.prompt_embeds, request.negative_prompt_embeds
        if self.cfg(request) and None not in given and given[0].shape != given[1].shape:  # the stock check
            raise ValueError(
                "`prompt_embeds` and `negative_prompt_embeds` must have the same shape when passed directly, but"
                f" got: `prompt_embeds` {given[0].shape} != `negative_prompt_embeds` {given[1].shape}."
            )
        return request

    def cfg(self, request) -> bool:
        """True CFG, the only negative branch: a negative prompt or every one of `negative_embeds`, and
        `true_cfg_scale` above 1."""
        embeds = [getattr(request, name) for name in self.negative_embeds]
        negative = request.negative_prompt is not None or all(e is not None for e in embeds)
        return self.cfg_at(request.guidance_scale, negative, request.true_cfg_scale)

    def cfg_at(self, guidance_scale: float, negative: bool, true_cfg_scale: float) -> bool:
        return true_cfg_scale > 1 and negative

    def no_cfg_reason(self, guidance_scale: float) -> str:
        return "true CFG runs with true_cfg_scale above 1 and a negative prompt"

    def cfg_scale(self, request) -> float:
        return request.true_cfg_scale
