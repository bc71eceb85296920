# Appended to diffusers' tests/conftest.py by tests/peer/run.py: local stand-ins for the hub's tiny test tokenizers,
# processors and text-encoder configs that the pipelines' fast tests load (no network here). Each stand-in is a
# folder built here, once per test session, with the files a hub repo of that name would give `from_pretrained`:
# the requested class (CLIPTokenizer, AutoTokenizer, GemmaTokenizer, Qwen2Tokenizer(Fast), AutoProcessor, AutoConfig)
# loads it as it would the repo. The vocabularies are small and made up, so tests whose expected values depend on
# the hub tokenizer's ids fail for the stock and the DATE pipeline alike: only the difference between the two runs
# is read. A stand-in acts on the stock and the DATE pipeline alike.
#
# Written as a fragment of diffusers' conftest.py: it imports only transformers and the standard library, and its
# names start with `_` so that pytest takes none of them for a fixture or a test.
import atexit as _atexit
import json as _json
import os as _os
import shutil as _shutil
import tempfile as _tempfile

import transformers as _tf

_ROOT = _tempfile.mkdtemp(prefix="peer-standins-")
_atexit.register(_shutil.rmtree, _ROOT, True)
_BUILT: dict = {}

# the printable ASCII characters: every stand-in vocabulary spells a prompt character by character
_CHARS = [chr(c) for c in range(33, 127)]


def _bytes_to_unicode():
    """GPT-2's byte-level alphabet (what a byte-level BPE vocabulary, e.g. Qwen2's, must hold)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def _clip(folder):
    """tiny-random-clip: CLIP's BPE with one token per character (word-final and not), no merges, 77 tokens."""
    vocab = {}
    for suffix in ("", "</w>"):
        for ch in _CHARS:
            vocab[ch + suffix] = len(vocab)
    for tok in ("<|startoftext|>", "<|endoftext|>"):
        vocab[tok] = len(vocab)
    _tf.CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77).save_pretrained(folder)


# the hub's tiny T5 (hf-internal-testing/tiny-random-t5): its config, and a T5 tokenizer of 1000 pieces at most
_T5_CONFIG = dict(
    vocab_size=1103,
    d_model=32,
    d_kv=8,
    d_ff=37,
    num_layers=5,
    num_decoder_layers=5,
    num_heads=4,
    relative_attention_num_buckets=8,
    dropout_rate=0.1,
    layer_norm_epsilon=1e-6,
    initializer_factor=0.002,
    pad_token_id=0,
    eos_token_id=1,
    decoder_start_token_id=0,
)


def _t5(folder):
    """tiny-random-t5: the config above, and a unigram T5 tokenizer (pad 0, eos 1, unk 2) of single characters with
    and without the word-start mark; 100 extra ids as T5's; `</s>` appended; 512 tokens."""
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [(ch, -3.0) for ch in _CHARS] + [("▁" + ch, -2.5) for ch in _CHARS]
    _tf.T5Tokenizer(vocab=pieces, extra_ids=100, model_max_length=512).save_pretrained(folder)
    _tf.T5Config(**_T5_CONFIG).save_pretrained(folder)


def _gemma(folder):
    """dummy-gemma: a Gemma tokenizer whose ids fit the suites' Gemma2 encoder of 8 tokens: the special tokens, two
    characters, everything else `<unk>`; bos prepended, padding on the right."""
    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "<mask>": 4, "▁": 5, "a": 6, "e": 7}
    tok = _tf.GemmaTokenizer(vocab=vocab, merges=[], padding_side="right", model_max_length=8192)
    tok.save_pretrained(folder)


# Qwen's chat format (Qwen2.5-VL / Qwen3): Z-Image and FLUX.2 Klein call `apply_chat_template` with `enable_thinking`
_QWEN_CHAT = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}"
    "{% for c in m['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}"
    "<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}"
    "{% endif %}"
)


def _qwen2(folder):
    """tiny-random-Qwen2VLForConditionalGeneration's tokenizer: Qwen2's byte-level BPE over the 256 byte symbols (no
    merges), Qwen's special tokens after them, Qwen's chat format; `<|endoftext|>` pads."""
    vocab = {ch: i for i, ch in enumerate(_bytes_to_unicode())}
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>"]
    specials += ["<|video_pad|>", "<think>", "</think>"]
    tok = _tf.Qwen2Tokenizer(vocab=vocab, merges=[], model_max_length=32768)
    tok.add_special_tokens({"additional_special_tokens": specials})
    tok.chat_template = _QWEN_CHAT
    tok.save_pretrained(folder)


# Mistral-Small-3.1's chat format, as FLUX.2 formats its prompts (system and user messages of text parts)
_MISTRAL_CHAT = (
    "{{ bos_token }}{%- for m in messages -%}"
    "{%- if m['content'] is string %}{% set t = m['content'] %}{% else %}"
    "{% set t = m['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text') | join('') %}"
    "{% endif -%}"
    "{%- if m['role'] == 'system' %}[SYSTEM_PROMPT]{{ t }}[/SYSTEM_PROMPT]"
    "{%- elif m['role'] == 'user' %}[INST]{{ t }}[/INST]"
    "{%- else %}{{ t }}{{ eos_token }}{% endif -%}"
    "{%- endfor -%}"
)


def _mistral_processor(folder):
    """Mistral-Small-3.1-24B-Instruct-2503-only-processor: the Pixtral processor needs torchvision, which this
    environment lacks, so a tokenizer with Mistral's special tokens (unk 0, image 1, bos 2, eos 3, pad 4, as the
    suite's Mistral3 config) and chat format stands in: FLUX.2 calls only its `apply_chat_template` (text-only
    prompts), which a tokenizer answers as the processor does; AutoProcessor loads a folder of a tokenizer alone as
    that tokenizer."""
    vocab = {"<unk>": 0, "[IMG]": 1, "<s>": 2, "</s>": 3, "<pad>": 4, "▁": 5}
    for ch in _CHARS:
        vocab[ch] = len(vocab)
    for ch in _CHARS:
        vocab["▁" + ch] = len(vocab)
    tok = _tf.LlamaTokenizer(vocab=vocab, merges=[], pad_token="<pad>", model_max_length=131072)
    specials = ["[IMG]", "[INST]", "[/INST]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]"]
    tok.add_special_tokens({"additional_special_tokens": specials})
    tok.chat_template = _MISTRAL_CHAT
    tok.save_pretrained(folder)


_STANDINS = {
    "hf-internal-testing/tiny-random-clip": _clip,
    "hf-internal-testing/tiny-random-t5": _t5,
    "hf-internal-testing/dummy-gemma": _gemma,
    "hf-internal-testing/tiny-random-Qwen2VLForConditionalGeneration": _qwen2,
    "hf-internal-testing/Mistral-Small-3.1-24B-Instruct-2503-only-processor": _mistral_processor,
}


def _standin(name):
    """The local folder standing in for hub repo `name`, or None where there is no stand-in."""
    build = _STANDINS.get(str(name).rstrip("/"))
    if build is None:
        return None
    if name not in _BUILT:
        folder = _os.path.join(_ROOT, str(name).replace("/", "--"))
        _os.makedirs(folder, exist_ok=True)
        build(folder)
        with open(_os.path.join(folder, "STANDIN.json"), "w") as file:
            _json.dump({"stands_in_for": name}, file)
        _BUILT[name] = folder
    return _BUILT[name]


def _redirect(owner):
    """Make `owner.from_pretrained` (a classmethod defined on it) load a stand-in's folder in place of its repo."""
    original = owner.__dict__["from_pretrained"].__func__

    def from_pretrained(cls, name, *args, _original=original, **kwargs):
        folder = _standin(name) if isinstance(name, str) else None
        return _original(cls, folder or name, *args, **kwargs)

    owner.from_pretrained = classmethod(from_pretrained)


for _owner in (
    _tf.PreTrainedTokenizerBase,
    _tf.AutoTokenizer,
    _tf.AutoConfig,
    getattr(_tf, "PreTrainedConfig", None) or _tf.PretrainedConfig,
    _tf.AutoProcessor,
    _tf.ProcessorMixin,
):
    _redirect(_owner)
