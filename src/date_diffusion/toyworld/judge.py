"""The toy world's learned judge (`toy-judge`, a toy ImageReward): a small transformer scoring (image, caption) for
correctness, trained on the toy UNet's own generations labelled by the exact evaluator, aspect by aspect.

Architecture: a strided convolution stem turns the 64x64 image into 8x8 patch tokens; the caption's tokens (the toy
CLIP tokenizer) get learned embeddings; one transformer encoder reads [CLS] + caption + patches, and a linear head on
[CLS] gives one logit per aspect in `ASPECTS` (`pass`: every aspect holds). As a reward the judge returns the `pass`
logit. Saved as a diffusers model folder (`config.json` + `diffusion_pytorch_model.safetensors`) with the tokenizer
in `tokenizer/`.
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

ASPECTS = ("pass", "objects", "colors", "count", "position", "size")


def _stem(width: int) -> nn.Sequential:
    """64x64x3 -> 8x8 x width, three stride-2 convolutions."""
    chans = (3, width // 4, width // 2, width)
    layers = []
    for cin, cout in zip(chans[:-1], chans[1:]):
        layers += [nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.GELU()]
    return nn.Sequential(*layers[:-1])


class ToyJudge(ModelMixin, ConfigMixin):
    @register_to_config
    def __init__(
        self,
        vocab_size: int = 64,
        max_tokens: int = 24,
        width: int = 64,
        layers: int = 4,
        heads: int = 4,
        image_size: int = 64,
        aspects: tuple[str, ...] = ASPECTS,
    ):
        super().__init__()
        grid = image_size // 8
        self.stem = _stem(width)
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.text_positions = nn.Parameter(torch.randn(max_tokens, width) * 0.02)
        self.image_positions = nn.Parameter(torch.randn(grid * grid, width) * 0.02)
        self.kinds = nn.Parameter(torch.randn(3, width) * 0.02)  # [CLS], caption, image
        layer = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, len(aspects))

    def forward(self, images: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Logits [B, len(aspects)] for images (NCHW in [0, 1]) and their captions' token ids and mask."""
        length = int(attention_mask.sum(1).max())  # captions are padded: read only up to the longest
        input_ids, attention_mask = input_ids[:, :length], attention_mask[:, :length]
        patches = self.stem(images * 2 - 1).flatten(2).transpose(1, 2) + self.image_positions + self.kinds[2]
        words = self.token_embedding(input_ids) + self.text_positions[:length] + self.kinds[1]
        x = torch.cat([self.kinds[0].expand(len(images), 1, -1), words, patches], 1)
        keep = torch.cat([torch.ones_like(attention_mask[:, :1]), attention_mask, torch.ones_like(patches[..., 0])], 1)
        x = self.encoder(x, src_key_padding_mask=keep == 0)
        return self.head(self.norm(x[:, 0]))
