"""Differentiable augmentations averaged over views: a reward that one adversarial pattern cannot fool as easily.

Like the cutouts of CLIP-guided diffusion: each view is a random zoom-in crop with a small shift (bilinear
resampling, border padding), plus mild Gaussian noise, and the score is the mean of the wrapped reward over the
views. There are no flips: a mirrored image changes "left of" into "right of".
"""

from __future__ import annotations

import zlib

import torch
import torch.nn.functional as F

from date_diffusion.rewards.base import Reward


class AugmentedReward(Reward):
    """`mean_k reward(view_k(image), prompt)` over `views` random views of each image.

    The views of an image are drawn from a generator seeded by `(seed, prompt)`, so they are the same at every
    call, whatever else is in the batch (batch-independent and deterministic); images of one prompt share them.
    scale: the crop keeps a side fraction in `[min_scale, 1]` of the image; shift: extra translation as a
    fraction of the side; noise: standard deviation of the added Gaussian noise (images in [0, 1]).
    """

    def __init__(
        self,
        reward: Reward,
        views: int = 8,
        seed: int = 0,
        min_scale: float = 0.8,
        shift: float = 0.05,
        noise: float = 0.02,
    ):
        super().__init__()
        if isinstance(views, bool) or not isinstance(views, int) or views < 1:
            raise ValueError(f"views must be an integer >= 1, got {views!r}")
        if not 0 < min_scale <= 1:
            raise ValueError(f"min_scale must be in (0, 1], got {min_scale!r}")
        if shift < 0 or noise < 0:
            raise ValueError(f"shift and noise must be >= 0, got shift={shift!r}, noise={noise!r}")
        self.reward, self.views, self.seed = reward, views, seed
        self.min_scale, self.shift, self.noise = min_scale, shift, noise
        self.name = f"aug{views}({reward.name})"

    def view_params(self, prompt: str, shape) -> tuple[torch.Tensor, torch.Tensor]:
        """The `[views, 2, 3]` affine matrices and `[views, C, H, W]` unit noise of one image."""
        g = torch.Generator().manual_seed(zlib.crc32(f"{self.seed}\0{prompt}".encode()))
        scale = self.min_scale + (1 - self.min_scale) * torch.rand(self.views, generator=g)
        reach = (1 - scale) + self.shift
        tx, ty = ((2 * torch.rand(2, self.views, generator=g) - 1) * reach).unbind(0)
        zero = torch.zeros_like(scale)
        theta = torch.stack([torch.stack([scale, zero, tx], 1), torch.stack([zero, scale, ty], 1)], 1)
        return theta, torch.randn(self.views, *shape, generator=g)

    def augment(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        """The views, `[B * views, C, H, W]`, image-major (views of image 0 first)."""
        params = [self.view_params(p, images.shape[1:]) for p in prompts]
        theta = torch.cat([t for t, _ in params]).to(images.device, images.dtype)
        noise = torch.cat([n for _, n in params]).to(images.device, images.dtype)
        stacked = images.repeat_interleave(self.views, dim=0)
        grid = F.affine_grid(theta, list(stacked.shape), align_corners=False)
        views = F.grid_sample(stacked, grid, mode="bilinear", padding_mode="border", align_corners=False)
        return views + self.noise * noise

    def forward(self, images, prompts):
        views = self.augment(images, prompts)
        scores = self.reward(views, [p for p in prompts for _ in range(self.views)])
        return scores.view(len(prompts), self.views).mean(dim=1)
