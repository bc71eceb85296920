"""Text-guided editing with DATE: the two editors `pipe.edit` runs (`pipelines/edit.py`, the editing template):

- `ddpm`: edit-friendly DDPM inversion (Huberman-Spiegelglas et al., CVPR 2024; `ddpm_inversion.py`) for the
  DDPM-trained families (SD 1.x/2.x, SDXL, PixArt-alpha);
- `flowedit`: FlowEdit (Kulikov et al., 2024; `flowedit.py`), inversion-free, for the rectified-flow families
  (SD3, FLUX, FLUX.2, Z-Image, Chroma).

Defaults per family (each `families.Family` record's `edit`; `EDIT_DEFAULTS` for the built-in ones): the
inversion paper's for the DDPM editor (100 DDPM steps, the first 36% not regenerated, guidance 3.5 for the
inversion and 15 for the regeneration, as `pipe.edit`, `date-diffusion edit` and the benchmark's editing suites
use them), FlowEdit's paper settings for SD3 (50 steps, n_max 33, guidance 3.5 / 13.5) and FLUX (28 steps, n_max
24, guidance 1.5 / 5.5), and for Z-Image the SD3 setting in Z-Image's guidance convention (2.5 / 12.5;
untested). This module imports nothing heavy.
"""

from date_diffusion.families import (  # noqa: F401  (the editing vocabulary, re-exported)
    CFG_SRC,
    CFG_TAR,
    DDPM_EDIT,
    EDIT_SKIP,
    EDIT_STEPS,
    FAMILIES,
    FLOWEDIT_FLUX,
    FLOWEDIT_SD3,
    FLOWEDIT_Z_IMAGE,
    SKIP_FRACTION,
    EditDefaults,
)

EDIT_DEFAULTS = {f.name: f.edit for f in FAMILIES if f.edit is not None}  # each built-in record's `edit`
