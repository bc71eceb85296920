"""A quiet start, for Python callers as for the command line: what the libraries say while this package imports and
loads models that tells its user nothing.

- `REMARKS`: messages of diffusers, transformers and huggingface_hub that concern none of this package's users (a
  notice that an optional backend is missing where it is not used, a deprecation the user cannot act on). `install`
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
    text: str  # a part of the message
    logger: str | None  # the logger that makes it; None: a `warnings.warn`
    why: str  # why it tells this package's user nothing


REMARKS = (
    Remark("requires torchvision", "transformers.utils.import_utils",
           "on import of the pipelines: the image processors fall back to PIL, which is all this package uses"),
    Remark("`local_dir_use_symlinks` argument is deprecated", None,
           "huggingface_hub, when diffusers passes it the argument: nothing the user can change"),
    Remark("should be kept in float32", "diffusers.models.modeling_utils",
           "on every `.to(dtype)` of a model, even one with no such module"),
)  # fmt: skip
SILENCED = tuple(r.text for r in REMARKS)


class _Drop(logging.Filter):
    """Drops the records whose message holds one of `texts`."""

    def __init__(self, texts: tuple[str, ...]):
        super().__init__()
        self.texts = texts

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001  (a malformed record: logging reports it itself)
            return True
        return not any(text in message for text in self.texts)


def install() -> None:
    """Drop the `REMARKS` (calling it again adds nothing twice)."""
    for remark in REMARKS:
        if remark.logger is None:
            warnings.filterwarnings("ignore", message=f".*{re.escape(remark.text)}")
            continue
        logger = logging.getLogger(remark.logger)
        if not any(isinstance(f, _Drop) and remark.text in f.texts for f in logger.filters):
            logger.addFilter(_Drop((remark.text,)))


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
