"""`PixArtSigmaDATEPipeline`: PixArt-Sigma (DiT with T5 conditioning, the SDXL VAE) with DATE.

What is adapted: as PixArt-alpha, the T5 token embeddings (`prompt_embeds`), their attention mask carried fixed.
The stock differences: aspect-ratio bins up to 2048 px (sample size 256), no resolution or aspect-ratio input of
the transformer, 300 tokens by default. Besides the stock legacy `callback`, this pipeline takes diffusers'
`callback_on_step_end`. `edit(...)`: edit-friendly DDPM inversion, at the image's own size.
"""

from __future__ import annotations

from diffusers import PixArtSigmaPipeline
from diffusers.pipelines.pixart_alpha.pipeline_pixart_sigma import ASPECT_RATIO_2048_BIN

from date_diffusion.pipelines.common import DATEPipelineMixin
from date_diffusion.pipelines.pixart import PixArtAlphaAdapter


class PixArtSigmaAdapter(PixArtAlphaAdapter):
    """PixArt-Sigma: PixArt-alpha's adapter with Sigma's bins and no size inputs."""

    bins = {256: ASPECT_RATIO_2048_BIN, **PixArtAlphaAdapter.bins}
    size_conditioned = ()


class PixArtSigmaDATEPipeline(DATEPipelineMixin, PixArtSigmaPipeline):
    """PixArt-Sigma with Diffusion Adaptive Text Embedding; with no update the output equals the stock one's."""

    _callback_tensor_inputs = ["latents", "prompt_embeds", "negative_prompt_embeds"]
    adapter = PixArtSigmaAdapter
