"""A small local tokenizer for the Qwen2 / Qwen3 text encoders of the tiny test models (the hub's tiny Qwen2
tokenizer cannot be fetched here): word level, with the special tokens the Qwen chat format uses, and a chat
template that writes what Qwen3's writes for one user message (`enable_thinking` as Qwen3's)."""

from __future__ import annotations

from tokenizers import Regex, Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>", "<unk>"]
# the words of Qwen-Image's prompt template (the real tokenizer makes its prefix 34 tokens, and so does this one)
TEMPLATE_WORDS = (
    "system user assistant Describe the image by detailing color shape size texture quantity text spatial "
    "relationships of objects and background"
).split()
PROMPT_WORDS = "a red blue green circle square cat dog photo bad quality dance monkey".split()

CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}"
    "{%- endif %}"
)


def build_qwen_tokenizer(words=()) -> PreTrainedTokenizerFast:
    """A word-level fast tokenizer: spaces separate words, a newline and each punctuation mark are tokens."""
    vocab = {}
    for token in [*SPECIAL, "\n", ",", ":", ".", *TEMPLATE_WORDS, *PROMPT_WORDS, *words]:
        vocab.setdefault(token, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(" ", behavior="removed"),
            pre_tokenizers.Split(Regex(r"\n|[^\w\s]"), behavior="isolated"),
        ]
    )
    tok.add_special_tokens(SPECIAL)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        pad_token="<|endoftext|>",
        eos_token="<|im_end|>",
        model_max_length=131072,
        padding_side="right",
        chat_template=CHAT_TEMPLATE,
    )
