"""Fine-grained checkpointing: same values and gradients, fewer saved activations, models restored after."""

import torch
from conftest import make_components

from date_diffusion.sampling.checkpointing import fine_checkpointing


def _saved_bytes(fn):
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, total


def _decode_and_score(vae, reward, z):
    images = vae.decode(z).sample.add(1).div(2)
    return reward(images, ["a red circle"] * len(z)).sum()


def test_same_gradient_fewer_saved_tensors_and_restored(tokenizer, reward):
    vae = make_components(tokenizer)["vae"].requires_grad_(False)
    torch.manual_seed(0)
    z = torch.randn(2, 4, 8, 8)
    grads, saved = [], []
    for fine in (False, True):
        x = z.clone().requires_grad_(True)
        with fine_checkpointing(vae.decoder, reward) if fine else torch.enable_grad():
            loss, nbytes = _saved_bytes(lambda: _decode_and_score(vae, reward, x))
            loss.backward()
        grads.append(x.grad)
        saved.append(nbytes)
    assert torch.allclose(grads[0], grads[1], rtol=1e-5, atol=1e-8)
    assert saved[1] < 0.5 * saved[0]
    units = [m for m in (*vae.decoder.modules(), *reward.modules()) if "forward" in m.__dict__]
    assert units == []  # every patched forward removed again


def test_counts_outermost_units_only_and_keeps_an_instance_forward(tokenizer, reward):
    vae = make_components(tokenizer)["vae"]
    resnet = vae.decoder.up_blocks[0].resnets[0]
    hook = resnet.forward  # stands in for an offload hook installed on the instance
    resnet.forward = hook
    with fine_checkpointing(vae.decoder, None) as n:
        assert resnet.forward is not hook
        inner = [m for m in resnet.modules() if m is not resnet and "forward" in m.__dict__]
        units = sum(type(m).__name__ in ("ResnetBlock2D", "Upsample2D", "Attention") for m in vae.decoder.modules())
        assert inner == [] and n == units + 1  # + the output head (norm, activation, convolution) as one
    assert resnet.forward is hook
    with torch.no_grad(), fine_checkpointing(vae.decoder):  # no gradient: plain calls
        a = vae.decode(torch.ones(1, 4, 8, 8)).sample
    assert torch.equal(a, vae.decode(torch.ones(1, 4, 8, 8)).sample)


def test_decoder_head_keeps_only_its_input_at_full_resolution(tokenizer, reward):
    vae = make_components(tokenizer)["vae"].requires_grad_(False)
    z = torch.randn(1, 4, 8, 8)
    sizes = []

    def pack(t):
        sizes.append(t.shape[-2:])
        return t

    x = z.clone().requires_grad_(True)
    with fine_checkpointing(vae.decoder), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        image = vae.decode(x).sample
        assert vae.decoder.conv_out(image) is image  # the head runs inside conv_norm_out's piece
    # at the output size: the inputs of the two residual blocks there and of the head; without grouping also
    # the head's activation and convolution inputs (5)
    assert sum(s == image.shape[-2:] for s in sizes) == 3
    assert torch.allclose(image, vae.decode(z).sample) and "forward" not in vae.decoder.conv_out.__dict__


def test_sequential_decoder_runs_as_segments_with_the_same_gradient():
    from diffusers import AutoencoderTiny

    torch.manual_seed(0)
    tiny = AutoencoderTiny(
        encoder_block_out_channels=(8, 8),
        decoder_block_out_channels=(8, 8),
        num_encoder_blocks=(1, 1),
        num_decoder_blocks=(1, 1),
    ).requires_grad_(False)
    z = torch.randn(1, 4, 8, 8)
    grads, saved = [], []
    for fine in (False, True):
        x = z.clone().requires_grad_(True)
        with fine_checkpointing(tiny) if fine else torch.enable_grad():
            image, nbytes = _saved_bytes(lambda: tiny.decode(x).sample)
            image.square().sum().backward()
        grads.append(x.grad)
        saved.append(nbytes)
    assert torch.allclose(grads[0], grads[1], rtol=1e-5, atol=1e-7)
    one = image[:, :1].numel() * 8 * 4  # one 8-channel activation at the output size
    assert saved[1] < one < saved[0]  # only the input clamp outside the segments (a latent-size tensor)
