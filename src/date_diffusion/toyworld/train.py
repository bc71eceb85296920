"""Train every toy-world model from scratch: tokenizer, two CLIPs, VAE, UNet; then assemble the pipeline folder.

Stages run in order and each is resumable: a stage writes a checkpoint (safetensors + JSON) every
`checkpoint_every` steps and a `done` marker at the end, and data for step `k` is drawn from an RNG seeded by
(seed, stage, k), so a resumed run sees exactly the batches an uninterrupted one would have seen.

Output layout of `--out DIR`:
  DIR/pipeline/      StableDiffusionPipeline folder (tokenizer, text_encoder, vae, unet, scheduler)
  DIR/clip/          toy CLIP used as the reward (CLIPModel + tokenizer)
  DIR/clip-eval/     independently trained toy CLIP, for evaluation only
  DIR/work/          checkpoints, logs (JSON lines), cached latents
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from date_diffusion.rewards.common import ImageNormalizer
from date_diffusion.toyworld import scene
from date_diffusion.toyworld.tokenizer import build_clip_tokenizer

MAX_TOKENS = 24  # longest grammar caption is 12 tokens with BOS/EOS
STAGES = ("clip", "clip_eval", "vae", "latents", "vae_decoder", "tiny_decoder", "unet", "assemble")


@dataclass
class TrainConfig:
    out: Path
    seed: int = 0
    device: str = "cpu"
    # Sized for one CPU thread in about two hours (see docs/toy-world.md for measured times).
    clip_steps: int = 1000
    clip_eval_steps: int = 600
    clip_batch: int = 64
    vae_steps: int = 2500
    vae_batch: int = 32
    latent_images: int = 50_000
    unet_steps: int = 8000
    unet_batch: int = 64
    tiny_decoder_steps: int = 1200
    tiny_decoder_batch: int = 16
    vae_decoder_steps: int = 1500
    vae_decoder_halo: int = 2  # px of background around objects weighted like objects (see reconstruction_loss)
    unet_stop_at: int | None = None  # stop the UNet early (same LR schedule as the full run), e.g. a time budget
    checkpoint_every: int = 250
    stages: tuple[str, ...] = field(default=STAGES)

    @classmethod
    def smoke(cls, out: Path, seed: int = 0, device: str = "cpu") -> TrainConfig:
        """A few steps of every stage on a few images: proves the recipe runs, not that it learns."""
        return cls(
            out,
            seed,
            device,
            clip_steps=3,
            clip_eval_steps=3,
            clip_batch=8,
            vae_steps=3,
            vae_batch=4,
            latent_images=16,
            unet_steps=3,
            unet_batch=4,
            tiny_decoder_steps=3,
            vae_decoder_steps=3,
            checkpoint_every=2,
        )


# ---------------------------------------------------------------------------------------------- model configs
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


def vae_config() -> dict:
    return dict(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        sample_size=scene.IMAGE_SIZE,
        layers_per_block=1,
        block_out_channels=(16, 32, 64, 64),
        norm_num_groups=8,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
    )


def unet_config(cross_attention_dim: int) -> dict:
    return dict(
        sample_size=scene.IMAGE_SIZE // 8,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(64, 128, 128),
        attention_head_dim=8,
        cross_attention_dim=cross_attention_dim,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    )


def noise_scheduler_config() -> dict:
    # Stable Diffusion's training schedule.
    return dict(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="epsilon",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )


# ------------------------------------------------------------------------------------------------- helpers
def images_to_tensor(images: np.ndarray, device) -> torch.Tensor:
    """uint8 NHWC -> float NCHW in [-1, 1]."""
    return torch.from_numpy(images).to(device).permute(0, 3, 1, 2).float().div(127.5).sub(1)


def _flatten_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{idx}.{k}"] = v.contiguous()
            else:
                scalars[f"{idx}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for key, v in list(tensors.items()) + list(meta["scalars"].items()):
        idx, k = key.split(".", 1)
        state.setdefault(int(idx), {})[k] = v
    return {"state": state, "param_groups": meta["param_groups"]}


class Stage:
    """Checkpointed optimisation loop shared by every model (weights and optimizer state as safetensors)."""

    def __init__(
        self, cfg: TrainConfig, name: str, model: torch.nn.Module, steps: int, lr: float, ema_decay: float | None = None
    ):
        self.cfg, self.name, self.model, self.steps = cfg, name, model, steps
        self.dir = cfg.out / "work" / name
        self.dir.mkdir(parents=True, exist_ok=True)
        params = [p for p in model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
        warmup = min(200, max(1, steps // 10))
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
        )
        self.ema = None
        if ema_decay is not None:
            from diffusers.training_utils import EMAModel

            self.ema = EMAModel(params, decay=ema_decay, use_ema_warmup=True, power=3 / 4)
        self.start = 0
        ckpt = self.dir / "checkpoint.json"
        if ckpt.exists():
            meta = json.loads(ckpt.read_text())
            model.load_state_dict(load_file(self.dir / "model.safetensors"))
            self.opt.load_state_dict(_unflatten_optimizer(load_file(self.dir / "optimizer.safetensors"), meta["opt"]))
            self.sched.load_state_dict(meta["sched"])
            if self.ema is not None:
                shadow = load_file(self.dir / "ema.safetensors")
                self.ema.shadow_params = [shadow[str(i)] for i in range(len(shadow))]
                self.ema.optimization_step = meta["ema_step"]
            self.start = meta["step"]

    def _checkpoint(self, step: int):
        tensors, opt_meta = _flatten_optimizer(self.opt)
        save_file({k: v.contiguous() for k, v in self.model.state_dict().items()}, self.dir / "model.safetensors")
        save_file(tensors, self.dir / "optimizer.safetensors")
        meta = {"step": step, "opt": opt_meta, "sched": self.sched.state_dict()}
        if self.ema is not None:
            save_file(
                {str(i): p.contiguous() for i, p in enumerate(self.ema.shadow_params)}, self.dir / "ema.safetensors"
            )
            meta["ema_step"] = self.ema.optimization_step
        tmp = self.dir / "checkpoint.json.tmp"
        tmp.write_text(json.dumps(meta))
        tmp.replace(self.dir / "checkpoint.json")

    def run(self, loss_fn: Callable[[int], torch.Tensor], stop_at: int | None = None):
        """`loss_fn(step)` builds that step's batch and returns its loss; `stop_at` ends early (checkpointed)."""
        self.model.train()
        log = open(self.dir / "log.jsonl", "a")
        t0 = time.time()
        end = self.steps if stop_at is None else min(self.steps, stop_at)
        bar = tqdm(range(self.start, end), desc=self.name, initial=self.start, total=end)
        for step in bar:
            loss = loss_fn(step)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            self.opt.step()
            self.sched.step()
            if self.ema is not None:
                self.ema.step(p for p in self.model.parameters() if p.requires_grad)
            bar.set_postfix(loss=f"{loss.item():.4f}")
            if step % 25 == 0 or step == self.steps - 1:
                log.write(json.dumps({"step": step, "loss": loss.item(), "elapsed_s": time.time() - t0}) + "\n")
                log.flush()
            if (step + 1) % self.cfg.checkpoint_every == 0 or step == end - 1:
                self._checkpoint(step + 1)
        log.close()
        if self.ema is not None:
            self.ema.copy_to(p for p in self.model.parameters() if p.requires_grad)
        self.model.eval()
        return self.model


def _rng(cfg: TrainConfig, stage: str, step: int) -> np.random.Generator:
    return np.random.default_rng([cfg.seed, sum(map(ord, stage)), step])


def _done(cfg: TrainConfig, stage: str) -> Path:
    return cfg.out / "work" / stage / "done"


# -------------------------------------------------------------------------------------------------- stages
def train_clip(cfg: TrainConfig, name: str, small: bool, steps: int, size: str | None = None, out_dir=None):
    """Contrastive training on renders; each batch adds one hard negative caption per image (swapped colours,
    wrong count, flipped relation) so the model must read binding, count and position, not only words."""
    from transformers import CLIPModel

    out_dir = Path(out_dir) if out_dir else cfg.out / ("clip-eval" if small else "clip")
    if _done(cfg, name).exists():
        return CLIPModel.from_pretrained(out_dir).to(cfg.device)
    tok = build_clip_tokenizer(scene.vocabulary(), MAX_TOKENS)
    conf = clip_config(len(tok), small, size)
    torch.manual_seed(cfg.seed + (1000 if small else 0))
    model = CLIPModel(conf).to(cfg.device)
    stage = Stage(cfg, name, model, steps, lr=5e-4)
    normalize = ImageNormalizer(scene.IMAGE_SIZE).to(cfg.device)  # the rewards' CLIP mean/std; no resize at 64 px
    B = cfg.clip_batch

    def loss_fn(step):
        images, caps, negs = scene.sample_batch(_rng(cfg, name, step), B, with_negatives=True)
        pix = normalize((images_to_tensor(images, cfg.device) + 1) / 2)
        text = tok(caps + negs, padding="max_length", max_length=MAX_TOKENS, truncation=True, return_tensors="pt")
        out = model(
            input_ids=text.input_ids.to(cfg.device), attention_mask=text.attention_mask.to(cfg.device), pixel_values=pix
        )
        logits = out.logits_per_image  # [B, 2B]: positives on the diagonal, hard negatives in the right half
        target = torch.arange(B, device=cfg.device)
        return (F.cross_entropy(logits, target) + F.cross_entropy(logits[:, :B].t(), target)) / 2

    stage.run(loss_fn)
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    _done(cfg, name).touch()
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


def train_noise_aware_clip(
    out: Path,
    pipeline_dir: Path,
    clip_dir: Path,
    steps: int = 800,
    batch: int = 32,
    guidance: float = 5.0,
    clean_fraction: float = 0.25,
    seed: int = 4,
    device: str = "cpu",
):
    """Fine-tune the reward CLIP's image tower to judge the model's own clean-image estimates at every noise level
    (as noise-aware CLIPs did for guided diffusion): a render is encoded, noised at a random training timestep,
    denoised by the toy UNet with classifier-free guidance, and the decoded `x0_hat` (raw, unclamped, as DATE
    scores it) is paired with its caption and a hard negative; `clean_fraction` of each batch stays the clean
    render. The text tower stays frozen. Written to `out` like every toy CLIP (CLIPModel + tokenizer)."""
    from diffusers import StableDiffusionPipeline
    from transformers import CLIPModel, CLIPTokenizer

    out = Path(out)
    cfg = TrainConfig(out, seed=seed, device=device, checkpoint_every=100)
    if _done(cfg, "clip_na").exists():
        return CLIPModel.from_pretrained(out).to(device)
    pipe = StableDiffusionPipeline.from_pretrained(pipeline_dir, safety_checker=None).to(device)
    for module in (pipe.unet, pipe.vae, pipe.text_encoder):
        module.requires_grad_(False).eval()
    model = CLIPModel.from_pretrained(clip_dir).to(device)
    model.text_model.requires_grad_(False)
    model.text_projection.requires_grad_(False)
    tok = CLIPTokenizer.from_pretrained(clip_dir)
    acp = pipe.scheduler.alphas_cumprod.to(device)
    normalize = ImageNormalizer(scene.IMAGE_SIZE).to(device)
    scaling = pipe.vae.config.scaling_factor

    def text(captions):
        return tok(captions, padding="max_length", max_length=MAX_TOKENS, truncation=True, return_tensors="pt")

    @torch.no_grad()
    def estimates(images, captions, gen):
        x = images_to_tensor(images, device)
        latents = pipe.vae.encode(x).latent_dist.mean * scaling
        t = torch.randint(0, len(acp), (len(x),), generator=gen, device=device)
        a = acp[t].view(-1, 1, 1, 1)
        noise = torch.randn(latents.shape, generator=gen, device=device)
        xt = a.sqrt() * latents + (1 - a).sqrt() * noise
        cond = pipe.text_encoder(text(captions).input_ids.to(device))[0]
        uncond = pipe.text_encoder(text([""] * len(x)).input_ids.to(device))[0]
        eps = pipe.unet(torch.cat([xt, xt]), torch.cat([t, t]), encoder_hidden_states=torch.cat([uncond, cond])).sample
        eps_u, eps_c = eps.chunk(2)
        x0 = (xt - (1 - a).sqrt() * (eps_u + guidance * (eps_c - eps_u))) / a.sqrt()
        decoded = (pipe.vae.decode(x0 / scaling).sample + 1) / 2
        clean = torch.rand(len(x), generator=gen, device=device) < clean_fraction
        return torch.where(clean.view(-1, 1, 1, 1), (x + 1) / 2, decoded)

    stage = Stage(cfg, "clip_na", model, steps, lr=1e-4)

    def loss_fn(step):
        images, caps, negs = scene.sample_batch(_rng(cfg, "clip_na", step), batch, with_negatives=True)
        gen = torch.Generator(device).manual_seed(seed * 1_000_003 + step)
        pix = normalize(estimates(images, caps, gen))
        ids = text(caps + negs)
        logits = model(
            input_ids=ids.input_ids.to(device), attention_mask=ids.attention_mask.to(device), pixel_values=pix
        ).logits_per_image
        target = torch.arange(batch, device=device)
        return (F.cross_entropy(logits, target) + F.cross_entropy(logits[:, :batch].t(), target)) / 2

    stage.run(loss_fn)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    meta = {
        "from": str(clip_dir),
        "pipeline": str(pipeline_dir),
        "steps": steps,
        "batch": batch,
        "seed": seed,
        "guidance": guidance,
        "clean_fraction": clean_fraction,
    }
    (out / "toyclip.json").write_text(json.dumps(meta, indent=1) + "\n")
    _done(cfg, "clip_na").touch()
    return model


def reconstruction_loss(rec: torch.Tensor, x: torch.Tensor, halo: int = 0) -> torch.Tensor:
    """L1 + L2 with object pixels weighted 10x: objects are a few percent of the pixels, and their colours and
    edges are what the evaluator reads. The top-left pixel is background (objects never reach the corners).
    `halo` > 0 extends the weight to background pixels within that many pixels of an object: the notches of a
    small cross are background, and filling them in (a cross decoded as a blob) costs little without it."""
    obj = (x - x[:, :, :1, :1]).abs().amax(1, keepdim=True).gt(0.05).float()
    if halo:
        obj = F.max_pool2d(obj, 2 * halo + 1, stride=1, padding=halo)
    weight = 1 + 9 * obj
    return (weight * (rec - x).abs()).mean() + (weight * (rec - x) ** 2).mean()


def train_vae(cfg: TrainConfig):
    from diffusers import AutoencoderKL

    out_dir = cfg.out / "work" / "vae" / "final"
    if _done(cfg, "vae").exists():
        return AutoencoderKL.from_pretrained(out_dir).to(cfg.device)
    torch.manual_seed(cfg.seed + 2000)
    vae = AutoencoderKL(**vae_config()).to(cfg.device)
    stage = Stage(cfg, "vae", vae, cfg.vae_steps, lr=1e-3)

    def loss_fn(step):
        images, _ = scene.sample_batch(_rng(cfg, "vae", step), cfg.vae_batch)
        x = images_to_tensor(images, cfg.device)
        post = vae.encode(x).latent_dist
        gen = torch.Generator(cfg.device).manual_seed(cfg.seed * 1_000_003 + step)
        rec = vae.decode(post.sample(generator=gen)).sample
        return reconstruction_loss(rec, x) + 1e-6 * post.kl().mean()

    stage.run(loss_fn)
    vae.save_pretrained(out_dir)
    _done(cfg, "vae").touch()
    return vae


@torch.no_grad()
def encode_latents(cfg: TrainConfig, vae):
    """Render the UNet's training set once and cache its latents (mean of the posterior) and captions."""
    path = cfg.out / "work" / "latents"
    path.mkdir(parents=True, exist_ok=True)
    if _done(cfg, "latents").exists():
        return load_file(path / "latents.safetensors")["latents"], json.loads((path / "captions.json").read_text())
    rng = _rng(cfg, "latents", 0)
    latents, captions = [], []
    for start in tqdm(range(0, cfg.latent_images, 256), desc="latents"):
        images, caps = scene.sample_batch(rng, min(256, cfg.latent_images - start))
        latents.append(vae.encode(images_to_tensor(images, cfg.device)).latent_dist.mean.cpu())
        captions += caps
    lat = torch.cat(latents)
    save_file({"latents": lat.contiguous()}, path / "latents.safetensors")
    (path / "captions.json").write_text(json.dumps(captions))
    _done(cfg, "latents").touch()
    return lat, captions


def finetune_vae_decoder(cfg: TrainConfig, vae):
    """More training for the VAE *decoder* with the encoder frozen: the latents the UNet learns from do not
    change, so this can run beside (or after) the UNet stage and still sharpen every decoded image."""
    from diffusers import AutoencoderKL

    out_dir = cfg.out / "work" / "vae_decoder" / "final"
    if _done(cfg, "vae_decoder").exists():
        return AutoencoderKL.from_pretrained(out_dir).to(cfg.device)
    vae.requires_grad_(False)
    vae.decoder.requires_grad_(True)
    vae.post_quant_conv.requires_grad_(True)
    stage = Stage(cfg, "vae_decoder", vae, cfg.vae_decoder_steps, lr=3e-4)

    def loss_fn(step):
        images, _ = scene.sample_batch(_rng(cfg, "vae_decoder", step), cfg.vae_batch)
        x = images_to_tensor(images, cfg.device)
        with torch.no_grad():
            z = vae.encode(x).latent_dist.mean
        rec = vae.decode(z).sample
        return reconstruction_loss(rec, x, halo=cfg.vae_decoder_halo)

    stage.run(loss_fn)
    vae.requires_grad_(False)
    vae.save_pretrained(out_dir)
    _done(cfg, "vae_decoder").touch()
    return vae


@torch.no_grad()
def reconstruction_accuracy(vae, per_category: int = 200, seed: int = 778, batch: int = 100) -> dict[str, float]:
    """Share of renders whose VAE round trip (posterior mean, decode) still passes the exact evaluator, per
    category and overall: the ceiling every generated image lives under."""
    from date_diffusion.toyworld.evaluator import evaluate

    rng = np.random.default_rng(seed)
    device = next(vae.parameters()).device
    passed: dict[str, list[bool]] = {}
    for category in ("single", "two_object", "counting", "position", "novel"):
        specs = [scene.sample_spec(rng, category, allow_held_out=category == "novel") for _ in range(per_category)]
        for start in range(0, per_category, batch):
            chunk = specs[start : start + batch]
            x = images_to_tensor(np.stack([scene.render(scene.place(s, rng)) for s in chunk]), device)
            rec = vae.decode(vae.encode(x).latent_dist.mean).sample
            rec = ((rec.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
            passed.setdefault(category, []).extend(evaluate(im, s)["pass"] for im, s in zip(rec, chunk))
    out = {k: float(np.mean(v)) for k, v in passed.items()}
    out["all"] = float(np.mean([p for v in passed.values() for p in v]))
    return out


def tiny_decoder_config() -> dict:
    # TAESD's layout (four decoder blocks, three 2x upsamplings) at toy width; decodes *scaled* latents
    # (scaling_factor 1.0), like the pipeline's own latents, so its tanh input clamp never bites.
    return dict(
        encoder_block_out_channels=(16, 16, 16, 16),
        decoder_block_out_channels=(32, 32, 32, 32),
        num_encoder_blocks=(1, 1, 1, 1),
        num_decoder_blocks=(1, 1, 1, 1),
        latent_channels=4,
        scaling_factor=1.0,
    )


def train_tiny_decoder(cfg: TrainConfig, vae, latents: torch.Tensor, scaling: float):
    """Distil the VAE decoder into a TAESD-style `AutoencoderTiny` (the approximate reward-decoding path).
    Targets are the VAE's own decodes of cached latents, slightly perturbed as x0_hat estimates are."""
    from diffusers import AutoencoderTiny

    out_dir = cfg.out / "tiny-decoder"
    if _done(cfg, "tiny_decoder").exists():
        return AutoencoderTiny.from_pretrained(out_dir).to(cfg.device)
    torch.manual_seed(cfg.seed + 4000)
    tiny = AutoencoderTiny(**tiny_decoder_config()).to(cfg.device)
    tiny.encoder.requires_grad_(False)  # only the decoder is used
    stage = Stage(cfg, "tiny_decoder", tiny, cfg.tiny_decoder_steps, lr=1e-3)
    vae.requires_grad_(False)

    def loss_fn(step):
        rng = _rng(cfg, "tiny_decoder", step)
        idx = torch.from_numpy(rng.integers(len(latents), size=cfg.tiny_decoder_batch))
        gen = torch.Generator(cfg.device).manual_seed(cfg.seed * 1_000_003 + step)
        z = latents[idx].to(cfg.device) * scaling
        z = z + 0.3 * torch.rand(len(z), 1, 1, 1, generator=gen, device=cfg.device) * torch.randn(
            z.shape, generator=gen, device=cfg.device
        )
        with torch.no_grad():
            target = vae.decode(z / scaling).sample
        pred = tiny.decode(z).sample
        return (pred - target).abs().mean() + ((pred - target) ** 2).mean()

    stage.run(loss_fn)
    tiny.save_pretrained(out_dir)
    _done(cfg, "tiny_decoder").touch()
    return tiny


def text_encoder_from_clip(clip):
    from transformers import CLIPTextModel

    enc = CLIPTextModel(clip.config.text_config)
    enc.load_state_dict(clip.text_model.state_dict())
    return enc.eval().requires_grad_(False)


def train_unet(cfg: TrainConfig, latents: torch.Tensor, captions: list[str], clip, tokenizer):
    """Stable Diffusion's recipe in latent space: epsilon prediction, frozen CLIP text encoder (last hidden
    state), 10% caption dropout to the empty prompt for classifier-free guidance, EMA weights."""
    from diffusers import DDPMScheduler, UNet2DConditionModel

    out_dir = cfg.out / "work" / "unet" / "final"
    if _done(cfg, "unet").exists():
        return UNet2DConditionModel.from_pretrained(out_dir).to(cfg.device)
    text_encoder = text_encoder_from_clip(clip).to(cfg.device)
    torch.manual_seed(cfg.seed + 3000)
    unet = UNet2DConditionModel(**unet_config(text_encoder.config.hidden_size)).to(cfg.device)
    noise_sched = DDPMScheduler.from_config(noise_scheduler_config())
    scaling = 1.0 / latents.std().item()
    stage = Stage(cfg, "unet", unet, cfg.unet_steps, lr=3e-4, ema_decay=0.9995)
    acp = noise_sched.alphas_cumprod.to(cfg.device)

    def loss_fn(step):
        rng = _rng(cfg, "unet", step)
        idx = rng.integers(len(captions), size=cfg.unet_batch)
        caps = ["" if rng.random() < 0.1 else captions[i] for i in idx]
        with torch.no_grad():
            ids = tokenizer(caps, padding="max_length", max_length=MAX_TOKENS, truncation=True, return_tensors="pt")
            cond = text_encoder(ids.input_ids.to(cfg.device))[0]
        x0 = latents[torch.from_numpy(idx)].to(cfg.device) * scaling
        gen = torch.Generator(cfg.device).manual_seed(cfg.seed * 1_000_003 + step)
        noise = torch.randn(x0.shape, generator=gen, device=cfg.device)
        t = torch.randint(0, 1000, (x0.shape[0],), generator=gen, device=cfg.device)
        a = acp[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        return F.mse_loss(unet(xt, t, encoder_hidden_states=cond).sample, noise)

    stage.run(loss_fn, stop_at=cfg.unet_stop_at)
    unet.save_pretrained(out_dir)
    step = min(cfg.unet_steps, cfg.unet_stop_at or cfg.unet_steps)
    (out_dir / "scaling_factor.json").write_text(json.dumps({"scaling_factor": scaling, "unet_step": step}))
    _done(cfg, "unet").touch()
    return unet


def assemble(cfg: TrainConfig, clip, vae, unet, tokenizer):
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    scaling = json.loads((cfg.out / "work" / "unet" / "final" / "scaling_factor.json").read_text())["scaling_factor"]
    vae.register_to_config(scaling_factor=scaling)
    pipe = StableDiffusionPipeline(
        vae=vae.cpu(),
        text_encoder=text_encoder_from_clip(clip.cpu()),
        tokenizer=tokenizer,
        unet=unet.cpu(),
        scheduler=DDIMScheduler.from_config(noise_scheduler_config()),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(cfg.out / "pipeline")
    return pipe


def train_all(cfg: TrainConfig):
    cfg.out = Path(cfg.out)
    (cfg.out / "work").mkdir(parents=True, exist_ok=True)
    (cfg.out / "work" / "config.json").write_text(json.dumps({**asdict(cfg), "out": str(cfg.out)}, indent=1))
    t0 = time.time()
    timings = {}
    from transformers import CLIPTokenizer

    clip = train_clip(cfg, "clip", small=False, steps=cfg.clip_steps)
    timings["clip"] = time.time() - t0
    if "clip_eval" in cfg.stages:
        train_clip(cfg, "clip_eval", small=True, steps=cfg.clip_eval_steps)
        timings["clip_eval"] = time.time() - t0
    tokenizer = CLIPTokenizer.from_pretrained(cfg.out / "clip")
    vae = train_vae(cfg)
    timings["vae"] = time.time() - t0
    latents, captions = encode_latents(cfg, vae)
    timings["latents"] = time.time() - t0
    vae = finetune_vae_decoder(cfg, vae)
    timings["vae_decoder"] = time.time() - t0
    train_tiny_decoder(cfg, vae, latents, 1.0 / latents.std().item())
    timings["tiny_decoder"] = time.time() - t0
    unet = train_unet(cfg, latents, captions, clip, tokenizer)
    timings["unet"] = time.time() - t0
    assemble(cfg, clip, vae, unet, tokenizer)
    timings["total_s"] = time.time() - t0
    (cfg.out / "work" / "timings.json").write_text(json.dumps(timings, indent=1))
    return timings


def check_complete(run_dir: Path) -> None:
    """A run can be exported only when every stage finished and it is not a `--smoke` run."""
    run_dir = Path(run_dir)
    config = run_dir / "work" / "config.json"
    missing = [s for s in STAGES if s != "assemble" and not (run_dir / "work" / s / "done").exists()]
    if not config.exists() or missing:
        raise ValueError(f"{run_dir} is not a finished `toyworld train` run (unfinished stages: {missing or 'all'})")
    smoke = TrainConfig.smoke(run_dir)
    if json.loads(config.read_text()).get("unet_steps", 0) <= smoke.unet_steps:
        raise ValueError(f"{run_dir} is a --smoke run (a few steps per stage): its models are not usable")


EXPORT_GATE = 0.9  # the shipped world's VAE round trips pass 0.985; a run below 0.9 is not exported


@torch.no_grad()
def quality_gate(run_dir: Path, per_category: int = 40) -> dict:
    """The export gate: VAE round trips of renders must pass the exact evaluator at least `EXPORT_GATE` of the time
    (`reconstruction_accuracy`, a smaller draw); raises ValueError below it."""
    from diffusers import AutoencoderKL

    accuracy = reconstruction_accuracy(AutoencoderKL.from_pretrained(Path(run_dir) / "pipeline" / "vae"), per_category)
    if accuracy["all"] < EXPORT_GATE:
        raise ValueError(
            f"{run_dir} fails the quality gate: VAE round trips pass {accuracy['all']:.1%} of renders "
            f"(at least {EXPORT_GATE:.0%} needed); train longer"
        )
    return accuracy


def export(run_dir: Path, dest: Path, recommended: dict, notes: dict | None = None, backup: bool = False) -> None:
    """Copy a finished run's pipeline and CLIPs to `dest` with `toyworld.json`; with `backup`, what `dest` held
    is first moved to `dest.backup-<time>`."""
    import shutil

    run_dir, dest = Path(run_dir), Path(dest)
    check_complete(run_dir)
    gate = quality_gate(run_dir)
    names = ("pipeline", "clip", "clip-eval", "tiny-decoder")
    for name in names:
        if not (run_dir / name).exists():
            raise FileNotFoundError(f"{run_dir / name} is missing: finish `toyworld train --out {run_dir}` first")
    if backup and dest.exists():
        shutil.copytree(dest, dest.with_name(f"{dest.name}.backup-{time.strftime('%Y%m%d-%H%M%S')}"))
    dest.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.rmtree(dest / name, ignore_errors=True)
        shutil.copytree(run_dir / name, dest / name)
    work = run_dir / "work"
    meta = {
        "recommended": recommended,
        "export_quality_gate": gate,
        "suite_version": "v1",
        "training_config": json.loads((work / "config.json").read_text()) if (work / "config.json").exists() else None,
        "training_timings_s": json.loads((work / "timings.json").read_text())
        if (work / "timings.json").exists()
        else None,
        **(notes or {}),
    }
    (dest / "pipeline" / "toyworld.json").write_text(json.dumps(meta, indent=1) + "\n")


def finalize_from_checkpoint(cfg: TrainConfig) -> None:
    """Assemble the pipeline from the UNet stage's latest checkpoint (its EMA weights), e.g. when a run must
    stop before its last step. Writes what `train_all` writes at the end; records the step used."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPModel, CLIPTokenizer

    cfg.out = Path(cfg.out)
    work = cfg.out / "work"
    meta = json.loads((work / "unet" / "checkpoint.json").read_text())
    clip = CLIPModel.from_pretrained(cfg.out / "clip")
    unet = UNet2DConditionModel(**unet_config(clip.config.text_config.hidden_size))
    unet.load_state_dict(load_file(work / "unet" / "model.safetensors"))
    shadow = load_file(work / "unet" / "ema.safetensors")
    params = [p for p in unet.parameters() if p.requires_grad]
    with torch.no_grad():
        for i, p in enumerate(params):
            p.copy_(shadow[str(i)])
    latents = load_file(work / "latents" / "latents.safetensors")["latents"]
    final = work / "unet" / "final"
    final.mkdir(parents=True, exist_ok=True)
    (final / "scaling_factor.json").write_text(
        json.dumps({"scaling_factor": 1.0 / latents.std().item(), "unet_step": meta["step"]})
    )
    vae_dir = work / "vae_decoder" / "final"
    vae = AutoencoderKL.from_pretrained(vae_dir if vae_dir.exists() else work / "vae" / "final")
    assemble(cfg, clip, vae, unet.eval(), CLIPTokenizer.from_pretrained(cfg.out / "clip"))
