"""The toy world as a plugin (entry point `toyworld` in the group `date_diffusion.plugins`): it registers, through
the public APIs any plugin uses, its rewards (`toy-clip`, ..., `toy-ensemble`, the learned judges) and their earlier
names, the file its model folders hold their recommendations in (`toyworld.json`, with the plain reward `toy-clip`
and the distilled reward decoder), and its shipped model as the default model of every command."""

from __future__ import annotations

from date_diffusion import model_folder
from date_diffusion.rewards import registry
from date_diffusion.rewards.registry import RewardRecord, clip_alias
from date_diffusion.toyworld import world


def _ensemble(source, device):
    """The toy world's reward CLIPs (never its evaluation CLIP), averaged."""
    return registry.reward_from_spec("mean(" + ";".join(world.ENSEMBLE) + ")", device)


def judge_reward(path, device=None, aspect: str = "pass"):
    """A learned judge's folder as a reward (`JudgeReward`)."""
    from date_diffusion.rewards.judge import JudgeReward
    from date_diffusion.toyworld.judge import JudgeModel

    reward = JudgeReward(JudgeModel.from_pretrained(path, device), aspect)
    reward.source = str(path)
    return reward


def _judge(path):
    return lambda source, device: judge_reward(source or path, device)


# their words in SPEC_HELP (toy-clip-eval scores the benchmark's held-out metric and is not listed)
_CLIP_HELP = {"toy-clip": "the toy world's toy-clip", **{n: n for n in ("toy-clip-s1", "toy-clip-m2", "toy-clip-na")}}
REWARDS = (
    *(RewardRecord(name, clip_alias(path), help=_CLIP_HELP.get(name, "")) for name, path in world.CLIPS.items()),
    RewardRecord("toy-ensemble", _ensemble, help="toy-ensemble (their mean)", members=world.ENSEMBLE),
    RewardRecord("toy-judge", _judge(world.JUDGES["toy-judge"]), "optional",
                 "its learned judges toy-judge[:DIR] and toy-judge-na[:DIR]"),
    RewardRecord("toy-judge-na", _judge(world.JUDGES["toy-judge-na"]), "optional"),
)  # fmt: skip
OWNER = "the toy world"


def register() -> None:
    for record in REWARDS:
        registry.register_reward(record)
    for old, new in world.RENAMED.items():
        registry.register_renamed(old, new, OWNER, "its CLIP" if old == "clip" else "")
    model_folder.register_file(world.META_FILE, reward=world.PLAIN_REWARD, reward_decoder=world.TINY_DECODER,
                               origin="the toy world's export")  # fmt: skip
    if world.PIPELINE.exists():
        model_folder.register_default_model(world.PIPELINE, OWNER)
