"""Speed and memory measurements (`date-diffusion bench-perf`). The names below are light: the command line builds its
parser from them before importing torch."""

from date_diffusion.toyworld.world import NAME as TOY

MODELS = (TOY, "sd15-random-256", "sd15-random-512")  # besides any diffusers folder
VARIANTS = (
    "fixed",
    "date",
    "date-checkpointing",
    "date-approx",
    "date-approx-checkpointing",
    "date-lowres",
    "date-lowres-checkpointing",
)
