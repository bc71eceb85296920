"""FID through torchmetrics' `FrechetInceptionDistance`.

Inception-v3 features (comparable to published FID) need torch-fidelity's weights file from a local path
(`inception_weights`; nothing is downloaded). The offline default uses the image tower of a CLIP model (on the
toy world: the held-out toy CLIP) as the feature extractor: its numbers are labelled `fid_clip` and are NOT
comparable to Inception FID.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from date_diffusion.rewards.common import ImageNormalizer, clip_features


class CLIPImageFeatures(nn.Module):
    """uint8 NCHW images -> L2-normalised CLIP image embeddings (a torchmetrics custom feature extractor)."""

    def __init__(self, clip_model):
        super().__init__()
        self.clip = clip_model.eval().requires_grad_(False)
        self.preprocess = ImageNormalizer(clip_model.config.vision_config.image_size)
        self.num_features = clip_model.config.projection_dim

    @torch.no_grad()
    def forward(self, images_uint8: torch.Tensor) -> torch.Tensor:
        pixels = self.preprocess(images_uint8.float() / 255)
        return F.normalize(clip_features(self.clip.get_image_features(pixel_values=pixels)), dim=-1).double()


def frechet_distance(
    real: Iterable[torch.Tensor],
    fake: Iterable[torch.Tensor],
    feature: nn.Module | None = None,
    inception_weights: str | None = None,
) -> float:
    """FID between two streams of uint8 NCHW batches; `feature=None` means Inception (needs its weights)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    # sync_on_compute=False: every image is already in this process (the report runs once, after all processes
    # of a multi-process launch finished), so there is nothing to all-gather
    if feature is None:
        if inception_weights is None:
            raise ValueError(
                "Inception FID needs torch-fidelity's weights file: pass inception_weights=PATH "
                "(pt_inception-2015-12-05-6726825d.pth), or use CLIP features"
            )
        metric = FrechetInceptionDistance(
            feature=2048, feature_extractor_weights_path=inception_weights, sync_on_compute=False
        )
    else:
        metric = FrechetInceptionDistance(feature=feature, sync_on_compute=False)
    for batch in real:
        metric.update(batch, real=True)
    for batch in fake:
        metric.update(batch, real=False)
    return float(metric.compute())
