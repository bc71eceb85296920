"""Train every toy-world model from scratch: tokenizer, two CLIPs, VAE, UNet; then assemble the pipeline folder.

Stages run in order and each is resumable: a stage writes a checkpoint (safetensors + JSON) every
`checkpoint_every` steps and a `done` marker at the end, and data for step `k` is drawn from an RNG seeded by
(seed, stage, k), so a resumed run sees exactly the batches an uninterrupted one would have seen.

Output layout of `--out DIR`:
  DIR/pipeline/      Stable Diffusion pipeline folder (tokenizer, text_encoder, vae, unet, scheduler)
  DIR/clip/          toy CLIP used as the reward (CLIPModel + tokenizer)
  DIR/clip-eval/     independently trained toy CLIP, for evaluation only
  DIR/work/          checkpoints, logs (JSON lines), cached latents

Modules: `config` (TrainConfig, the stage names), `data` (renders as tensors, per-step RNGs), `runner` (the
checkpointed optimisation loop), one module per trained model (`clip`, `noise_aware_clip`, `vae`, `latents`,
`tiny_decoder`, `unet`), `assemble` (the pipeline folder), `recipe` (every stage in order) and `export` (the
completeness check, the quality gate and the copy into the package).
"""
