"""Text-guided editing. The defaults of the edit-friendly DDPM inversion paper (Huberman-Spiegelglas et al., CVPR
2024), used by `pipe.edit`, `date-diffusion edit` and the benchmark's editing suites: 100 DDPM steps, the first 36%
of them not regenerated, guidance 3.5 for the inversion and 15 for the regeneration."""

EDIT_STEPS = 100
EDIT_SKIP = 36
SKIP_FRACTION = EDIT_SKIP / EDIT_STEPS
CFG_SRC = 3.5
CFG_TAR = 15.0
