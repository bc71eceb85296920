"""The toy CLIPs trained contrastively on renders: the reward (`base`), the held-out evaluator (`small`) and the
extra reward CLIPs of the ensemble (`toyworld train-clip`); and the text side every stage shares (tokenizing,
the contrastive loss with hard negatives)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

from date_diffusion.outputs import save_pretrained
from date_diffusion.rewards.common import ImageNormalizer
from date_diffusion.toyworld import scene
from date_diffusion.toyworld.tokenizer import build_clip_tokenizer
from date_diffusion.toyworld.training.config import TrainConfig
from date_diffusion.toyworld.training.data import images_to_tensor, step_rng
from date_diffusion.toyworld.training.runner import Stage, done_marker, finished, mark_done

MAX_TOKENS = 24  # longest grammar caption is 12 tokens with BOS/EOS

# (width, layers) of the toy CLIPs: `base` is the reward, `small` the held-out evaluator; `medium` and `base` at
# other seeds are the extra reward CLIPs of the ensemble (`toyworld train-clip`), never the evaluator.
CLIP_SIZES = {"base": (128, 4), "small": (96, 3), "medium": (112, 3)}


def clip_config(vocab_size: int, small: bool = False, size: str | None = None):
    from transformers import CLIPConfig

    width, layers = CLIP_SIZES[size or ("small" if small else "base")]
    text = dict(
        vocab_size=vocab_size,
        hidden_size=width,
        intermediate_size=4 * width,
        num_hidden_layers=layers,
        num_attention_heads=4,
        max_position_embeddings=MAX_TOKENS,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
        projection_dim=width,
    )
    vision = dict(
        image_size=scene.IMAGE_SIZE,
        patch_size=8,
        hidden_size=width,
        intermediate_size=4 * width,
        num_hidden_layers=layers,
        num_attention_heads=4,
        projection_dim=width,
    )
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=width)


def tokenize(tokenizer, captions: list[str]):
    """Captions padded to `MAX_TOKENS`, as every toy text encoder reads them."""
    return tokenizer(captions, padding="max_length", max_length=MAX_TOKENS, truncation=True, return_tensors="pt")


def contrastive_loss(model, tokenizer, pixel_values: torch.Tensor, captions: list[str], negatives: list[str], device):
    """Symmetric CLIP loss where each image also competes with one hard-negative caption per image: logits are
    [B, 2B], positives on the diagonal, hard negatives in the right half."""
    text = tokenize(tokenizer, captions + negatives)
    out = model(
        input_ids=text.input_ids.to(device), attention_mask=text.attention_mask.to(device), pixel_values=pixel_values
    )
    logits = out.logits_per_image
    B = len(captions)
    target = torch.arange(B, device=device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits[:, :B].t(), target)) / 2


def train_clip(cfg: TrainConfig, name: str, small: bool, steps: int, size: str | None = None, out_dir=None):
    """Contrastive training on renders; each batch adds one hard negative caption per image (swapped colours,
    wrong count, flipped relation) so the model must read binding, count and position, not only words."""
    from transformers import CLIPModel

    out_dir = Path(out_dir) if out_dir else cfg.out / ("clip-eval" if small else "clip")
    if done_marker(cfg, name).exists():
        return finished(cfg, name, lambda: CLIPModel.from_pretrained(out_dir).to(cfg.device), (out_dir,))
    tok = build_clip_tokenizer(scene.vocabulary(), MAX_TOKENS)
    conf = clip_config(len(tok), small, size)
    torch.manual_seed(cfg.seed + (1000 if small else 0))
    model = CLIPModel(conf).to(cfg.device)
    stage = Stage(cfg, name, model, steps, lr=5e-4)
    normalize = ImageNormalizer(scene.IMAGE_SIZE).to(cfg.device)  # the rewards' CLIP mean/std; no resize at 64 px

    def loss_fn(step):
        images, caps, negs = scene.sample_batch(step_rng(cfg, name, step), cfg.clip_batch, with_negatives=True)
        pix = normalize((images_to_tensor(images, cfg.device) + 1) / 2)
        return contrastive_loss(model, tok, pix, caps, negs, cfg.device)

    stage.run(loss_fn)
    save_pretrained(model, out_dir)
    save_pretrained(tok, out_dir)
    mark_done(cfg, name, (out_dir,))
    return model


def train_reward_clip(out: Path, seed: int, size: str = "base", steps: int = 1000, device: str = "cpu"):
    """One more toy reward CLIP (for ensembles): the reward CLIP's recipe at another seed (data and init) and/or
    size, written to `out` (CLIPModel + tokenizer; checkpoints under `out/work`). Seeds must differ from the
    world's (0) for `base`, so that the model is not a copy of the shipped reward."""
    if size not in CLIP_SIZES or size == "small":
        raise ValueError(f"size={size!r}: use one of base, medium (small is the held-out evaluator's size)")
    out = Path(out)
    cfg = TrainConfig(out, seed=seed, device=device, clip_steps=steps)
    model = train_clip(cfg, "clip", small=False, steps=steps, size=size, out_dir=out)
    meta = {"seed": seed, "size": size, "width_layers": CLIP_SIZES[size], "steps": steps}
    (out / "toyclip.json").write_text(json.dumps(meta, indent=1) + "\n")
    return model
