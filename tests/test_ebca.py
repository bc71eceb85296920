"""Energy-based cross-attention (EBCA): the stock pipeline when it does not move, its energy descends, its update is
the energy's gradient, every sample is its own, and the bench method runs it."""

import pytest
import torch
from diffusers import StableDiffusionPipeline

from date_diffusion.evaluation.methods import Method, parse_method
from date_diffusion.sampling.ebca import Ebca, EbcaConfig, context_update, cross_attention_names, ebca_energy

PROMPTS = ["a red circle and a blue dog", "a green square"]
KW = dict(num_inference_steps=4, guidance_scale=8.0, output_type="np")


def gens(seeds=(0, 1)):
    return [torch.Generator().manual_seed(s) for s in seeds]


def test_without_steps_it_is_the_stock_pipeline_and_it_restores_the_processors(components, pipe):
    stock = StableDiffusionPipeline(**components)
    stock.set_progress_bar_config(disable=True)
    expected = stock(PROMPTS, generator=gens(), **KW).images
    before = {k: type(p) for k, p in pipe.unet.attn_processors.items()}
    plain = pipe(PROMPTS, generator=gens(), **KW).images
    for still in (dict(gamma_attn=0.0, gamma_norm=0.0), dict(iters=0), dict(tau=0.0)):
        same = pipe(PROMPTS, generator=gens(), ebca=still, **KW).images
        assert (same == plain).all(), still  # bit for bit: the layers run the processors they had
        assert abs(same - expected).max() <= 1e-5
    moved = pipe(PROMPTS, generator=gens(), ebca=dict(gamma_attn=0.5, gamma_norm=0.5), **KW).images
    assert abs(moved - plain).max() > 1e-3
    assert {k: type(p) for k, p in pipe.unet.attn_processors.items()} == before


def _layer_inputs(pipe, tokenizer):
    """A real cross-attention layer of the tiny UNet with the query input and the context it got in a forward."""
    unet = pipe.unet
    name = cross_attention_names(unet)[0].removesuffix(".processor")
    attn = unet.get_submodule(name)
    seen = {}

    def record(module, args, kwargs):
        seen["hidden"], seen["context"] = args[0].detach(), kwargs["encoder_hidden_states"].detach()

    handle = attn.register_forward_pre_hook(record, with_kwargs=True)
    with torch.no_grad():
        ids = tokenizer(PROMPTS, padding="max_length", return_tensors="pt").input_ids
        context = pipe.text_encoder(ids)[0]
        latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
        unet(latents, 500, encoder_hidden_states=context)
    handle.remove()
    return attn, seen["hidden"], seen["context"]


def test_one_update_step_lowers_the_energy_of_a_tiny_unets_cross_attention(pipe, tokenizer):
    attn, hidden, context = _layer_inputs(pipe, tokenizer)
    with torch.no_grad():
        query = attn.to_q(hidden)
        for gamma in (1e-3, 1e-2):
            ga, gn = gamma, 2 * gamma
            energy = lambda c: ebca_energy(query, c, attn.to_k, attn.heads, attn.scale, ga, gn)  # noqa: E731
            step = context_update(query, attn.to_k(context), attn.to_k.weight, attn.heads, attn.scale, ga, gn)
            before, after = energy(context), energy(context + step)
            assert (after < before).all(), (gamma, before, after)
            # a first-order step along -grad: the energy falls by about |grad|^2 = |step|^2 (step = -grad)
            predicted = step.pow(2).sum(dim=(1, 2))
            ratio = (before - after) / predicted
            assert ((ratio > 0.8) & (ratio < 1.2)).all(), (gamma, ratio)


def test_the_update_is_minus_the_energys_gradient_and_matches_finite_differences(pipe, tokenizer):
    attn, hidden, context = _layer_inputs(pipe, tokenizer)
    attn = attn.double()
    query, context = attn.to_q(hidden.double()).detach(), context.double().requires_grad_(True)
    ga, gn = 0.3, 0.7
    energy = lambda c: ebca_energy(query, c, attn.to_k, attn.heads, attn.scale, ga, gn)  # noqa: E731
    (grad,) = torch.autograd.grad(energy(context).sum(), context)
    with torch.no_grad():
        step = context_update(query, attn.to_k(context), attn.to_k.weight, attn.heads, attn.scale, ga, gn)
        torch.testing.assert_close(step, -grad, rtol=1e-9, atol=1e-12)
        gen = torch.Generator().manual_seed(1)
        for _ in range(3):
            v = torch.randn(context.shape, generator=gen, dtype=torch.float64)
            eps = 1e-6
            fd = (energy(context + eps * v) - energy(context - eps * v)) / (2 * eps)
            torch.testing.assert_close(fd, -(step * v).sum(dim=(1, 2)), rtol=1e-6, atol=1e-9)
    attn.float()


def test_the_update_is_the_authors_formula_in_their_layout(pipe, tokenizer):
    """The authors' `bayesian_context_update`, written out in diffusers 0.16's layout (heads in the batch axis,
    `baddbmm` scores with the scale, softmax over the queries, `batch_to_head_dim`, then `@ to_k.weight`)."""
    attn, hidden, context = _layer_inputs(pipe, tokenizer)
    ga, gn = 0.01, 0.02
    with torch.no_grad():
        query, key = attn.head_to_batch_dim(attn.to_q(hidden)), attn.head_to_batch_dim(attn.to_k(context))
        empty = torch.empty(query.shape[0], query.shape[1], key.shape[1])
        scores = torch.baddbmm(empty, query, key.transpose(-1, -2), beta=0, alpha=attn.scale)
        c = attn.batch_to_head_dim(torch.bmm(scores.mT.softmax(dim=-1), query)) * ga
        k = attn.batch_to_head_dim(key)
        c -= k * torch.diagonal(k @ k.mT, dim1=-2, dim2=-1).softmax(dim=-1).unsqueeze(-1) * gn
        theirs = c @ attn.to_k.weight
        ours = context_update(attn.to_q(hidden), attn.to_k(context), attn.to_k.weight, attn.heads, attn.scale, ga, gn)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-7)


def test_the_context_cascades_through_the_layers_and_each_unet_call_starts_afresh(pipe, tokenizer):
    unet = pipe.unet
    names = [n.removesuffix(".processor") for n in cross_attention_names(unet)]
    assert len(names) >= 3  # down, mid and up blocks of the tiny UNet
    ids = tokenizer(PROMPTS, padding="max_length", return_tensors="pt").input_ids
    with torch.no_grad():
        context = pipe.text_encoder(ids)[0]
        latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
        plain = unet(latents, 500, encoder_hidden_states=context).sample
        with Ebca(unet, EbcaConfig(gamma_attn=0.5, gamma_norm=0.5), n_steps=1) as ebca:
            seen = []  # the cascaded context each layer starts from (None: the one it is given)
            hooks = [unet.get_submodule(n).register_forward_pre_hook(lambda *_: seen.append(ebca.run.context))
                     for n in names]  # fmt: skip
            first = unet(latents, 500, encoder_hidden_states=context).sample
            second = unet(latents, 500, encoder_hidden_states=context).sample
            for h in hooks:
                h.remove()
            assert ebca.run.updates == 2 * len(names) and ebca.run.context is None
        with Ebca(unet, EbcaConfig(gamma_attn=0.5, gamma_norm=0.5), n_steps=1):
            installed_again = unet(latents, 500, encoder_hidden_states=context).sample
    n = len(names)
    assert seen[0] is None and seen[n] is None  # each UNet call starts from the prompt's context
    assert all((c - context).abs().max() > 1e-4 for c in seen[1:n])  # later layers get the updated one
    assert torch.equal(first, second) and torch.equal(first, installed_again)
    assert (first - plain).abs().max() > 1e-4
    assert all(type(p).__name__ != "EbcaProcessor" for p in unet.attn_processors.values())


def test_every_sample_is_its_own(pipe):
    cfg = dict(gamma_attn=0.5, gamma_norm=0.5)
    both = pipe(PROMPTS, generator=gens(), ebca=cfg, **KW).images
    for j, (prompt, seed) in enumerate(zip(PROMPTS, (0, 1))):
        alone = pipe([prompt], generator=gens([seed]), ebca=cfg, **KW).images
        assert abs(alone[0] - both[j]).max() <= 1e-5


def test_the_schedule_switches_off_from_tau_on():
    cfg = EbcaConfig(gamma_attn=0.01, gamma_norm=0.02, tau=0.5)
    assert [cfg.gammas(i, 5) for i in range(5)] == [(0.01, 0.02)] * 2 + [(0.0, 0.0)] * 3  # int(0.5 * 5) = 2
    assert EbcaConfig().gammas(49, 50) == (0.01, 0.02)
    for bad in (dict(tau=1.5), dict(gamma_attn=-1.0), dict(iters=-1), dict(iters=1.5)):
        with pytest.raises(ValueError):
            EbcaConfig(**bad)


def test_refused_with_what_also_replaces_or_replays_the_attention(pipe, reward):
    with pytest.raises(ValueError, match="both replace"):
        pipe(PROMPTS, ebca={}, attend_and_excite={"token_indices": [[3], [3]]}, **KW)
    with pytest.raises(ValueError, match="gradient_checkpointing"):
        pipe(PROMPTS, ebca={}, gradient_checkpointing=True, **KW)
    with pytest.raises(ValueError, match="unknown settings"):
        pipe(PROMPTS, ebca={"gamma": 1.0}, **KW)
    assert all(type(p).__name__ != "EbcaProcessor" for p in pipe.unet.attn_processors.values())


def test_bench_method_spec_record_and_pipeline_arguments():
    m = parse_method("ebca:attn=0.02,tau=0.5")
    assert m.kind == "ebca" and m.slug == "ebca_attn=0.02_tau=0.5"
    assert m.pipeline_kwargs(None) == {"ebca": {"gamma_attn": 0.02, "tau": 0.5}}
    assert parse_method("ebca").pipeline_kwargs(None) == {"ebca": {}}
    assert Method.from_record(m.label, m.record()) == m
    assert not m.applies_to("edit-toy") and m.applies_to("coco")
    with pytest.raises(ValueError, match="bad setting"):
        parse_method("ebca:gamma=1")
    with pytest.raises(ValueError):
        parse_method("ebca:tau=2")
