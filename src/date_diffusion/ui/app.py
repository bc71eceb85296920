"""The Gradio page: a Generate tab (fixed vs DATE from one seed) and, with a run directory, a Benchmark tab."""

from __future__ import annotations

import html
import logging
from pathlib import Path

import gradio as gr

from date_diffusion.core.settings import DEFAULT_SEED
from date_diffusion.core.text import quoted
from date_diffusion.grids import DIFF_GAIN
from date_diffusion.ui.runview import categories, gallery, load_run
from date_diffusion.ui.session import (
    ELEM_IDS,
    FIELDS,
    LABELS,
    Form,
    InputError,
    Session,
    placeholders,
    reward_plot,
    summary,
)

log = logging.getLogger(__name__)

# The error box under the settings fields: a bad value or a failing run stays shown there until the next run.
ERROR_CSS = """
.form-error { border: 1px solid var(--error-border-color); background: var(--error-background-fill);
  color: var(--error-text-color); border-radius: var(--radius-lg); padding: var(--size-2) var(--size-3); }
.form-error p { margin: 0; }
"""


def _enlarged(image, side: int = 256):
    """Small images (the toy world's 64 px) enlarged without smoothing for display; downloads keep the original."""
    if image is None or min(image.size) >= side:
        return image
    from PIL import Image

    k = -(-side // min(image.size))
    return image.resize((image.width * k, image.height * k), Image.Resampling.NEAREST)


def _rows(items, n: int) -> list:
    """`items` in rows of `n` (the last may be shorter)."""
    return [items[start : start + n] for start in range(0, len(items), n)]


class PageEnding(Exception):
    """A request the page's own end stopped (Ctrl-C or SIGTERM): said as such in its box, never logged as failed."""

    def __str__(self):
        return "the page is ending (its server was stopped); this run ended with it"


def error_box(err: Exception | None) -> str:
    """The error box's HTML: '' (empty) after a good run; for a bad value the field it names and the message (which
    quotes the value typed); for a failing run the exception."""
    if err is None:
        return ""
    if isinstance(err, InputError):
        field = {"prompt": "prompt", "negative_prompt": "negative prompt", "seed": "seed", **LABELS}.get(err.field)
        title = f"Not run: check the field <b>{html.escape(field, quote=False)}</b>" if field else "Not run"
    elif isinstance(err, PageEnding):
        title = "Stopped"
    else:
        title, err = "The run failed", f"{type(err).__name__}: {err}"
    return f'<div class="form-error" role="alert"><p>{title}</p><p>{html.escape(str(err), quote=False)}</p></div>'


def _setting_fields(session: Session) -> list:
    """One text field per setting (`session.FIELDS`), blank = the resolved default shown in grey."""
    hints = placeholders(session.defaults)
    boxes = []
    with gr.Accordion("Settings (blank: the default shown)", open=True):
        for row in _rows(FIELDS, 3):
            with gr.Row():
                for name in row:
                    label = LABELS[name]
                    boxes.append(gr.Textbox(label=label, placeholder=hints[name], elem_id=ELEM_IDS[name], max_lines=1))
    return boxes


def _output_panes() -> list:
    """The generate tab's outputs: the fixed, DATE and difference images, the summary, the reward plot, the strip of
    x0_hat and the downloads."""
    with gr.Row():
        fixed_img = gr.Image(label="Fixed embedding", elem_id="fixed-image", type="pil", height=300)
        date_img = gr.Image(label="DATE", elem_id="date-image", type="pil", height=300)
        diff_img = gr.Image(label=f"|DATE - fixed| x {DIFF_GAIN}", elem_id="diff-image", type="pil", height=300)
    info = gr.Markdown(elem_id="summary")
    plot = gr.Plot(label="Reward of x0_hat at each update: before and after, and the change", elem_id="reward-plot")
    strip = gr.Gallery(
        label="x0_hat before and after each update", columns=6, height=220, object_fit="contain", elem_id="strip"
    )
    files = gr.File(label="Downloads", file_count="multiple", elem_id="files")
    return [fixed_img, date_img, diff_img, info, plot, strip, files]


def _generate_tab(session: Session):
    with gr.Row():
        with gr.Column(scale=1):
            prompt = gr.Textbox(label="Prompt", value="a red circle to the left of a blue square", elem_id="prompt")
            negative = gr.Textbox(label="Negative prompt", elem_id="negative")
            seed = gr.Textbox(label="Seed", value=str(DEFAULT_SEED), elem_id="seed", max_lines=1)
            with gr.Group():  # the two switches one above the other: beside the seed they overflow the column
                paper = gr.Checkbox(label="Paper defaults (ignore the model's recommendation)", elem_id="paper")
                approximate = gr.Checkbox(label="Approximate decoder for the reward (faster)", elem_id="approximate")
            settings = _setting_fields(session)
            error = gr.HTML("", css_template=ERROR_CSS, elem_id="form-error")
            with gr.Row():
                run = gr.Button("Generate", variant="primary", elem_id="generate")
                stop = gr.Button("Stop", variant="stop", elem_id="stop")
        with gr.Column(scale=2):
            outputs = _output_panes()
    inputs = [prompt, negative, seed, paper, approximate, *settings]

    def generate(request: gr.Request, *values, progress=gr.Progress()):  # Gradio passes the request first
        token = session.stops.start(_visitor(request))
        ending = (*(gr.skip() for _ in outputs), error_box(PageEnding()))
        try:
            result = session.compare(Form.from_values(*values), progress=progress, stop=token)
        except InputError as err:  # shown under the fields; the output panes keep the last run
            return *(gr.skip() for _ in outputs), error_box(err)
        except Exception as err:  # a failing run is reported in the page; the server carries on
            if session.stops.closing:  # the page is ending (Ctrl-C or SIGTERM): its folder goes, the run with it
                return ending
            log.exception("the run failed")
            return *(gr.skip() for _ in outputs), error_box(err)
        if session.stops.closing:  # stopped by the page's end: its files are going with the page's folder
            return ending
        trace = result.trace
        figure = reward_plot(trace) if trace and trace["updates"] else None
        diff = result.difference
        shown = [_enlarged(result.fixed), _enlarged(result.date), _enlarged(diff.image if diff else None)]
        # "step 10: before": the gallery's label names x0_hat, and a thumbnail's caption is cut at its end
        strip_items = [(_enlarged(i), c.replace(": x0_hat ", ": ")) for i, c in result.strip]
        return *shown, summary(result), figure, strip_items, result.files, error_box(None)

    def stop_mine(request: gr.Request = None):
        session.stops.stop(_visitor(request))

    def queued(request: gr.Request = None):  # at the click, before the queue: a Stop from now on reaches the run
        session.stops.queue(_visitor(request))

    run.click(queued, None, None, queue=False)
    event = run.click(generate, inputs, [*outputs, error], show_progress_on=outputs)
    stop.click(stop_mine, None, None, queue=False)
    return event


def _visitor(request) -> str:
    """The browser session a request comes from (one Stop token each); direct calls share one."""
    return getattr(request, "session_hash", None) or "local"


def _run_tab(run_dir, shown: Path):
    try:
        run = load_run(run_dir, shown)
    except ValueError as err:
        gr.Markdown(f"**{err}**")
        return
    # served from the page's own copies as they are (Gradio copies other files into its cache, which the page
    # expires with the requests that made them: `Session._expire`)
    gr.set_static_paths([shown])
    gr.Markdown(f"Run `{run['dir']}`: suite `{run['settings']['suite']}`, methods {', '.join(run['records'])}")
    gr.Markdown(run["markdown"], elem_id="results")
    for row in _rows(run["plots"], 2):  # gr.Image shows a plot whole (a gallery's thumbnails would crop it)
        with gr.Row():
            for plot in row:
                with gr.Column():
                    # the name above the plot, and no label or buttons over it: they would hide its top
                    gr.Markdown(f"**{Path(plot).stem}**")
                    gr.Image(plot, label=Path(plot).stem, show_label=False, buttons=[], interactive=False,
                             elem_classes=["run-plot"])  # fmt: skip
    with gr.Row():
        choices = ["all", *categories(run)]
        # a value outside the list is refused by `refresh` in one line: Gradio's own refusal prints a traceback on the
        # server's terminal for every such request
        category = gr.Dropdown(choices, value="all", label="Category", elem_id="category", allow_custom_value=True)
        changed = gr.Checkbox(
            label="Only where the verdict differs from fixed",
            info="each such image beside the fixed image of its prompt and seed (fixed first)",
            elem_id="changed",
        )
    images = gr.Gallery(
        gallery(run),
        label="Images",
        columns=8,
        fit_columns=False,
        height=600,
        object_fit="contain",
        elem_id="run-gallery",
    )

    def refresh(cat, only_changed):
        if cat not in choices:
            raise gr.Error(f"no category {quoted(cat)}: choose one of {', '.join(choices)}", print_exception=False)
        return gallery(run, cat, only_changed)

    category.change(refresh, [category, changed], images)
    changed.change(refresh, [category, changed], images)


def _model_name(model: str) -> str:
    """How the page names its model: the shipped toy world by name, any other by its id or path."""
    from date_diffusion.toyworld import world

    return "the shipped toy world" if world.is_toy_world(model) and Path(model) == world.PIPELINE else f"`{model}`"


def build_app(session: Session, run_dir=None) -> gr.Blocks:
    with gr.Blocks(title="DATE: Diffusion Adaptive Text Embedding") as demo:
        gr.Markdown(
            "## DATE: Diffusion Adaptive Text Embedding\n"
            f"Model: {_model_name(session.model)}. One seed, sampled twice: with the fixed prompt embedding, and with "
            "DATE adapting it at the update steps so that the reward of the predicted clean image rises."
        )
        with gr.Tabs():
            with gr.Tab("Generate"):
                _generate_tab(session)
            if run_dir is not None:
                with gr.Tab("Benchmark run"):
                    _run_tab(run_dir, session.run_view)
    return demo
