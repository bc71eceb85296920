"""The Gradio page: a Generate tab (fixed vs DATE from one seed) and, with a run directory, a Benchmark tab."""

from __future__ import annotations

import gradio as gr

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


def _enlarged(image, side: int = 256):
    """Small images (the toy world's 64 px) enlarged without smoothing for display; downloads keep the original."""
    if image is None or min(image.size) >= side:
        return image
    from PIL import Image

    k = -(-side // min(image.size))
    return image.resize((image.width * k, image.height * k), Image.Resampling.NEAREST)


def _setting_fields(session: Session) -> list:
    """One text field per setting (`session.FIELDS`), blank = the resolved default shown in grey."""
    hints = placeholders(session.defaults)
    boxes = []
    with gr.Accordion("Settings (blank: the default shown)", open=True):
        for start in range(0, len(FIELDS), 3):
            with gr.Row():
                for name in FIELDS[start : start + 3]:
                    label = LABELS[name]
                    boxes.append(gr.Textbox(label=label, placeholder=hints[name], elem_id=ELEM_IDS[name], max_lines=1))
    return boxes


def _generate_tab(session: Session):
    with gr.Row():
        with gr.Column(scale=1):
            prompt = gr.Textbox(label="Prompt", value="a red circle to the left of a blue square", elem_id="prompt")
            negative = gr.Textbox(label="Negative prompt", elem_id="negative")
            with gr.Row():
                seed = gr.Textbox(label="Seed", value="0", elem_id="seed", max_lines=1)
                paper = gr.Checkbox(label="Paper defaults (ignore the model's recommendation)", elem_id="paper")
                approximate = gr.Checkbox(label="Approximate decoder for the reward (faster)", elem_id="approximate")
            settings = _setting_fields(session)
            with gr.Row():
                run = gr.Button("Generate", variant="primary", elem_id="generate")
                stop = gr.Button("Stop", variant="stop", elem_id="stop")
        with gr.Column(scale=2):
            with gr.Row():
                fixed_img = gr.Image(label="Fixed embedding", elem_id="fixed-image", type="pil", height=300)
                date_img = gr.Image(label="DATE", elem_id="date-image", type="pil", height=300)
            info = gr.Markdown(elem_id="summary")
            plot = gr.Plot(label="Reward of x0_hat before and after each update", elem_id="reward-plot")
            strip = gr.Gallery(label="x0_hat before and after each update", columns=6, height=220, elem_id="strip")
            files = gr.File(label="Downloads", file_count="multiple", elem_id="files")
    inputs = [prompt, negative, seed, paper, approximate, *settings]

    def generate(request: gr.Request, *values, progress=gr.Progress()):  # Gradio passes the request first
        token = session.stops.start(_visitor(request))
        try:
            result = session.compare(Form.from_values(*values), progress=progress, stop=token)
        except InputError as err:
            raise gr.Error(str(err), print_exception=False) from err
        except Exception as err:  # a failing run is reported in the page; the server carries on
            raise gr.Error(f"the run failed: {type(err).__name__}: {err}") from err
        trace = result.get("trace")
        figure = reward_plot(trace) if trace and trace["updates"] else None
        shown = [_enlarged(result["fixed"]), _enlarged(result["date"])]
        return *shown, summary(result), figure, [(_enlarged(i), c) for i, c in result.get("strip", [])], result["files"]

    def stop_mine(request: gr.Request = None):
        session.stops.stop(_visitor(request))

    event = run.click(generate, inputs, [fixed_img, date_img, info, plot, strip, files])
    stop.click(stop_mine, None, None, queue=False)
    return event


def _visitor(request) -> str:
    """The browser session a request comes from (one Stop token each); direct calls share one."""
    return getattr(request, "session_hash", None) or "local"


def _run_tab(run_dir):
    try:
        run = load_run(run_dir)
    except ValueError as err:
        gr.Markdown(f"**{err}**")
        return
    gr.Markdown(f"Run `{run['dir']}`: suite `{run['settings']['suite']}`, methods {', '.join(run['records'])}")
    gr.Markdown(run["markdown"], elem_id="results")
    if run["plots"]:
        gr.Gallery(value=run["plots"], label="Plots", columns=3, height=300)
    with gr.Row():
        category = gr.Dropdown(["all", *categories(run)], value="all", label="Category", elem_id="category")
        changed = gr.Checkbox(label="Only where the verdict differs from fixed", elem_id="changed")
    images = gr.Gallery(value=gallery(run), label="Images", columns=8, height=600, elem_id="run-gallery")

    def refresh(cat, only_changed):
        return gallery(run, cat, only_changed)

    category.change(refresh, [category, changed], images)
    changed.change(refresh, [category, changed], images)


def build_app(session: Session, run_dir=None) -> gr.Blocks:
    with gr.Blocks(title="DATE: Diffusion Adaptive Text Embedding") as demo:
        gr.Markdown(
            "## DATE: Diffusion Adaptive Text Embedding\n"
            f"Model `{session.model}`. One seed, sampled twice: with the fixed prompt embedding, and with DATE "
            "adapting it at the update steps so that the reward of the predicted clean image rises."
        )
        with gr.Tabs():
            with gr.Tab("Generate"):
                _generate_tab(session)
            if run_dir is not None:
                with gr.Tab("Benchmark run"):
                    _run_tab(run_dir)
    return demo
