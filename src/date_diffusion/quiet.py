"""A quiet start, for Python callers as for the command line: what the libraries say while this package imports and
loads models that tells its user nothing.

- `REMARKS`: messages (regular expressions) of diffusers, transformers and huggingface_hub that concern none
  of this package's users (a notice that an optional backend is missing where it is not used, a deprecation the
  user cannot act on, a warning about a file the library wrote itself). `install`
  drops exactly these, each at the logger that makes it (a `logging.Filter` there) or as the warning it is; every
  other record and warning, the user's own and the libraries', is shown as before. `date_diffusion` installs it
  when imported; the command line's notes skip them too.
- `quiet_loading()`: while a model loads, no per-component and per-weight progress bars (diffusers' "Loading
  pipeline components", transformers' "Loading weights"); downloads keep their bars, and the libraries' settings
  are as they were afterwards. The pipelines' own sampling progress bar is diffusers' (`set_progress_bar_config`).

Only the standard library is imported here; diffusers and transformers inside `quiet_loading`.
"""

from __future__ import annotations

import logging
import re
import warnings
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class Remark:
    pattern: str  # a regular expression a part of the message matches
    logger: str | None  # the logger that makes it; None: a `warnings.warn`
    why: str  # why it tells this package's user nothing
    example: str = ""  # a message the library prints (default: the pattern, a plain text)

    def __post_init__(self):
        if not self.example:
            object.__setattr__(self, "example", self.pattern)


REMARKS = (
    Remark("requires torchvision", "transformers.utils.import_utils",
           "on import of the pipelines: the image processors fall back to PIL, which is all this package uses"),
    Remark("`local_dir_use_symlinks` argument is deprecated", None,
           "huggingface_hub, when diffusers passes it the argument: nothing the user can change"),
    Remark("should be kept in float32", "diffusers.models.modeling_utils",
           "on every `.to(dtype)` of a model, even one with no such module"),
    Remark(r"The config attributes \{'block_out_channels': \[[\d, ]*\]\} were passed to AutoencoderTiny,",
           "diffusers.configuration_utils",
           "on loading any AutoencoderTiny diffusers saved: it writes that attribute itself, then warns on reading "
           "it back (any other unexpected attribute is still shown)",
           "The config attributes {'block_out_channels': [32, 32, 32, 32]} were passed to AutoencoderTiny, but are "
           "not expected and will be ignored. Please verify your config.json configuration file."),
    Remark("Pipelines loaded with `dtype=torch.float16` cannot run with `cpu` device",
           "diffusers.pipelines.pipeline_utils",
           "on every move of a float16 pipeline to the CPU: PyTorch runs float16 there (slowly); an operation "
           "without such a kernel fails with its own error",
           "Pipelines loaded with `dtype=torch.float16` cannot run with `cpu` device. It is not recommended to move "
           "them to `cpu` as running them will fail."),
    Remark("Token indices sequence length is longer than the specified maximum sequence length for this model",
           "transformers.tokenization_utils_base",
           "on tokenizing a prompt longer than its text encoder reads: no indexing error follows (the pipelines cut "
           "it to what the encoder reads, and diffusers names what was cut)",
           "Token indices sequence length is longer than the specified maximum sequence length for this model "
           "(26 > 24). Running this sequence through the model will result in indexing errors"),
    Remark(r"Already found a `peft_config` attribute in the model\. This will lead to having multiple adapters", None,
           "peft, on loading a second LoRA into a model: `--lora` given twice or more stacks LoRAs by design",
           "Already found a `peft_config` attribute in the model. This will lead to having multiple adapters in the "
           "model. Make sure to know what you are doing!"),
    Remark(r"Loading \w+ was unsuccessful with the following error", "diffusers.loaders.peft",
           "on a LoRA that does not load: diffusers logs peft's error, then raises it, and the command's error "
           "names the file and what is wrong",
           "Loading lora_0 was unsuccessful with the following error: \nTarget modules {'zz'} not found in the base "
           "model."),
    Remark(r"No LoRA keys associated to \w+ found with the prefix='text_encoder(_\d)?'\.",
           "diffusers.loaders.lora_base",
           "on loading any LoRA that adapts only the UNet or transformer (most do); a LoRA that adapts nothing of "
           "the model is refused by the loader's own check",
           "No LoRA keys associated to CLIPTextModel found with the prefix='text_encoder'. This is safe to ignore if "
           "LoRA state dict didn't originally have any CLIPTextModel related params. You can also try specifying "
           "`prefix=None` to resolve the warning. Otherwise, open an issue if you think it's unexpected: "
           "https://github.com/huggingface/diffusers/issues/new"),
)  # fmt: skip
SILENCED = tuple(re.compile(r.pattern) for r in REMARKS)


@dataclass(frozen=True)
class Restatement:
    """A library message the command line says in its own short words: what the library changed, and how to keep
    it from changing. `text` is formatted with the pattern's groups."""

    pattern: str
    text: str


_OUTDATED = (" (as diffusers' pipeline does with an outdated configuration); set it in the model folder's "
             "{file} to say what is sampled")  # fmt: skip
RESTATED = (
    Restatement(r"The configuration file of this scheduler: .* is outdated\. `steps_offset` should be set to 1 "
                r"instead of (\S+?)\.",
                "the model's scheduler configuration has steps_offset {0}: the images sample with steps_offset 1"
                + _OUTDATED.format(file="scheduler/scheduler_config.json")),
    Restatement(r"The configuration file of this scheduler: .* has not set the configuration `clip_sample`",
                "the model's scheduler configuration has clip_sample true: the images sample with clip_sample false"
                + _OUTDATED.format(file="scheduler/scheduler_config.json")),
    Restatement(r"The configuration file of the unet has set the default `sample_size` to smaller than 64",
                "the model's unet configuration (of diffusers before 0.9) has a sample_size below 64: the pipeline "
                "uses 64 (512 px images by default)" + _OUTDATED.format(file="unet/config.json")),
)  # fmt: skip
_RESTATED = tuple(re.compile(r.pattern, re.S) for r in RESTATED)


def restated(message: str) -> str:
    """`message` in the package's own words when it is one of the `RESTATED` (a deprecation quoting a whole
    configuration in 700 characters), else as it is."""
    for entry, pattern in zip(RESTATED, _RESTATED):
        if m := pattern.search(message):
            return entry.text.format(*m.groups())
    return message


def silenced(message: str) -> bool:
    """Whether `message` is one of the `REMARKS`."""
    return any(p.search(message) for p in SILENCED)


class _Drop(logging.Filter):
    """Drops the records whose message matches one of `patterns`."""

    def __init__(self, patterns: tuple[str, ...]):
        super().__init__()
        self.patterns = patterns
        self._compiled = tuple(re.compile(p) for p in patterns)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001  (a malformed record: logging reports it itself)
            return True
        return not any(p.search(message) for p in self._compiled)


def install() -> None:
    """Drop the `REMARKS` (calling it again adds nothing twice)."""
    for remark in REMARKS:
        if remark.logger is None:
            warnings.filterwarnings("ignore", message=f".*{remark.pattern}")
            continue
        logger = logging.getLogger(remark.logger)
        if not any(isinstance(f, _Drop) and remark.pattern in f.patterns for f in logger.filters):
            logger.addFilter(_Drop((remark.pattern,)))


@contextmanager
def held(*loggers: str):
    """The records the block logs to `loggers`, held back and shown once it ends without an error; an error that
    ends it drops them (a library's notice on the way to a failure, `No LoRA keys associated to UNet2DConditionModel`
    before the command names the LoRA of another family, is said better by the error)."""
    kept = []

    class _Hold(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            kept.append(record)
            return False

    hold = _Hold()
    for name in loggers:
        logging.getLogger(name).addFilter(hold)
    _HOLDING.append(kept)
    try:
        yield
    finally:
        _HOLDING.remove(kept)
        for name in loggers:
            logging.getLogger(name).removeFilter(hold)
    for record in kept:
        logging.getLogger(record.name).handle(record)


_HOLDING: list[list] = []  # the records each `held` block holds now, innermost last


def held_messages() -> list[str]:
    """The messages the `held` blocks around the caller hold so far: an error raised inside one may quote what the
    library said before it (transformers' report of which tensor did not fit, logged before its exception)."""
    out = []
    for kept in _HOLDING:
        for record in kept:
            try:
                out.append(record.getMessage())
            except Exception:  # noqa: BLE001  (a malformed record: nothing to quote)
                continue
    return out


@contextmanager
def quiet_loading():
    """No model-loading progress bars of diffusers and transformers inside the block (see the module's text)."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    install()  # again: a `warnings.catch_warnings()` around the first import would have taken the filter back
    diffusers_on = diffusers_logging.is_progress_bar_enabled()
    # transformers' switch of its own bars: its public `disable_progress_bar` also turns off the hub's download bars
    transformers_on = getattr(transformers_logging, "_tqdm_active", None)
    diffusers_logging.disable_progress_bar()
    if transformers_on is not None:
        transformers_logging._tqdm_active = False  # noqa: SLF001
    try:
        yield
    finally:
        if diffusers_on:
            diffusers_logging.enable_progress_bar()
        if transformers_on is not None:
            transformers_logging._tqdm_active = transformers_on  # noqa: SLF001
