"""Text-guided editing with DATE, one interface (`pipe.edit`, `interface.EditingMixin`) over two editors:

- `ddpm`: edit-friendly DDPM inversion (Huberman-Spiegelglas et al., CVPR 2024; `ddpm_inversion.py`) for the
  DDPM-trained families (SD 1.x/2.x, SDXL, PixArt-alpha);
- `flowedit`: FlowEdit (Kulikov et al., 2024; `flowedit.py`), inversion-free, for the rectified-flow families
  (SD3, FLUX).

Defaults per family (`EDIT_DEFAULTS`): the inversion paper's for the DDPM editor (100 DDPM steps, the first 36%
not regenerated, guidance 3.5 for the inversion and 15 for the regeneration, as `pipe.edit`, `date-diffusion
edit` and the benchmark's editing suites use them), FlowEdit's paper settings for SD3 (50 steps, n_max 33, guidance
3.5 / 13.5) and FLUX (28 steps, n_max 24, guidance 1.5 / 5.5). This module imports nothing heavy.
"""

from dataclasses import dataclass

EDIT_STEPS = 100
EDIT_SKIP = 36
SKIP_FRACTION = EDIT_SKIP / EDIT_STEPS
CFG_SRC = 3.5
CFG_TAR = 15.0


@dataclass(frozen=True)
class EditDefaults:
    """editor: `ddpm` or `flowedit`; steps; skip: steps not regenerated at `steps` (FlowEdit: steps - n_max);
    cfg_src, cfg_tar: guidance of the source (inversion) and target branch."""

    editor: str
    steps: int
    skip: int
    cfg_src: float
    cfg_tar: float

    @property
    def skip_fraction(self) -> float:
        return self.skip / self.steps

    def skip_for(self, steps: int) -> int:
        """The default skip for another step count (the same fraction)."""
        return round(self.skip_fraction * steps)


DDPM_EDIT = EditDefaults("ddpm", EDIT_STEPS, EDIT_SKIP, CFG_SRC, CFG_TAR)
FLOWEDIT_SD3 = EditDefaults("flowedit", 50, 50 - 33, 3.5, 13.5)  # FlowEdit's SD3 setting: T 50, n_max 33
FLOWEDIT_FLUX = EditDefaults("flowedit", 28, 28 - 24, 1.5, 5.5)  # FlowEdit's FLUX setting: T 28, n_max 24
EDIT_DEFAULTS = {"sd": DDPM_EDIT, "sdxl": DDPM_EDIT, "pixart": DDPM_EDIT, "sd3": FLOWEDIT_SD3, "flux": FLOWEDIT_FLUX}
