"""Rewards: one file per reward, the registry of names and specs in `registry.py`.

Names are imported lazily: the command line imports `rewards.registry` before (or without) importing torch.
"""

from importlib import import_module

_EXPORTS = {
    "OpenCLIPReward": "date_diffusion.rewards.openclip",
    "OpenCLIPArch": "date_diffusion.rewards.openclip",
    "ARCHS": "date_diffusion.rewards.openclip",
    "clipmodel_from_openclip": "date_diffusion.rewards.openclip",
    "convert_state_dict": "date_diffusion.rewards.openclip",
    "arch_from_state_dict": "date_diffusion.rewards.openclip",
    "HPSReward": "date_diffusion.rewards.hps",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'date_diffusion.rewards' has no attribute {name!r}")
