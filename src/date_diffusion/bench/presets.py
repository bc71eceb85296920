"""The paper's protocols as bench presets: what each fixes, the bench flags it expands to, its table in the paper's
layout with the reported numbers beside the measured ones, and the GPU time and memory it is expected to take.

paper-coco   Table 1 of the DATE paper (Na et al., NeurIPS 2025): SD 1.5, DDIM 50, guidance 8, one image per COCO
             val2014 caption from seed 6; fixed 50 / fixed 70 / EBCA / Universal Guidance / DATE (CLIP) / DATE
             (ImageReward); FID (Inception), CLIP score (OpenCLIP ViT-g-14, raw cosine), ImageReward.
paper-ane    the multi-concept protocol: Attend-and-Excite's 276 prompts x 64 seeds; full-prompt and minimum-object
             CLIP similarity (the paper's numbers for it are not stored: measured columns only).

Metrics come from the bench's records: `clip_eval` (the `--eval-clip` CLIP), `reward` (the run's `--reward`, which is
why paper-coco's run reward is ImageReward: every method is then scored by it; DATE's CLIP row follows its own
`reward=`), `min_object_clip`, and FID from the report (`fid_inception` with `--inception-weights`, else the
CLIP-feature `fid_clip`, flagged as not comparable).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

from date_diffusion.bench.suites import DEFAULT_SEED_BASE
from date_diffusion.families import PAPER_EVAL_CLIP, PAPER_REWARD, by_name
from date_diffusion.hub import PAPER_MODEL
from date_diffusion.schemas import loads

IMAGE_REWARD = "imagereward"
_PAPER_SAMPLING = by_name("sd").sampling  # the paper's DDIM 50 steps, guidance 8


@dataclass(frozen=True)
class Row:
    """One row of a paper table: its name there, the bench method (a spec with `{guide}` / `{judge}` standing for
    the preset's CLIP and ImageReward specs) and the reported numbers (metric key -> value; absent: not reported)."""

    name: str
    spec: str
    paper: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Preset:
    """A paper protocol: every bench setting it fixes. `reward` is the run's `--reward` (what UG and `date` without
    `reward=` follow, and the `reward` metric of every image), `guide` the CLIP DATE's CLIP row follows, `judge`
    the ImageReward spec; `columns` (metric key, header) in the paper's order."""

    name: str
    title: str
    suite: str
    rows: tuple[Row, ...]
    columns: tuple[tuple[str, str], ...]
    model: str = PAPER_MODEL
    scheduler: str = "ddim"
    steps: int = _PAPER_SAMPLING["num_inference_steps"]
    guidance: float = _PAPER_SAMPLING["guidance_scale"]
    seeds: int = 1
    seed_base: int = DEFAULT_SEED_BASE
    guide: str = PAPER_REWARD
    judge: str = IMAGE_REWARD
    reward: str = "{judge}"
    eval_clip: str = PAPER_EVAL_CLIP
    batch_size: int = 4
    dtype: str = "float32"
    prompts: int | None = None  # the protocol's prompt count (None: the captions file's)

    def _render(self, text: str) -> str:
        return text.format(guide=self.guide, judge=self.judge)

    @property
    def run_reward(self) -> str:
        return self._render(self.reward)

    def methods(self) -> list[str]:
        """The rows' bench method specs, in the table's order."""
        return [self._render(r.spec) for r in self.rows]

    def with_components(self, **changes) -> Preset:
        """The same protocol with other components (model, guide, judge, reward, eval_clip) or sizes (steps, ...):
        a run on other parts, e.g. the tiny CI models; the table says what differs from the paper."""
        return replace(self, **changes)

    def bench_args(self, out, captions=None, *, inception_weights=None, fid_real=None, limit=None) -> list[str]:
        """The `date-diffusion bench` arguments (after `bench`) this preset stands for."""
        args = ["--suite", self.suite]
        if captions is not None:
            args += ["--captions", str(captions)]
        args += ["--model", self.model, "--scheduler", self.scheduler, "--steps", str(self.steps)]
        args += ["--guidance", f"{self.guidance:g}", "--seeds", str(self.seeds), "--seed-base", str(self.seed_base)]
        args += ["--reward", self.run_reward, "--eval-clip", self.eval_clip, "--methods", " ".join(self.methods())]
        args += ["--batch-size", str(self.batch_size), "--dtype", self.dtype]
        if limit is not None:
            args += ["--limit", str(limit)]
        if fid_real is not None:
            args += ["--fid-real", str(fid_real)]
        if inception_weights is not None:
            args += ["--inception-weights", str(inception_weights)]
        return [*args, "--out", str(out)]


PAPER_COCO = Preset(
    name="paper-coco",
    title="Table 1: SD v1.5, DDIM 50 steps, w = 8, COCO val2014 captions, one image each, seed 6",
    suite="coco",
    prompts=5000,
    columns=(("fid", "FID (lower better)"), ("clip_eval", "CLIP score"), ("reward", "ImageReward")),
    rows=(
        Row("fixed embedding, 50 steps", "fixed", {"fid": 18.66, "clip_eval": 0.3204, "reward": 0.2132}),
        Row("fixed embedding, 70 steps", "fixed@70", {"fid": 18.27, "clip_eval": 0.3199, "reward": 0.2137}),
        Row("EBCA", "ebca", {"fid": 25.85, "clip_eval": 0.2877, "reward": -0.3128}),
        # the paper does not state UG's scale; every=10: the guided steps are DATE's update steps (compute-matched)
        Row("Universal Guidance", "ug:scale=2,every=10", {"fid": 18.56, "clip_eval": 0.3216, "reward": 0.2221}),
        Row("DATE, h = CLIP", "date:reward={guide}", {"fid": 17.90, "clip_eval": 0.3237, "reward": 0.2364}),
        Row("DATE, h = ImageReward", "date:reward={judge}", {"fid": 18.61, "clip_eval": 0.3224, "reward": 0.4792}),
    ),
)

PAPER_ANE = Preset(
    name="paper-ane",
    title="Multi-concept: Attend-and-Excite's 276 prompts x 64 seeds, SD v1.5, DDIM 50 steps, w = 8",
    suite="ane",
    prompts=276,
    seeds=64,
    reward="{guide}",
    columns=(("clip_eval", "full-prompt CLIP"), ("min_object_clip", "minimum-object CLIP")),
    rows=(
        Row("fixed embedding", "fixed"),
        Row("Attend-and-Excite", "ae"),
        Row("EBCA", "ebca"),
        Row("DATE, h = CLIP", "date:reward={guide}"),
        Row("DATE + Attend-and-Excite", "date+ae:reward={guide}"),
    ),
)

PRESETS = {p.name: p for p in (PAPER_COCO, PAPER_ANE)}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return PRESETS[name]


def preset_values(preset: Preset) -> dict:
    """The `bench` argparse destinations a preset fixes, with its values."""
    return dict(suite=preset.suite, model=preset.model, scheduler=preset.scheduler, steps=preset.steps,
                guidance=preset.guidance, seeds=preset.seeds, seed_base=preset.seed_base, reward=preset.run_reward,
                eval_clip=preset.eval_clip, methods=" ".join(preset.methods()), batch_size=preset.batch_size,
                dtype=preset.dtype)  # fmt: skip


def apply_preset(options, defaults: dict):
    """`bench --preset NAME`: (the preset, a copy of the frozen dataclass `options` with the preset's settings)
    (captions, out, limit, the FID options and threads stay the user's); a fixed setting given another value than
    its default is refused. `defaults`: the parser's defaults (`{a.dest: a.default for a in parser._actions}`)."""
    preset = get_preset(options.preset)
    values = preset_values(preset)
    clash = [k for k, v in values.items() if getattr(options, k, None) not in (defaults.get(k), v)]
    if clash:
        flags = ", ".join("--" + k.replace("_", "-") for k in clash)
        raise ValueError(f"--preset {preset.name} fixes {flags}: leave them out (or run without the preset)")
    return preset, replace(options, **values)


# ---------------------------------------------------------------------------------------------- the table


def _measured(entry: dict | None, key: str) -> tuple[str, bool]:
    """A metric's measured cell and whether it is the CLIP-feature FID (not comparable to the paper's)."""
    if entry is None:
        return "-", False
    if key == "fid":
        fid = entry.get("fid") or {}
        if "fid_inception" in fid:
            return f"{fid['fid_inception']:.2f}", False
        if "fid_clip" in fid:
            return f"{fid['fid_clip']:.4f}\u2020", True
        return "-", False
    ci = entry["metrics"].get(key)
    return ("-", False) if ci is None else (f"{ci[0]:.4f} [{ci[1]:.4f}, {ci[2]:.4f}]", False)


def _paper_cell(value, key: str) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if key == "fid" else f"{value:.4f}"


def protocol_differences(preset: Preset, settings: dict) -> list[str]:
    """What a run's settings (results.json's `settings`) change of the paper's protocol (the preset of that name as
    shipped, whatever components `preset` was given)."""
    preset = PRESETS.get(preset.name, preset)
    wanted = {"suite": preset.suite, "model": preset.model, "scheduler": preset.scheduler, "steps": preset.steps,
              "guidance": preset.guidance, "reward": preset.run_reward, "eval_clip": preset.eval_clip,
              "seeds": list(range(preset.seed_base, preset.seed_base + preset.seeds))}  # fmt: skip
    out = [f"{k}: {settings.get(k)!r} (paper: {v!r})" for k, v in wanted.items() if settings.get(k) != v]
    limit = settings.get("limit")
    if limit is not None and preset.prompts is not None and limit < preset.prompts:
        out.append(f"prompts: {limit}, --limit's sample over the suite's categories (paper: {preset.prompts})")
    return out


def paper_table(preset: Preset, results) -> str:
    """The preset's table in the paper's layout, each metric's paper value beside the measured one, from a finished
    run's results.json (a path, a run folder or its parsed dict)."""
    if not isinstance(results, dict):
        path = Path(results)
        results = loads((path / "results.json" if path.is_dir() else path).read_text(encoding="utf-8"))
    summary, settings = results["summary"], results["settings"]
    header = ["method"] + [f"{title} {side}" for _, title in preset.columns for side in ("paper", "measured")]
    lines = [f"## {preset.title}", "", "| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    clip_fid = False
    for row, spec in zip(preset.rows, preset.methods()):
        cells = [row.name]
        for key, _ in preset.columns:
            measured, flagged = _measured(summary.get(spec), key)
            clip_fid |= flagged
            cells += [_paper_cell(row.paper.get(key), key), measured]
        lines.append("| " + " | ".join(cells) + " |")
    n = {summary[s]["n"] for s in preset.methods() if s in summary}
    lines += ["", f"Measured: means with 95% bootstrap CIs over {', '.join(map(str, sorted(n))) or 0} images per "
              "method; paper: as the DATE paper (Na et al., 2025) reports them (docs/benchmarks.md)."]  # fmt: skip
    if clip_fid:
        lines.append("\u2020 FID on CLIP image features (`fid_clip`): no `--inception-weights` given; not comparable "
                     "to the paper's Inception FID.")  # fmt: skip
    differences = protocol_differences(preset, settings)
    if differences:
        lines.append("Not the paper's protocol: " + "; ".join(differences) + ".")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- the cost


@dataclass(frozen=True)
class GpuAssumptions:
    """What the estimate assumes (not measured in this project: docs/speed.md has CPU numbers only). Seconds per
    image per normal step of SD 1.5 at 512 px, fp32, batched, on one A100/H100-class GPU (about 3 s per 50-step
    image); an update step of DATE or a guided step of UG in normal steps (the paper's +39% wall time with 10%
    update steps: 1 + 0.39 * 10); EBCA's extra projections and scores per step; an Attend-and-Excite step (a UNet
    forward and backward on one branch) in normal steps; scoring (ImageReward, ViT-g-14, CLIP-L) per image; memory:
    the weights of every model the run loads (SD 1.5 1.07 B parameters, CLIP-L 0.43 B, OpenCLIP ViT-g-14 1.37 B,
    ImageReward 0.47 B) and activations per image in a batch, without and with a gradient."""

    step_seconds: float = 0.06
    gradient_step_cost: float = 4.9
    ebca_overhead: float = 1.1
    ae_step_cost: float = 3.0
    score_seconds: float = 0.1
    weights_params: float = 1.07e9 + 0.43e9 + 1.37e9 + 0.47e9
    activation_gb: float = 0.6
    gradient_activation_gb: float = 5.0


def method_steps(spec: str, steps: int, a: GpuAssumptions) -> tuple[float, bool]:
    """(one image's work in normal steps, whether it back-propagates) of a bench method spec."""
    from date_diffusion.evaluation.methods import parse_method  # the command line imports this module to parse

    m = parse_method(spec)
    n = m.steps_for(steps)
    excite = 0.0
    if m.kind in ("ae", "date+ae"):  # Attend-and-Excite's latent updates (diffusers' default: the first 25 steps)
        excite = (a.ae_step_cost - 1) * min(n, m.iters if m.iters is not None else 25)
    date = getattr(m, "date", None)
    if date is not None:
        updates = len(date.update_indices(n)) * date.grad_steps
        return m.candidates * (n + (a.gradient_step_cost - 1) * updates) + excite, updates > 0 or excite > 0
    if m.kind == "ug":
        guided = math.ceil(n / m.every)
        return n + (a.gradient_step_cost - 1) * guided, True
    return m.candidates * n * (a.ebca_overhead if m.kind == "ebca" else 1.0) + excite, excite > 0


@dataclass(frozen=True)
class Cost:
    seconds: dict  # method spec -> GPU seconds (all its images, all GPUs together)
    images: int
    gpus: int
    peak_gb: float

    @property
    def total_seconds(self) -> float:
        return sum(self.seconds.values())

    @property
    def wall_seconds(self) -> float:
        return self.total_seconds / self.gpus


def expected_cost(preset: Preset, n_prompts: int | None = None, gpus: int = 1, a: GpuAssumptions = GpuAssumptions()):
    """The GPU time of every method and the peak memory per GPU of a preset's run over `n_prompts` prompts (default:
    the protocol's) on `gpus` GPUs (accelerate shards the prompts)."""
    n_prompts = n_prompts if n_prompts is not None else preset.prompts
    if n_prompts is None:
        raise ValueError(f"preset {preset.name!r}: give the number of prompts")
    images = n_prompts * preset.seeds
    seconds, grad = {}, False
    for spec in preset.methods():
        work, backprop = method_steps(spec, preset.steps, a)
        seconds[spec] = images * (work * a.step_seconds + a.score_seconds)
        grad |= backprop
    bytes_per = 2 if preset.dtype in ("float16", "bfloat16") else 4
    per_image = a.gradient_activation_gb if grad else a.activation_gb
    peak = a.weights_params * bytes_per / 1e9 + preset.batch_size * per_image * bytes_per / 4
    return Cost(seconds, images, gpus, peak)


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def cost_notice(preset: Preset, n_prompts: int | None = None, gpus: int = 1) -> str:
    """What is printed before a preset's run starts: images, GPU time per method and in all, memory per GPU."""
    c = expected_cost(preset, n_prompts, gpus)
    per = ", ".join(f"{spec} {_hours(s)}" for spec, s in c.seconds.items())
    return (
        f"{preset.name}: {c.images} images per method x {len(c.seconds)} methods; expected GPU time about "
        f"{_hours(c.total_seconds)} ({per}), {_hours(c.wall_seconds)} on {gpus} GPU(s); peak memory about "
        f"{c.peak_gb:.0f} GB per GPU at batch {preset.batch_size}, {preset.dtype} (assumed A100/H100-class GPU "
        "speeds, see bench/presets.py GpuAssumptions; the bench re-estimates after its first batch)"
    )
