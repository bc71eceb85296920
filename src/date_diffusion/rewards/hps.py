"""HPSv2 and HPSv2.1 (Wu et al., 2023, "Human Preference Score v2") as differentiable rewards.

Both are OpenCLIP ViT-H-14 models fine-tuned on human preferences; the published checkpoints
(`HPS_v2_compressed.pt`, `HPS_v2.1_compressed.pt` in the hub repo `xswu/HPSv2`) are torch files holding
`{"state_dict": {...}}` in OpenCLIP's layout (keys possibly prefixed `module.`), converted here to transformers'
`CLIPModel` by `rewards.openclip`. The official scorer (`hpsv2/img_score.py`) takes the model's normalised image
and text features, `logits_per_image = image_features @ text_features.T`, and its diagonal: the cosine, with no
logit scale. Its benchmark (`hpsv2/evaluation.py`) reports that cosine times 100, the scale HPS numbers are quoted
in (about 20 to 35): this reward is `100 * cosine` (so `hpsv2.score(...)` = this reward / 100). Preprocessing is
the scorer's `preprocess_val`, which hpsv2 builds with `light_augmentation=True`: the longer side resized to 224
(bicubic), the image padded with black to a square, OpenAI CLIP's mean/std (`ResizePadNormalizer`); text is
cleaned and tokenized as OpenCLIP's tokenizer does (`openclip_tokenize`), which hpsv2 copies.
"""

from __future__ import annotations

from pathlib import Path

from date_diffusion.rewards.openclip import OpenCLIPReward, ResizePadNormalizer, load_openclip_state, tokenizer_for

HPS_SCALE = 100.0


class HPSReward(OpenCLIPReward):
    """HPSv2 / HPSv2.1 score: 100 x cosine of the normalised ViT-H-14 image and text features (higher is better)."""

    name = "hpsv2"
    preprocessing = ResizePadNormalizer

    def forward(self, images, prompts):
        return HPS_SCALE * super().forward(images, prompts)

    @classmethod
    def from_pretrained(cls, source=None, version: str = "hpsv2", tokenizer=None, device=None, **kwargs):
        """`source`: an HPS checkpoint file, or a folder / hub repo holding the version's file (default: the hub
        repo `xswu/HPSv2`); `version`: `hpsv2` or `hpsv2.1`; `tokenizer`: a CLIPTokenizer, folder or hub id
        (default: beside the file, else CLIP's BPE tokenizer, which OpenCLIP's ViT-H-14 uses)."""
        from date_diffusion.hub import HPS_FILES, HPS_REPO, fetch_named_file

        if version not in HPS_FILES:
            raise ValueError(f"unknown HPS version {version!r}; use one of {sorted(HPS_FILES)}")
        path = Path(str(source)).expanduser() if source is not None else None
        if path is not None and path.is_file():
            file = path
        else:
            file = fetch_named_file(source or HPS_REPO, HPS_FILES[version])
        state = load_openclip_state(file)
        if tokenizer is None or isinstance(tokenizer, (str, Path)):
            tokenizer = tokenizer_for(file, tokenizer)
        reward = cls.from_state_dict(state, tokenizer, device=device, **kwargs)
        reward.name, reward.source = version, str(file)
        return reward
