"""This project's side of a comparison with `scripts/record_official.py`'s records: the same weights, images and
prompts through the project's own loading code and rewards. Used by tests/test_openclip.py (the tiny records in
this folder) and by `scripts/compare_official.py` (any record, full-size models included)."""

from __future__ import annotations

import gzip
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from date_diffusion.rewards.hps import HPSReward
from date_diffusion.rewards.openclip import OpenCLIPReward

from .inputs import hashed_state, make_image

HERE = Path(__file__).resolve().parent
BPE = HERE / "bpe_simple_vocab_16e6.txt.gz"  # open_clip's (and OpenAI CLIP's) BPE merges, MIT licence


def _bytes_to_unicode() -> list[str]:
    """CLIP's byte -> character table (its `bytes_to_unicode`), in byte order of the vocabulary."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = list(keep), 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return [chr(c) for c in chars]


def clip_tokenizer(path=BPE):
    """A transformers `CLIPTokenizer` with CLIP's vocabulary, built from OpenCLIP's BPE file as its
    `SimpleTokenizer` builds it (49408 ids: bytes, bytes as word ends, the merges, start and end of text)."""
    from transformers import CLIPTokenizer

    lines = gzip.open(path).read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    merges = [tuple(line.split()) for line in lines]
    chars = _bytes_to_unicode()
    vocab = [*chars, *(c + "</w>" for c in chars), *("".join(m) for m in merges), "<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={v: i for i, v in enumerate(vocab)}, merges=merges, model_max_length=77)


def load_record(folder) -> tuple[dict, dict]:
    """record.json and the preprocessed pixels (float32; empty without pixels.npz) of a record folder."""
    folder = Path(folder)
    record = json.loads((folder / "record.json").read_text())
    npz = folder / "pixels.npz"
    pixels = {k: v.astype(np.float32) for k, v in np.load(npz).items()} if npz.exists() else {}
    return record, pixels


def images01(record) -> list[torch.Tensor]:
    """The record's test images as [1, 3, H, W] floats in [0, 1] (the 8-bit values the official code read)."""
    out = []
    for h, w in record["shapes"]:
        out.append(torch.from_numpy(make_image(h, w, record["image_seed"])).permute(2, 0, 1)[None].float() / 255)
    return out


def our_reward(entry: dict, tokenizer, folder):
    """The entry's weights saved as its users have them and loaded by the project: HPS entries as an HPS file
    (`{"state_dict": float16}`) through `HPSReward.from_pretrained`, the others as safetensors through
    `OpenCLIPReward.from_checkpoint`."""
    from safetensors.torch import save_file

    state = hashed_state(entry["shapes"], entry["seed"])
    if entry["name"].startswith("hpsv2"):
        file = Path(folder) / f"{entry['name']}.pt"
        torch.save({"state_dict": {k: v.half() for k, v in state.items()}}, file)
        del state
        return HPSReward.from_pretrained(file, version=entry["name"], tokenizer=tokenizer)
    file = Path(folder) / "open_clip_model.safetensors"
    save_file(state, file)
    del state
    return OpenCLIPReward.from_checkpoint(file, tokenizer=tokenizer, quick_gelu=entry.get("quick_gelu", False))


@torch.no_grad()
def our_cosines(reward, record) -> np.ndarray:
    """[prompt][image] cosine of the project's reward (HPS: its score / 100). Each image's features are computed
    once (its preprocessing and image tower, as the reward computes them) against every prompt's; the reward
    itself, called on each image with the first prompt, must give the same number."""
    from date_diffusion.rewards.common import clip_features

    prompts = record["prompts"]
    scale = 100.0 if isinstance(reward, HPSReward) else 1.0
    text = reward.text_features(prompts)
    columns = []
    for img in images01(record):
        pixels = reward.preprocess(img)
        feature = torch.nn.functional.normalize(
            clip_features(reward.model.get_image_features(pixel_values=pixels)), dim=-1
        )
        column = text @ feature[0]
        direct = float(reward(img, prompts[:1])) / scale
        if abs(direct - float(column[0])) > 1e-5:
            raise AssertionError(f"the reward gives {direct}, its features {float(column[0])}")
        columns.append(column)
    return torch.stack(columns, dim=1).double().numpy()


@dataclass
class ModelComparison:
    name: str
    arch: str
    official: np.ndarray  # [prompt][image] cosine
    ours: np.ndarray

    @property
    def diff(self) -> np.ndarray:
        return np.abs(self.ours - self.official)


def compare_models(record, tokenizer=None) -> list[ModelComparison]:
    """Every model of a record, official against ours."""
    tokenizer = tokenizer or clip_tokenizer()
    out = []
    for entry in record["models"]:
        with tempfile.TemporaryDirectory() as tmp:
            reward = our_reward(entry, tokenizer, tmp)
            ours = our_cosines(reward, record)
            del reward
        out.append(ModelComparison(entry["name"], entry["arch"], np.asarray(entry["scores"], np.float64), ours))
    return out
