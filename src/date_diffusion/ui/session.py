"""What the web page does, as plain functions (tested without a browser): validate the form, run the fixed and
the DATE sample from one seed, and collect what DATE did (rewards, x0_hat before and after each update, the
distance moved, the exact evaluator's verdicts, files to download)."""

from __future__ import annotations

import copy
import gc
import json
import queue
import shutil
import tempfile
import threading
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from date_diffusion.core.settings import BLANKS, BY_FIELD, DEFAULT_SEED, SETTINGS, Boolean, Seed, SettingError
from date_diffusion.core.text import prepare_prompt, spelled_as_read
from date_diffusion.core.trace import DID_NOT_MOVE, UNMOVED_IMAGE, moved
from date_diffusion.evaluation.methods import settings_without_effect
from date_diffusion.grids import (
    DIFF_GAIN,
    changed_text,
    date_label,
    difference,
    distance_text,
    final_rewards,
    fixed_date_grid,
    grid_record,
    knows_line,
    panel,
    reward_text,
    verdict_record,
    verdict_text,
)
from date_diffusion.model_folder import fingerprint
from date_diffusion.outputs import save_png
from date_diffusion.perf.work import UPDATE_WORK, gradient_step_work, request_work
from date_diffusion.pipelines import load_date_pipeline
from date_diffusion.pipelines.embeddings import load_embeddings, save_replayable
from date_diffusion.pipelines.loading import tiny_decoder_for
from date_diffusion.resolver import resolve_settings
from date_diffusion.rewards.base import Reward
from date_diffusion.rewards.registry import reward_from_spec
from date_diffusion.schedulers import SCHEDULERS, check_steps_fit, make_scheduler
from date_diffusion.toyworld.world import judge_for
from date_diffusion.ui.access import MAX_WORK, check_reward_sources


class InputError(ValueError):
    """A form value that cannot run: shown in the page, the server carries on; `field` is the field it is about
    ('prompt', 'negative_prompt', 'seed' or one of `FIELDS`; None when the error names no single field)."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


# The page's setting fields, in order: steps, guidance, the reward and every DATE setting (`core/settings.py`);
# each is text, blank for the resolved default (`resolver.resolve_settings`), exactly as an unset flag.
FIELDS = ("num_inference_steps", "guidance_scale", "reward", *(s.field for s in SETTINGS))
KEEP_RUNS = 32  # requests whose files (images, grid, embeddings) the page keeps for download
LABELS = {"num_inference_steps": "steps", "guidance_scale": "guidance", "reward": "reward", "scheduler": "sampler"}
LABELS.update({s.field: s.label for s in SETTINGS})
ELEM_IDS = {"num_inference_steps": "steps", "guidance_scale": "guidance", "reward": "reward"}
ELEM_IDS.update({s.field: s.elem_id for s in SETTINGS})


@dataclass
class Form:
    """What the page sends: the prompt, the seed, and the text of each setting field (`FIELDS`; '' = default)."""

    prompt: str
    negative_prompt: str = ""
    seed: float | str | None = 0
    paper_defaults: bool = False
    approximate: bool = False
    settings: dict = field(default_factory=dict)

    @classmethod
    def from_values(cls, prompt, negative_prompt, seed, paper_defaults, approximate, *texts):
        """From the page's inputs in the order `app` lays them out (the setting fields in `FIELDS` order)."""
        return cls(prompt, negative_prompt, seed, paper_defaults, approximate, dict(zip(FIELDS, texts)))


def _seed(value) -> int:
    """The seed field's text as an integer, parsed as the command line parses --seed (`core.settings.Seed`: one
    bound, one message, quoting the text as typed; never through a float, which would round 9007199254740993 to
    ...992); a field left blank (or of blanks) runs the default seed, as every blank field runs its default."""
    text = "" if value is None else str(value)
    if not text.strip(BLANKS):
        return DEFAULT_SEED
    try:
        return Seed().value(text, "seed")
    except SettingError as err:
        raise InputError(str(err), "seed") from None


def _switch(value, name: str) -> bool:
    """A checkbox's value: True or False, or (from an API client) their text; "false" is never read as True."""
    try:
        return Boolean().value(value, name)
    except SettingError as err:
        raise InputError(str(err)) from None


PAGE_EMPTY_FIX = "clear the field for no negative prompt (the page has no other empty one)"
QUOTES = frozenset("'\"‘’“”`")


def _unquoted(text: str, name: str) -> str:
    """A field's text, refused when it holds quote marks alone (`''`, `""`): the page takes text as typed, with no
    shell that would read them as an empty value, so they would condition the image as text."""
    stripped = text.strip()
    if stripped and set(stripped) <= QUOTES:
        raise ValueError(f"{name} holds only quote marks ({stripped}): the page takes text as typed, without a shell's "
                         "quoting; clear the field for none, or type the text itself")  # fmt: skip
    return text


def check_form(form: Form, model: str | None = None, allowed: tuple[Path, ...] = (), max_work: int = MAX_WORK):
    """The prompt, negative prompt and seed of a form, and the settings that run (resolved as the command line
    resolves its flags), or `InputError` naming the field and the value typed. A reward typed in the form may
    read files only inside `allowed` (the server's `--allow-path` folders; see `ui/access.py`). A request whose
    work (`request_work`) is over `max_work` is refused before any work: one visitor's request cannot hold the
    queue for the others."""
    try:  # before any work: refused when empty, cut to what encoders read (as the command line does)
        prompt, prompt_note = prepare_prompt(_unquoted(form.prompt or "", "the prompt"), "prompt")
    except ValueError as err:
        raise InputError(str(err), "prompt") from None
    try:
        # a field left empty is not given; one of blanks or invisible characters is refused, as on the command line
        typed = _unquoted(form.negative_prompt or "", "the negative prompt")
        negative, negative_note = prepare_prompt(typed, "the negative prompt", empty=True, empty_fix=PAGE_EMPTY_FIX)
    except ValueError as err:
        raise InputError(str(err), "negative_prompt") from None
    notes = [n for n in (prompt_note, negative_note) if n]
    sampling = Sampling(prompt, negative or None, _seed(form.seed), notes, _switch(form.approximate, "approximate"))
    given = {k: v for k, v in form.settings.items() if v is not None and str(v).strip()}
    try:
        resolved = resolve_settings(model, paper_defaults=_switch(form.paper_defaults, "paper defaults"),
                                    names=LABELS, **given)  # fmt: skip
    except ValueError as err:
        raise InputError(str(err), getattr(err, "setting", None)) from err
    if resolved.sources.get("reward") == "user":  # the model's own reward is the operator's choice
        try:
            check_reward_sources(resolved.reward, allowed, LABELS["reward"])
        except ValueError as err:  # PathRefused
            raise InputError(str(err), "reward") from err
    steps = resolved.num_inference_steps
    try:
        work = request_work(steps, resolved.date, resolved.reward, prompt)
    except ValueError as err:  # update steps outside the run
        raise InputError(str(err), "update_steps") from err
    if work > max_work:
        grad = resolved.date.grad_steps if resolved.date is not None else 1
        each_step = gradient_step_work(resolved.reward, prompt)
        updates = (work - steps) // (each_step * grad)
        each, unit = (f" of {grad} gradient steps each", "a gradient step") if grad > 1 else ("", "an update")
        fewer = "steps or gradient steps" if grad > 1 else "steps"
        runs = f" with this reward's {each_step - UPDATE_WORK + 1} model runs" if each_step > UPDATE_WORK else ""
        cheaper = ", update less often or use a reward of fewer views" if runs else " or update less often"
        raise InputError(f"{steps} steps with {updates} DATE updates{each} is {work} steps of work "
                         f"({unit} counts {each_step}{runs}); this page runs at most {max_work} per request: take "
                         f"fewer {fewer}{cheaper}", "num_inference_steps")  # fmt: skip
    return sampling, resolved


def placeholders(defaults) -> dict:
    """The grey text of each setting field: the value a blank field runs with, and where it comes from."""
    out = {}
    for name in FIELDS:
        source = defaults.sources.get(name)  # None: an alternative not used (rho beside rho_relative)
        out[name] = "default: not used" if source is None else f"default: {_shown(defaults, name)} ({source})"
    return out


def _shown(resolved, name: str) -> str:
    """A resolved setting's value as the page's field would take it."""
    if name in BY_FIELD:
        return BY_FIELD[name].kind.format(getattr(resolved.date, name))
    if name == "scheduler":
        return resolved.scheduler or "the model's own"
    value = getattr(resolved, name)
    return f"{value:g}" if isinstance(value, float) else str(value)


class StopTokens:
    """One Stop flag per visitor: a request gets a fresh token when it is queued (`queue`, at the click), and a
    visitor's Stop sets only their own, the queued request's too: a Stop given while the request waits in the queue
    ends it as soon as it starts, before its first step."""

    def __init__(self):
        self._tokens: dict = {}  # the running request's token
        self._queued: dict = {}  # the token of a request still waiting in the queue
        self._lock = threading.Lock()
        self.closing = False  # `stop_all` was called: what a run meets from now on is the page's end, no failure

    def _fresh(self) -> threading.Event:
        """A new token: already set once the page is ending, so a request still queued then never starts sampling."""
        token = threading.Event()
        if self.closing:
            token.set()
        return token

    def queue(self, key) -> None:
        with self._lock:
            self._queued[key] = self._fresh()

    def start(self, key) -> threading.Event:
        with self._lock:
            self._tokens[key] = self._queued.pop(key, None) or self._fresh()
            return self._tokens[key]

    def stop(self, key) -> None:
        with self._lock:
            for tokens in (self._tokens, self._queued):
                if key in tokens:
                    tokens[key].set()

    def stop_all(self) -> None:
        """Every visitor's Stop at once: the server is ending (Ctrl-C or SIGTERM)."""
        with self._lock:
            self.closing = True
            for tokens in (self._tokens, self._queued):
                for token in tokens.values():
                    token.set()


class RecordingReward(Reward):
    """The reward DATE follows, keeping every image it scores: with gradient = x0_hat before an update, without =
    x0_hat after it (the loop's `track_reward_after`)."""

    def __init__(self, reward: Reward):
        super().__init__()
        self.reward, self.name = reward, reward.name
        self.seen: list[tuple[str, torch.Tensor]] = []

    def forward(self, images, prompts):
        kind = "before" if torch.is_grad_enabled() else "after"
        self.seen.append((kind, images[0].detach().float().clamp(0, 1).cpu()))
        return self.reward(images, prompts)


CACHE_SIZE = 2  # rewards kept built at once (and decoders): the least recently used beyond it is freed


def gradio_cache(workdir: Path) -> Path:
    """Where Gradio copies the files the page shows (`GRADIO_TEMP_DIR`, set by `date-diffusion ui`): inside the
    page's folder, so that `Session._expire` bounds it and the page's end removes it."""
    return Path(workdir) / ".gradio"


@dataclass
class Session:
    """The model (one pipeline per allowed concurrent request), rewards built once per (spec, model, device, dtype)
    and kept for the `CACHE_SIZE` most recently used specs, the folders a form's reward may read (`allowed`), and a
    Stop token per visitor."""

    model: str
    device: str = "cpu"
    concurrency: int = 1
    allowed: tuple = ()  # the operator's --allow-path folders (`access.allowed_folders`)
    max_work: int = MAX_WORK  # the operator's --max-work (`request_work`)
    stops: StopTokens = field(default_factory=StopTokens)
    _pipes: queue.Queue = field(default_factory=queue.Queue)
    _cache: OrderedDict = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    workdir: Path | None = None  # the page's files; None: a folder of its own, removed with the session

    def __post_init__(self):
        if self.workdir is None:  # made here, so removed here: when the session is collected or Python exits
            self.workdir = Path(tempfile.mkdtemp(prefix="date-diffusion-ui-"))
            weakref.finalize(self, shutil.rmtree, self.workdir, ignore_errors=True)
        self.defaults = resolve_settings(self.model)  # what a form left blank runs with
        self.model_files = fingerprint(self.model)  # each record states it: a replay of another model's is named
        self.model_content = fingerprint(self.model, whole=True)  # its files whole: what a download's replay checks
        self._loaded = 0

    def _pipeline(self):
        with self._lock:
            if self._pipes.empty() and self._loaded < self.concurrency:
                pipe = load_date_pipeline(self.model, "auto", self.device)
                pipe.set_progress_bar_config(disable=True)
                self.own_scheduler = copy.deepcopy(pipe.scheduler)  # what requests without another sampler run
                self.dtype = str(pipe.vae.dtype)
                self._loaded += 1
                return pipe
        return self._pipes.get()

    def warm(self) -> None:
        """Load the first pipeline and the default reward now, so the first request does not wait for them."""
        self._pipes.put(self._pipeline())
        self.reward(self.defaults.reward)

    def _cached(self, kind: str, spec: str, build):
        """The built `kind` for `spec`, from a least-recently-used cache of `CACHE_SIZE` entries per kind: one more
        distinct reward text frees the model used longest ago (a request still running with it keeps it until it
        ends), so visitors' specs never pile up models in memory."""
        key = (kind, spec, self.model, self.device, getattr(self, "dtype", None))
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
            built = self._cache[key] = build()
            evicted = [k for k in self._cache if k[0] == kind][:-CACHE_SIZE]
            for old in evicted:
                del self._cache[old]
        if evicted:
            gc.collect()  # the evicted models' memory back now, not at some later collection
            if str(self.device).startswith("cuda"):
                torch.cuda.empty_cache()
        return built

    def reward(self, spec: str):
        return self._cached("reward", spec, lambda: reward_from_spec(spec, self.device))

    def decoder(self):
        return self._cached("decoder", "tiny", lambda: tiny_decoder_for(self.model).to(self.device))

    @property
    def gradio_cache(self) -> Path:
        return gradio_cache(self.workdir)

    @property
    def run_view(self) -> Path:
        """Where the benchmark tab keeps the copies of the run's files it shows (`runview.load_run`): never expired."""
        return self.workdir / "run-view"

    def _expire(self) -> None:
        """The page keeps the files of its last `KEEP_RUNS` requests (each request's own folder); older ones go, and
        so do Gradio's copies of them (its cache entries made before the oldest request kept began)."""
        runs = sorted((p for p in self.workdir.iterdir() if p.is_dir() and p not in (self.gradio_cache, self.run_view)),
                      key=lambda p: p.stat().st_mtime)  # fmt: skip
        for old in runs[:-KEEP_RUNS]:
            shutil.rmtree(old, ignore_errors=True)
        if len(runs) > KEEP_RUNS and self.gradio_cache.is_dir():
            oldest = runs[-KEEP_RUNS].stat().st_mtime  # its last file written: Gradio copies them after
            for entry in self.gradio_cache.iterdir():
                if entry.stat().st_mtime < oldest:
                    shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)

    def compare(self, form: Form, progress=None, stop: threading.Event | None = None) -> PagePair:
        """The fixed and the DATE image of one seed and what DATE did (see `collect`); `stop` is this request's
        Stop token (set it to end the run between two steps)."""
        sampling, resolved = check_form(form, self.model, self.allowed, self.max_work)
        reward = RecordingReward(self.reward(resolved.reward))
        decoder = self.decoder() if sampling.approximate else None
        pipe = self._pipeline()
        try:  # the sampler this request resolved to (--paper-defaults: the paper's), else the model's own
            pipe.scheduler = (
                copy.deepcopy(self.own_scheduler)
                if resolved.scheduler is None
                else make_scheduler(resolved.scheduler, self.own_scheduler.config)
            )
            try:  # the command line's check, once the model is loaded
                check_steps_fit(pipe, resolved.num_inference_steps, LABELS["num_inference_steps"])
            except ValueError as err:
                raise InputError(str(err), "num_inference_steps") from err
            run = Run(sampling, resolved, reward, decoder, stop or threading.Event(), progress)
            result = run_pair(pipe, run, self)
            self._expire()
            return result
        finally:
            self._pipes.put(pipe)


@dataclass(frozen=True)
class Sampling:
    """What a request samples besides its settings: the prepared prompts, the seed, notes for the visitor."""

    prompt: str
    negative_prompt: str | None
    seed: int
    notes: list
    approximate: bool = False  # the approximate decoder for the reward


@dataclass
class PagePair:
    """What the page shows of one request: the fixed and the DATE image, what DATE did, the files it offers."""

    stopped: bool
    seconds: float
    fixed: object
    date: object = None
    files: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    settings: object = None
    verdicts: dict = field(default_factory=dict)  # method -> the toy world's verdict (None elsewhere)
    trace: dict | None = None
    strip: list = field(default_factory=list)
    final_reward: dict | None = None
    panels: list | None = None
    difference: object = None


@dataclass
class Run:
    """One request: what it samples, with what, and its Stop token."""

    sampling: Sampling
    resolved: object
    reward: RecordingReward
    decoder: object
    stop: threading.Event
    progress: object = None


def _callback(run: Run, total: int, offset: int):
    def on_step_end(pipe, i, t, tensors):
        if run.stop.is_set():
            pipe.request_interrupt()
        if run.progress is not None:
            run.progress((offset + i + 1) / total, f"step {offset + i + 1} of {total}")
        return tensors

    return on_step_end


def run_pair(pipe, run: Run, session: Session) -> PagePair:
    resolved = run.resolved
    steps = resolved.num_inference_steps
    out_dir = Path(tempfile.mkdtemp(dir=session.workdir))
    common = dict(
        prompt=run.sampling.prompt,
        negative_prompt=run.sampling.negative_prompt if pipe.supports_negative_prompt else None,
        num_inference_steps=steps,
        guidance_scale=resolved.guidance_scale,
    )
    t0 = time.perf_counter()
    fixed = pipe(**common, generator=torch.Generator().manual_seed(run.sampling.seed),
                 callback_on_step_end=_callback(run, 2 * steps, 0))  # fmt: skip
    stopped = pipe.interrupt
    dated = None
    if not stopped:
        dated = pipe(
            **common,
            generator=torch.Generator().manual_seed(run.sampling.seed),
            date=resolved.date,
            reward=run.reward,
            reward_decoder=run.decoder,
            save_embeddings=out_dir / "embeddings.safetensors",
            callback_on_step_end=_callback(run, 2 * steps, steps),
        )
        stopped = pipe.interrupt
    seconds = time.perf_counter() - t0
    applied = pipe.applied_settings(resolved.guidance_scale, negative_prompt=run.sampling.negative_prompt)
    return collect(session, run, fixed, dated, out_dir, seconds, stopped, applied)


def collect(session, run: Run, fixed, dated, out_dir: Path, seconds: float, stopped: bool, applied: dict) -> PagePair:
    """Everything the page shows, and the files it offers (`applied`: the record's guidance scale and negative
    prompt as the call applied them, `DATEPipelineMixin.applied_settings`, as `generate` records them)."""
    sampling, resolved, reward = run.sampling, run.resolved, run.reward
    sampler = SCHEDULERS[resolved.scheduler][0] if resolved.scheduler else type(session.own_scheduler).__name__
    unread = applied.get("without_effect", {}).get("negative_prompt")
    notes = sampling.notes + ([f"the negative prompt has no effect here: {unread['why']}"] if unread else [])
    unread = applied.get("without_effect", {}).get("guidance_scale")  # typed 0 or 1: no guidance runs (as generate)
    if unread and resolved.sources.get("guidance_scale") == "user":
        notes.append(f"guidance {spelled_as_read(unread['value'])} has no effect here: {unread['why']}")
    unused = settings_without_effect(resolved) if dated is not None else {}  # as generate names them
    notes += [f"{LABELS.get(name, name)} {spelled_as_read(u['value'])} changes no image here: {u['why']}"
              for name, u in unused.items()]  # fmt: skip
    width, height = fixed.images[0].size
    given = dict(prompt=sampling.prompt, seed=sampling.seed, height=height, width=width)
    record = {**given, "model": session.model, **resolved.record(), **applied,
              "method": "date" if resolved.active else "fixed", "scheduler": sampler,
              "scheduler_name": resolved.scheduler, "model_files": session.model_files,
              **({"model_content": session.model_content} if session.model_content else {})}  # fmt: skip
    result = PagePair(stopped, seconds, fixed.images[0], notes=notes, settings=resolved)
    fixed_record = {**record, "method": "fixed", "date": None, "reward": None}
    result.files.append(str(save_png(out_dir / "fixed.png", fixed.images[0], fixed_record)))
    judge = judge_for(session.model) or (lambda image, prompt: None)
    result.verdicts = {"fixed": judge(fixed.images[0], sampling.prompt)}
    if dated is not None:
        trace = dated.traces[0]
        result.date, result.trace, result.strip = dated.images[0], trace, strip(reward.seen, trace)
        result.verdicts["date"] = judge(dated.images[0], sampling.prompt)
        acted = record["method"] == "date" and moved(trace)  # no update moved it: the fixed image
        dated_record = {**record, "trace": trace, "method": "date" if acted else "fixed"}
        without = {**applied.get("without_effect", {}), **unused}
        dated_record.update({"without_effect": without} if without else {})
        images = {"fixed": fixed.images[0], "date": dated.images[0]}
        # the reward DATE followed, of both finished images (unwrapped: the strip shows only what DATE scored)
        result.final_reward = final_rewards(reward.reward, images, sampling.prompt)
        dated_record["final_reward"] = result.final_reward
        result.files.append(str(save_png(out_dir / "date.png", dated.images[0], dated_record)))
        grid, panels = fixed_date_grid(
            fixed.images[0], dated.images[0], dated_record["method"], result.verdicts, trace, result.final_reward
        )
        result.panels = panels
        # the amplified difference, always (the grid adds it only where the images differ little)
        result.difference = difference(panel(images["fixed"], "fixed"), panel(images["date"], "DATE"))
        result.files.append(str(save_png(out_dir / "compare.png", grid, grid_record(dated_record, panels))))
        (out_dir / "trace.json").write_text(json.dumps(dated_record, indent=1))
        # what `generate --replay-embeddings` re-creates the DATE image from, as `generate --save-embeddings` writes it
        embeddings = out_dir / "embeddings.safetensors"
        save_replayable(embeddings, load_embeddings(embeddings), dated_record, session.model)
        result.files += [str(out_dir / "trace.json"), str(out_dir / "embeddings.safetensors")]
    return result


def strip(seen: list, trace: dict) -> list[tuple]:
    """(image, caption) of x0_hat before and after every update step, in order."""
    steps = [u["step"] for u in trace["updates"]]
    out, k = [], -1
    for kind, image in seen:
        k += kind == "before" and (not out or out[-1][2] == "after")
        step = steps[min(max(k, 0), len(steps) - 1)] if steps else 0
        out.append((_pil(image), f"step {step}: x0_hat {kind}", kind))
    return [(img, caption) for img, caption, _ in out]


def _pil(image01: torch.Tensor):
    arr = (image01.permute(1, 2, 0).numpy() * 255).round().astype("uint8")
    return Image.fromarray(arr)


def reward_plot(trace: dict):
    """The reward of x0_hat at each update (a matplotlib figure): left, before and after each update over the run
    (the estimate sharpens as sampling goes on, with or without DATE); right, what each update changed (after -
    before), on a scale of its own, since an update moves the reward far less than denoising does."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    updates = trace["updates"]
    steps = [u["step"] for u in updates]
    before = [u["reward_before"] for u in updates]
    after = [u.get("reward_after", float("nan")) for u in updates]
    fig, (ax, gain) = plt.subplots(1, 2, figsize=(8, 3), width_ratios=[3, 2])
    ax.plot(steps, before, "o-", color="tab:blue", label="before the update")
    ax.plot(steps, after, "s", color="tab:orange", mfc="none", label="after the update")
    ax.vlines(steps, before, after, color="tab:orange")  # each update's step, however short
    ax.set_xlabel("sampling step")
    ax.set_ylabel("reward of x0_hat")
    ax.legend(fontsize=8)
    changes = [a - b for a, b in zip(after, before)]
    colors = ["tab:gray" if c != c else "tab:orange" if c >= 0 else "tab:red" for c in changes]  # NaN: untracked
    gain.bar([str(s) for s in steps], changes, color=colors)
    gain.axhline(0, color="gray", lw=0.8)
    gain.set_xlabel("update at step")
    gain.set_ylabel("after - before")
    gain.set_title("what each update changed", fontsize=9)
    fig.tight_layout()
    return fig


def summary(result: PagePair) -> str:
    """The text under the images: the finished images' rewards, verdicts (and for a prompt outside the toy world
    what it knows), how much the images differ, distance moved, seconds, and whether Stop ended the run."""
    lines = [f"Note: {note}." for note in result.notes]
    if result.stopped:
        lines.append("**Stopped** before the end: the images show where sampling was.")
    panels = result.panels
    label = panels[1]["method"] if panels else date_label("date")  # as the grid's header names the DATE image
    if label != date_label("date"):  # `DATE (inactive)`: DATE did not move the embedding (it is the fixed image)
        lines.append(
            f"Note: DATE did not move the embedding ({DID_NOT_MOVE}): the DATE image is {UNMOVED_IMAGE}, and its "
            "file says method `fixed`."
        )
    if panels and "final_reward" in panels[1]:  # as the grid's headers say it
        name = result.settings.reward if result.settings is not None else "the reward"
        lines.append(f"Reward of the finished images ({name}): fixed {panels[0]['final_reward']:.4f}, "
                     f"{label} **{reward_text(panels[1]).removeprefix('reward ')}**.")  # fmt: skip
    for kind in ("fixed", "date"):
        text = verdict_text(verdict_record(result.verdicts.get(kind)))  # as the grids' headers say it
        if text is not None:
            lines.append(f"Exact evaluator, {'fixed embedding' if kind == 'fixed' else label}: **{text}**")
    knows = knows_line(result.verdicts)
    if knows:
        lines.append(f"{knows[0].upper()}{knows[1:]}.")
    if result.difference is not None:
        diff = result.difference.record
        lines.append(f"|DATE - fixed| x {DIFF_GAIN} (right): mean difference {diff['mean_abs_diff']:.2f} of 255, "
                     f"{changed_text(diff)} pixels changed.")  # fmt: skip
    if result.trace:
        moved = ", ".join(distance_text(u["update_norm"]) for u in result.trace["updates"])
        lines.append(f"Embedding moved {distance_text(result.trace['final_distance'])} in all (per update: {moved}).")
    lines.append(f"{result.seconds:.1f} s for both images.")
    if result.settings is not None:
        lines.append("Settings: " + describe_settings(result.settings))
    return "\n\n".join(lines)


def describe_settings(resolved) -> str:
    """The settings that ran, each with where it came from (user, model, family, paper)."""
    return ", ".join(f"{LABELS[name]} {_shown(resolved, name)} ({source})" for name, source in resolved.sources.items())
