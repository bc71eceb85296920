"""Local stand-ins for the hub tokenizers of LLM text encoders (nothing is downloaded): a word-level vocabulary of the
test words plus the special tokens and a chat template that the stock pipelines' `encode_prompt` needs.

- `build_mistral_tokenizer`: FLUX.2's Mistral 3 tokenizer (the text side of its `PixtralProcessor`, which needs
  torchvision, not installed here; `encode_prompt` calls only `apply_chat_template`): `[SYSTEM_PROMPT]...` /
  `[INST]...` messages whose contents are lists of typed parts, as `format_input` writes them; ids 0-4 are
  `<unk>`, `[IMG]`, `<s>`, `</s>`, `<pad>`, the ids the tiny `Mistral3Config` names.
- `build_qwen2_tokenizer`: a `Qwen2TokenizerFast` (FLUX.2 Klein's Qwen3 tokenizer): byte-level BPE over the words,
  `<|im_start|>role\\n...<|im_end|>` messages, the generation prompt with Qwen3's empty think block when
  `enable_thinking=False`.
- `build_qwen_tokenizer`: the same special tokens and chat template over a word-level vocabulary (Qwen-Image's
  Qwen2.5-VL and Z-Image's Qwen3 encoders), whose Qwen-Image prompt-template prefix is 34 tokens, as the real one's.
"""

from __future__ import annotations

from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers

MISTRAL_SPECIAL = ["<unk>", "[IMG]", "<s>", "</s>", "<pad>", "[INST]", "[/INST]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]",
                   "[IMG_BREAK]", "[IMG_END]"]  # fmt: skip
MISTRAL_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% set text = message['content'] if message['content'] is string else "
    "message['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text') | join(' ') %}"
    "{% if message['role'] == 'system' %}[SYSTEM_PROMPT]{{ text }}[/SYSTEM_PROMPT]"
    "{% elif message['role'] == 'user' %}[INST]{{ text }}[/INST]"
    "{% else %}{{ text }}{{ eos_token }}{% endif %}{% endfor %}"
)
QWEN_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]
QWEN_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}{% endif %}"
)


def build_mistral_tokenizer(words: list[str]):
    """A `PreTrainedTokenizerFast` over a word-level vocabulary of `words` (other words: `<unk>`)."""
    from transformers import PreTrainedTokenizerFast

    vocab = {token: k for k, token in enumerate(MISTRAL_SPECIAL)}
    for word in words:
        vocab.setdefault(word, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>",
        additional_special_tokens=MISTRAL_SPECIAL[5:], chat_template=MISTRAL_TEMPLATE,
    )  # fmt: skip


def build_qwen2_tokenizer(words: list[str]):
    """A `Qwen2TokenizerFast`: byte-level BPE trained on `words` (any other text splits into bytes)."""
    import json

    from transformers import Qwen2TokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=100_000, special_tokens=QWEN_SPECIAL, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # fmt: skip
    bpe.train_from_iterator([" " + w for w in words] + words + ["user", "assistant"], trainer=trainer)
    state = json.loads(bpe.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in state["merges"]]
    vocab = dict(state["vocab"])  # the special tokens first, at ids 0-4
    tokenizer = Qwen2TokenizerFast(vocab=vocab, merges=merges, unk_token=None, bos_token=None,
                                   eos_token="<|im_end|>", pad_token="<|endoftext|>")  # fmt: skip
    tokenizer.add_special_tokens({"additional_special_tokens": QWEN_SPECIAL[1:]})
    tokenizer.chat_template = QWEN_TEMPLATE
    return tokenizer


# the words of Qwen-Image's prompt template (the real tokenizer makes its prefix 34 tokens, and so does this one)
TEMPLATE_WORDS = (
    "system user assistant Describe the image by detailing color shape size texture quantity text spatial "
    "relationships of objects and background"
).split()
PROMPT_WORDS = "a red blue green circle square cat dog photo bad quality dance monkey".split()


def build_qwen_tokenizer(words=()):
    """A word-level fast tokenizer: spaces separate words, a newline and each punctuation mark are tokens."""
    from transformers import PreTrainedTokenizerFast

    special = [*QWEN_SPECIAL, "<unk>"]
    vocab = {}
    for token in [*special, "\n", ",", ":", ".", *TEMPLATE_WORDS, *PROMPT_WORDS, *words]:
        vocab.setdefault(token, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(" ", behavior="removed"),
            pre_tokenizers.Split(Regex(r"\n|[^\w\s]"), behavior="isolated"),
        ]
    )
    tok.add_special_tokens(special)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        pad_token="<|endoftext|>",
        eos_token="<|im_end|>",
        model_max_length=131072,
        padding_side="right",
        chat_template=QWEN_TEMPLATE,
    )
