"""A CLIP tokenizer whose vocabulary is learned from a word list (the toy grammar, or any test vocabulary).

The merges are trained with the `tokenizers` BPE trainer on the word list itself, so every listed word becomes
one token and any other text still tokenizes (into characters). The result is a stock `CLIPTokenizer`.
"""

from __future__ import annotations

import json

from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import CLIPTokenizer

BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def build_clip_tokenizer(words: list[str], model_max_length: int = 77) -> CLIPTokenizer:
    # Same pre-tokenisation as CLIPTokenizer: byte-level characters, "</w>" marks the end of a word.
    bpe = Tokenizer(models.BPE(end_of_word_suffix="</w>", unk_token=EOS))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=100_000,
        special_tokens=[BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        end_of_word_suffix="</w>",
        show_progress=False,
    )
    bpe.train_from_iterator(words, trainer=trainer)  # one word per item: no spaces to absorb
    state = json.loads(bpe.to_str())["model"]
    # The trainer's token set and merge set are fixed by `words`, but its ids and the order of equally frequent
    # merges follow hash-map order, which differs from process to process: number and order them canonically,
    # so that one word list gives one tokenizer (and a model trained on it the same weights) in every run.
    merges = sorted(
        (tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in state["merges"]),
        key=lambda m: (len(m[0] + m[1]), m[0] + m[1], m),  # a merge after those making its parts
    )
    tokens = set(state["vocab"]) - {BOS, EOS}
    # CLIP looks up single characters both bare and as word ends ("a</w>"): make sure both exist.
    tokens |= {tok for ch in pre_tokenizers.ByteLevel.alphabet() for tok in (ch, ch + "</w>")}
    vocab = {tok: i for i, tok in enumerate([BOS, EOS, *sorted(tokens, key=lambda t: (len(t), t))])}
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length)


def build_t5_tokenizer(words: list[str]):
    """A stock `T5Tokenizer` (unigram) over `words` plus single letters, for tiny test models."""
    from transformers import T5Tokenizer

    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [("\u2581" + w, -1.0) for w in words]
    vocab += [(c, -5.0) for c in letters] + [("\u2581", -6.0)]
    return T5Tokenizer(vocab=vocab, extra_ids=0)
