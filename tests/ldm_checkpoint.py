"""Write tiny diffusers Stable Diffusion components as one original-format (LDM) checkpoint file, the layout of
community `.safetensors` files, so that single-file loading is tested with the real diffusers conversion."""

from __future__ import annotations

_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}
_UNET_FIXED = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}
_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _resnet(rest: str) -> str:
    head, _, tail = rest.partition(".")
    return f"{_RESNET.get(head, head)}.{tail}"


def unet_key(key: str, layers: int) -> str:
    parts = key.split(".")
    for old, new in _UNET_FIXED.items():
        if key.startswith(old + "."):
            return new + key[len(old) :]
    if parts[0] == "mid_block":
        kind, idx, rest = parts[1], int(parts[2]), ".".join(parts[3:])
        return f"middle_block.{2 * idx}.{_resnet(rest)}" if kind == "resnets" else f"middle_block.1.{rest}"
    block, kind, idx, rest = int(parts[1]), parts[2], int(parts[3]), ".".join(parts[4:])
    if parts[0] == "down_blocks":
        if kind == "downsamplers":
            return f"input_blocks.{(block + 1) * (layers + 1)}.0.op.{rest.partition('.')[2]}"
        n = 1 + block * (layers + 1) + idx
        return f"input_blocks.{n}.0.{_resnet(rest)}" if kind == "resnets" else f"input_blocks.{n}.1.{rest}"
    n = block * (layers + 1) + idx
    if kind == "upsamplers":
        return f"output_blocks.{block * (layers + 1) + layers}.{{up}}.conv.{rest.partition('.')[2]}"
    return f"output_blocks.{n}.0.{_resnet(rest)}" if kind == "resnets" else f"output_blocks.{n}.1.{rest}"


def vae_key(key: str, n_up: int) -> str:
    side, _, rest = key.partition(".")
    if not rest or side not in ("encoder", "decoder"):
        return key  # quant_conv, post_quant_conv
    if rest.startswith("conv_norm_out"):
        return f"{side}.norm_out{rest[len('conv_norm_out') :]}"
    parts = rest.split(".")
    if parts[0] == "mid_block":
        if parts[1] == "resnets":
            tail = ".".join(parts[3:]).replace("conv_shortcut", "nin_shortcut")
            return f"{side}.mid.block_{int(parts[2]) + 1}.{tail}"
        tail = ".".join(parts[3:])
        for old, new in _VAE_ATTN.items():
            if tail.startswith(old + "."):
                tail = new + tail[len(old) :]
        return f"{side}.mid.attn_1.{tail}"
    if parts[0] in ("down_blocks", "up_blocks"):
        i = int(parts[1])
        level, word = (i, "down") if parts[0] == "down_blocks" else (n_up - 1 - i, "up")
        if parts[2] in ("downsamplers", "upsamplers"):
            return f"{side}.{word}.{level}.{word}sample.{'.'.join(parts[4:])}"
        tail = ".".join(parts[4:]).replace("conv_shortcut", "nin_shortcut")
        return f"{side}.{word}.{level}.block.{parts[3]}.{tail}"
    return key


def sd_checkpoint(unet, vae, text_encoder) -> dict:
    """The state dict of an SD 1.x original-format checkpoint holding these three models."""
    layers = unet.config.layers_per_block
    out = {}
    attn_blocks = {i for i, t in enumerate(unet.config.up_block_types) if "CrossAttn" in t}
    for key, value in unet.state_dict().items():
        ldm = unet_key(key, layers)
        if "{up}" in ldm:
            ldm = ldm.replace("{up}", "2" if int(key.split(".")[1]) in attn_blocks else "1")
        out["model.diffusion_model." + ldm] = value
    n_up = len(vae.config.up_block_types)
    out.update({"first_stage_model." + vae_key(k, n_up): v for k, v in vae.state_dict().items()})
    for k, v in text_encoder.state_dict().items():  # the original layout nests the text model (`text_model.`)
        out["cond_stage_model.transformer." + (k if k.startswith("text_model.") else "text_model." + k)] = v
    return {k: v.contiguous() for k, v in out.items()}
