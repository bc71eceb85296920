"""`clip_skip` on Stable Diffusion 1.x/2.x with transformers 5's flattened `CLIPTextModel`.

Stock diffusers reads the final LayerNorm from `text_encoder.text_model`, which transformers 5's `CLIPTextModel`
no longer has; `StableDiffusionDATEPipeline.encode_prompt` computes that case itself. Checked against an
independent oracle (the hidden states taken by hand from the text encoder) and against stock diffusers run on the
same weights in the older layout (the text transformer under `.text_model`), where the stock code works.
"""

from __future__ import annotations

import pytest
import torch
from conftest import MAX_TOKENS, WORDS, make_components, tiny_clip_text_config
from diffusers import StableDiffusionPipeline
from transformers import CLIPTextModel

from date_diffusion import StableDiffusionDATEPipeline

PROMPTS = ["a red circle", "a blue dog"]
LAYERS = 3  # so that clip_skip=2 still picks a transformer layer's output, not the token embeddings


class OldLayoutTextEncoder(torch.nn.Module):
    """The layout of transformers < 5 (`CLIPTextModel.text_model.final_layer_norm`), around the same weights."""

    def __init__(self, inner: CLIPTextModel):
        super().__init__()
        self.text_model = inner
        self.config = inner.config

    @property
    def dtype(self):
        return self.text_model.dtype

    @property
    def device(self):
        return self.text_model.device

    def forward(self, *args, **kwargs):
        return self.text_model(*args, **kwargs)


def fresh_tokenizer():
    from date_diffusion.toyworld.tokenizer import build_clip_tokenizer

    return build_clip_tokenizer(WORDS, MAX_TOKENS)  # its own: textual inversion adds tokens to it


def components(tokenizer=None):
    tokenizer = tokenizer or fresh_tokenizer()
    comps = make_components(tokenizer)
    config = tiny_clip_text_config(tokenizer)
    config.num_hidden_layers = LAYERS
    torch.manual_seed(1)
    comps["text_encoder"] = CLIPTextModel(config).eval()
    return comps


def build(comps, old_layout: bool = False, cls=StableDiffusionDATEPipeline):
    if old_layout:
        comps = {**comps, "text_encoder": OldLayoutTextEncoder(comps["text_encoder"])}
    pipe = cls(**comps)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def oracle(text_encoder, tokenizer, prompts, clip_skip: int, masked: bool = False) -> torch.Tensor:
    """By hand: hidden state -(clip_skip + 1) of all hidden states, through the final LayerNorm."""
    ids = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, return_tensors="pt")
    with torch.no_grad():
        mask = ids.attention_mask if masked else None
        out = text_encoder(ids.input_ids, attention_mask=mask, output_hidden_states=True)
        assert len(out.hidden_states) == LAYERS + 1  # the embeddings' output, then one per layer
        return text_encoder.final_layer_norm(out.hidden_states[-(clip_skip + 1)])


def gens(*seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


def images(pipe, **kw):
    kw.setdefault("num_inference_steps", 4)
    kw.setdefault("guidance_scale", 7.5)
    return pipe(PROMPTS, generator=gens(0, 1), output_type="np", **kw).images


def far(a, b, margin: float = 1e-3) -> bool:
    return float((torch.as_tensor(a) - torch.as_tensor(b)).detach().abs().max()) > margin


def test_the_oracle_indexes_like_the_encoder():
    """hidden_states[-1] through the LayerNorm is the encoder's own last_hidden_state (clip_skip 0)."""
    comps = components()
    te, tok = comps["text_encoder"], comps["tokenizer"]
    assert not hasattr(te, "text_model"), "transformers' CLIPTextModel has `.text_model` again: the own path is idle"
    ids = tok(PROMPTS, padding="max_length", max_length=tok.model_max_length, return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(oracle(te, tok, PROMPTS, 0), te(ids).last_hidden_state, rtol=0, atol=1e-6)


@pytest.mark.parametrize("clip_skip", [1, 2])
def test_prompt_embeds_are_the_skipped_layers_hidden_states(clip_skip):
    comps = components()
    pipe = build(comps)
    te, tok = comps["text_encoder"], comps["tokenizer"]
    expected = oracle(te, tok, PROMPTS, clip_skip)
    got, negative = pipe.encode_prompt(PROMPTS, "cpu", 1, True, clip_skip=clip_skip)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    # not another layer, not without the LayerNorm, not the full encoder
    with torch.no_grad():
        hidden = te(tok(PROMPTS, padding="max_length", return_tensors="pt").input_ids, output_hidden_states=True)
    for other in {0, 1, 2} - {clip_skip}:
        assert far(got, oracle(te, tok, PROMPTS, other))
    assert far(got, hidden.hidden_states[-(clip_skip + 1)])
    # stock: the negative prompt is encoded without clip_skip
    torch.testing.assert_close(negative, pipe.encode_prompt(PROMPTS, "cpu", 1, True)[1], rtol=0, atol=0)
    torch.testing.assert_close(negative, oracle(te, tok, ["", ""], 0), rtol=0, atol=1e-6)


@pytest.mark.parametrize("clip_skip", [1, 2])
def test_the_call_samples_with_the_skipped_embeddings(clip_skip):
    comps = components()
    pipe = build(comps)
    seen = []

    def grab(p, i, t, tensors):
        seen.append(tensors["prompt_embeds"].clone())
        return {}

    images(pipe, clip_skip=clip_skip, callback_on_step_end=grab, callback_on_step_end_tensor_inputs=["prompt_embeds"])
    negative, positive = seen[0].chunk(2)  # the stock [negative; positive] batch
    torch.testing.assert_close(positive, oracle(comps["text_encoder"], comps["tokenizer"], PROMPTS, clip_skip))
    torch.testing.assert_close(negative, oracle(comps["text_encoder"], comps["tokenizer"], ["", ""], 0))


def test_full_call_with_clip_skip_acts_and_equals_stock_on_the_older_layout():
    comps = components()
    ours = build(comps)
    stock_old = build(comps, old_layout=True, cls=StableDiffusionPipeline)
    plain = images(ours)
    skipped = images(ours, clip_skip=1)
    assert skipped.shape == plain.shape == (2, 16, 16, 3)
    assert torch.isfinite(torch.as_tensor(skipped)).all()
    assert far(skipped, plain)  # the option acts
    # stock diffusers where its own clip_skip code works: same weights, older layout
    assert not far(skipped, images(stock_old, clip_skip=1), 1e-5)
    assert far(images(ours, clip_skip=2), skipped)


def test_without_clip_skip_unchanged():
    comps = components()
    ours, stock = build(comps), build(comps, cls=StableDiffusionPipeline)
    assert not far(images(ours), images(stock), 1e-5)
    for a, b in zip(ours.encode_prompt(PROMPTS, "cpu", 2, True), stock.encode_prompt(PROMPTS, "cpu", 2, True)):
        assert torch.equal(a, b)


def test_stock_fails_on_the_new_layout_where_ours_works():
    """Why the override exists (if diffusers fixes its clip_skip, this is skipped, the override stays correct)."""
    comps = components()
    try:
        build(comps, cls=StableDiffusionPipeline).encode_prompt(PROMPTS, "cpu", 1, True, clip_skip=1)
    except AttributeError as e:
        assert "text_model" in str(e)
    else:
        pytest.skip("stock diffusers' clip_skip works with this transformers")
    build(comps).encode_prompt(PROMPTS, "cpu", 1, True, clip_skip=1)


@pytest.mark.parametrize(
    "kw",
    [
        dict(num_images_per_prompt=2, do_classifier_free_guidance=True),
        dict(num_images_per_prompt=1, do_classifier_free_guidance=True, negative_prompt=["cat", "square dog"]),
        dict(num_images_per_prompt=3, do_classifier_free_guidance=False),
        dict(num_images_per_prompt=1, do_classifier_free_guidance=True, attention_mask=True),
        dict(num_images_per_prompt=2, do_classifier_free_guidance=True, given_embeds=True),
    ],
    ids=["per-prompt", "negative", "no-cfg", "attention-mask", "prompt-embeds"],
)
@pytest.mark.parametrize("old_layout", [False, True], ids=["transformers5", "text_model"])
def test_encode_prompt_equals_stock_on_the_older_layout(kw, old_layout):
    kw = dict(kw)
    comps = components()
    te = comps["text_encoder"]
    masked = kw.pop("attention_mask", False)
    te.config.use_attention_mask = masked
    stock = build(comps, old_layout=True, cls=StableDiffusionPipeline)
    ours = build(comps, old_layout=old_layout)
    if kw.pop("given_embeds", False):  # stock: given embeddings are used as they are, clip_skip has no effect
        kw["prompt_embeds"] = torch.randn(2, MAX_TOKENS, 16, generator=torch.Generator().manual_seed(3))
    expected = stock.encode_prompt(PROMPTS, "cpu", clip_skip=1, **kw)
    got = ours.encode_prompt(PROMPTS, "cpu", clip_skip=1, **kw)
    assert len(got) == 2 and (got[1] is None) == (expected[1] is None)
    for a, b in zip(got, expected):
        if b is not None:
            assert a.shape == b.shape and a.dtype == b.dtype
            assert torch.equal(a, b)
    n = kw["num_images_per_prompt"]
    assert got[0].shape == (2 * n, MAX_TOKENS, 16)
    if "prompt_embeds" not in kw:
        expected = oracle(te, comps["tokenizer"], PROMPTS, 1, masked=masked)
        torch.testing.assert_close(got[0][::n], expected, rtol=0, atol=1e-6)
    if masked:  # the mask reaches the encoder (padding positions change)
        te.config.use_attention_mask = False
        assert far(got[0], ours.encode_prompt(PROMPTS, "cpu", clip_skip=1, **kw)[0], 1e-4)


def test_lora_scale_acts_on_the_skipped_embeddings():
    from peft import LoraConfig

    comps = components()
    te = comps["text_encoder"]
    lora = LoraConfig(r=4, lora_alpha=4, target_modules=["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"])
    torch.manual_seed(5)
    te.add_adapter(lora.__class__(**{**lora.to_dict(), "init_lora_weights": False}))
    ours, stock = build(comps), build(comps, old_layout=True, cls=StableDiffusionPipeline)
    before = ours.encode_prompt(PROMPTS, "cpu", 1, False, clip_skip=1)[0]
    for scale in (None, 0.5, 2.0):
        got = ours.encode_prompt(PROMPTS, "cpu", 1, False, lora_scale=scale, clip_skip=1)[0]
        assert torch.equal(got, stock.encode_prompt(PROMPTS, "cpu", 1, False, lora_scale=scale, clip_skip=1)[0])
        assert (scale is None) != far(got, before)  # the scale reaches the skipped layers
    # and is undone: the adapter's own scale again, for our own and the stock text encodings
    assert torch.equal(ours.encode_prompt(PROMPTS, "cpu", 1, False, clip_skip=1)[0], before)
    # through the call: `cross_attention_kwargs={"scale": ...}` as stock
    kw = dict(clip_skip=1, cross_attention_kwargs={"scale": 0.5})
    assert not far(images(ours, **kw), images(stock, **kw), 1e-5)
    assert far(images(ours, **kw), images(ours, clip_skip=1))


def test_textual_inversion_multi_vector_token():
    tok = fresh_tokenizer()
    comps = components(tok)
    ours = build(comps)
    vectors = torch.randn(2, 16, generator=torch.Generator().manual_seed(7))
    ours.load_textual_inversion(vectors, token="<shape>")
    shared = {**comps, "text_encoder": ours.text_encoder, "tokenizer": ours.tokenizer}
    stock = build(shared, old_layout=True, cls=StableDiffusionPipeline)
    prompts = ["a <shape> circle", "a blue dog"]
    got = ours.encode_prompt(prompts, "cpu", 1, False, clip_skip=1)[0]
    assert torch.equal(got, stock.encode_prompt(prompts, "cpu", 1, False, clip_skip=1)[0])
    converted = ours.maybe_convert_prompt(prompts, ours.tokenizer)
    assert converted[0] != prompts[0]  # both vectors of the token are used
    torch.testing.assert_close(got, oracle(ours.text_encoder, ours.tokenizer, converted, 1), rtol=0, atol=1e-6)
    assert far(got, oracle(ours.text_encoder, ours.tokenizer, prompts, 1))
