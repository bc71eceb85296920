"""ImageReward v1.0 (Xu et al., 2023) as a differentiable reward, on transformers' BLIP modules.

The released checkpoint (`ImageReward.pt` in THUDM/ImageReward) is BLIP's ViT-L/16 image encoder, BLIP's BERT
text encoder with cross-attention to the image, and an MLP on the [CLS] feature, normalised by fixed mean/std.
`checkpoint_key_to_ours` maps its keys onto `ImageRewardModel`; loading is strict in both directions.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from date_diffusion.rewards.base import Reward
from date_diffusion.rewards.common import ImageNormalizer, PreferenceMLP

MEAN, STD = 0.16717362830052426, 1.0333394966054072
MAX_TOKENS = 35
# Parts of the checkpoint that scoring does not use.
IGNORED = re.compile(r"^blip\.(vision_proj|text_proj)\.|position_ids$")
_VIT = [
    (r"^blip\.visual_encoder\.cls_token$", "visual_encoder.embeddings.class_embedding"),
    (r"^blip\.visual_encoder\.pos_embed$", "visual_encoder.embeddings.position_embedding"),
    (r"^blip\.visual_encoder\.patch_embed\.proj\.", "visual_encoder.embeddings.patch_embedding."),
    (r"^blip\.visual_encoder\.blocks\.(\d+)\.norm1\.", r"visual_encoder.encoder.layers.\1.layer_norm1."),
    (r"^blip\.visual_encoder\.blocks\.(\d+)\.norm2\.", r"visual_encoder.encoder.layers.\1.layer_norm2."),
    (r"^blip\.visual_encoder\.blocks\.(\d+)\.attn\.qkv\.", r"visual_encoder.encoder.layers.\1.self_attn.qkv."),
    (r"^blip\.visual_encoder\.blocks\.(\d+)\.attn\.proj\.", r"visual_encoder.encoder.layers.\1.self_attn.projection."),
    (r"^blip\.visual_encoder\.blocks\.(\d+)\.mlp\.", r"visual_encoder.encoder.layers.\1.mlp."),
    (r"^blip\.visual_encoder\.norm\.", "visual_encoder.post_layernorm."),
    (r"^blip\.text_encoder\.", "text_encoder."),
    (r"^mlp\.layers\.", "mlp.layers."),
]


def checkpoint_key_to_ours(key: str) -> str | None:
    """Our parameter name for a checkpoint key; None for keys scoring ignores; KeyError for unknown keys."""
    if IGNORED.search(key):
        return None
    for pattern, repl in _VIT:
        if re.search(pattern, key):
            return re.sub(pattern, repl, key)
    raise KeyError(f"unexpected ImageReward checkpoint key {key!r}")


def vision_config(tiny: bool = False):
    from transformers import BlipVisionConfig

    if tiny:
        return BlipVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=32,
            patch_size=16,
            layer_norm_eps=1e-6,
        )
    return BlipVisionConfig(
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=24,
        num_attention_heads=16,
        image_size=224,
        patch_size=16,
        layer_norm_eps=1e-6,
    )


def text_config(vision_width: int, tiny: bool = False, vocab_size: int = 30524):
    from transformers import BlipTextConfig

    if tiny:
        return BlipTextConfig(
            vocab_size=vocab_size,
            hidden_size=24,
            intermediate_size=48,
            num_hidden_layers=2,
            num_attention_heads=2,
            encoder_hidden_size=vision_width,
            max_position_embeddings=64,
        )
    # BLIP's med_config.json (BERT-base with cross-attention to the 1024-wide ViT-L features)
    return BlipTextConfig(
        vocab_size=vocab_size,
        hidden_size=768,
        intermediate_size=3072,
        num_hidden_layers=12,
        num_attention_heads=12,
        encoder_hidden_size=vision_width,
        max_position_embeddings=512,
        layer_norm_eps=1e-12,
        pad_token_id=0,
    )


class ImageRewardModel(nn.Module):
    def __init__(self, vision_cfg, text_cfg):
        super().__init__()
        from transformers.models.blip.modeling_blip import BlipVisionModel
        from transformers.models.blip.modeling_blip_text import BlipTextModel

        self.visual_encoder = BlipVisionModel(vision_cfg)
        self.text_encoder = BlipTextModel(text_cfg, add_pooling_layer=False)
        self.mlp = PreferenceMLP(text_cfg.hidden_size)

    def forward(self, pixel_values, input_ids, attention_mask):
        image = self.visual_encoder(pixel_values=pixel_values).last_hidden_state
        image_mask = torch.ones(image.shape[:-1], dtype=torch.long, device=image.device)
        text = self.text_encoder(
            input_ids=input_ids,
            attention_mask=attention_mask,
            encoder_hidden_states=image,
            encoder_attention_mask=image_mask,
            return_dict=True,
        ).last_hidden_state
        return (self.mlp(text[:, 0].float()) - MEAN) / STD

    def load_checkpoint_state(self, state: dict) -> None:
        mapped = {}
        for key, value in state.items():
            ours = checkpoint_key_to_ours(key)
            if ours is not None:
                mapped[ours] = value
        self.load_state_dict(mapped, strict=True)


class ImageRewardReward(Reward):
    """ImageReward score of images for prompts (higher is better), differentiable in the images."""

    name = "imagereward"

    def __init__(self, model: ImageRewardModel, tokenizer, antialias: bool = True):
        super().__init__()
        self.model, self.tokenizer = model, tokenizer
        size = model.visual_encoder.config.image_size
        self.preprocess = ImageNormalizer(size, mode="bicubic", antialias=antialias)  # as ImageReward's transform
        self.freeze()

    @classmethod
    def from_pretrained(cls, checkpoint=None, tokenizer=None, device=None, vision_cfg=None, text_cfg=None):
        """`checkpoint`: a folder or hub repo holding ImageReward.pt (default THUDM/ImageReward) or a file;
        `tokenizer`: bert-base-uncased (folder or hub id). The configs default to the released model's."""
        from transformers import BertTokenizer

        from date_diffusion.hub import (
            IMAGEREWARD_REPO,
            IMAGEREWARD_TOKENIZER,
            fetch_file,
            load_component,
            load_state_dict,
        )

        state = load_state_dict(fetch_file(checkpoint or IMAGEREWARD_REPO, "ImageReward.pt"))
        vision = vision_cfg or vision_config()
        model = ImageRewardModel(vision, text_cfg or text_config(vision.hidden_size))
        model.load_checkpoint_state(state)
        tok = load_component(BertTokenizer, tokenizer or IMAGEREWARD_TOKENIZER)
        reward = cls(model, tok)
        return reward.to(device) if device is not None else reward

    def forward(self, images, prompts):
        tokens = self.tokenizer(
            prompts, padding="max_length", truncation=True, max_length=MAX_TOKENS, return_tensors="pt"
        ).to(self.preprocess.mean.device)
        return self.model(self.preprocess(images), tokens.input_ids, tokens.attention_mask)
