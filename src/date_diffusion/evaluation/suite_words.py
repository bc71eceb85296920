"""What the benchmark's methods know of the suites (`bench/suites.py` builds the suites from these): which suites
are editing suites, and the subject words Attend-and-Excite excites."""

from __future__ import annotations

EDITING = ("edit-toy", "edit")  # editing by DDPM inversion: each item starts from a source image


def is_editing_suite(name: str) -> bool:
    return name in EDITING


# Attend-and-Excite's word lists (Chefer et al., 2023): 66 animal pairs + 144 animal-object pairs + 66 coloured
# object pairs = 276 prompts. The colours of the third group are drawn here with a fixed seed.
ANE_ANIMALS = ["cat", "dog", "bird", "bear", "lion", "horse", "elephant", "monkey", "frog", "turtle", "rabbit", "mouse"]
ANE_OBJECTS = [
    "backpack",
    "glasses",
    "crown",
    "suitcase",
    "chair",
    "balloon",
    "bow",
    "car",
    "bowl",
    "bench",
    "clock",
    "apple",
]
ANE_COLORS = ["red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "gray", "black", "white"]


def subject_words() -> set[str]:
    """The subject nouns of every suite (Attend-and-Excite's animals and objects, the toy world's shapes):
    the words whose tokens Attend-and-Excite excites."""
    from date_diffusion.toyworld.scene import PLURALS, SHAPES

    return set(ANE_ANIMALS) | set(ANE_OBJECTS) | set(SHAPES) | set(PLURALS.values())
