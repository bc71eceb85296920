"""The web interface (`date-diffusion ui`): the same seed with fixed embeddings and with DATE, side by side,
with what DATE did at every update; and a viewer for benchmark runs. Needs the `ui` extra (Gradio)."""
