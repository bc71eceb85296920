"""A family's conditioning tensors packed into one [B, N] tensor, so the sampling loop adapts one tensor.

Each part (token embeddings, pooled embedding, added time ids, attention mask, ...) keeps its stock diffusers
name, so callbacks see and replace the tensors exactly as the stock pipeline hands them out.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def pack(*tensors: torch.Tensor) -> torch.Tensor:
    """[B, ...] tensors -> one [B, N] tensor (DATE's per-sample norm then spans all of them)."""
    return torch.cat([t.flatten(1) for t in tensors], dim=1)


def unpack(packed: torch.Tensor, shapes: list[tuple[int, ...]]) -> list[torch.Tensor]:
    """Inverse of `pack` for per-sample `shapes` (without the batch dimension); any batch size."""
    out, start = [], 0
    for shape in shapes:
        n = int(torch.tensor(shape).prod()) if shape else 1
        out.append(packed[:, start : start + n].reshape(packed.shape[0], *shape))
        start += n
    return out


@dataclass
class PackedConditioning:
    cond: torch.Tensor  # [B, N]: every per-sample conditioning tensor the denoiser needs, flattened
    uncond: torch.Tensor | None
    mask: torch.Tensor | None  # [1, N]: 1 where DATE adapts; None = everything
    shapes: list[tuple[int, ...]]
    names: tuple[str, ...] = ()  # the stock callback name of each part, e.g. ("prompt_embeds", "add_text_embeds")
    negative_names: tuple[str | None, ...] = ()  # the stock name of each negative part (None: not exposed)
    concat_cfg: bool = True  # stock callbacks see `cat([negative, positive])` under classifier-free guidance
    uncond_shapes: list[tuple[int, ...]] | None = None  # the negative parts' shapes where they differ (FLUX true CFG)

    def parts(self, packed: torch.Tensor, negative: bool = False) -> list[torch.Tensor]:
        """The parts of a packed conditional (or, `negative=True`, unconditional) tensor."""
        return unpack(packed, self.uncond_shapes if negative and self.uncond_shapes is not None else self.shapes)

    def callback_view(self, latents, cond, uncond) -> dict[str, torch.Tensor]:
        """The tensors a stock pipeline of the family hands to `callback_on_step_end`, by name."""
        view = {"latents": latents}
        negatives = self.parts(uncond, negative=True) if uncond is not None else [None] * len(self.shapes)
        for name, neg_name, pos, neg in zip(self.names, self.negative_names, self.parts(cond), negatives):
            view[name] = torch.cat([neg, pos]) if neg is not None and self.concat_cfg else pos
            if neg_name is not None and neg is not None:
                view[neg_name] = neg
        return view

    def apply_callback(self, view: dict, returned: dict, cond, uncond):
        """(cond, uncond) after a callback returned `returned` for `view`: every tensor it replaced takes effect;
        a replaced `[negative; positive]` tensor of twice the batch is split back into its halves."""
        positives = self.parts(cond)
        negatives = self.parts(uncond, negative=True) if uncond is not None else None
        for k, (name, neg_name) in enumerate(zip(self.names, self.negative_names)):
            new = returned.get(name, view.get(name))
            if name in view and new is not view[name]:
                if negatives is not None and self.concat_cfg and new.shape[0] == 2 * positives[k].shape[0]:
                    negatives[k], positives[k] = new.chunk(2)
                else:
                    positives[k] = new
            if (
                negatives is not None
                and neg_name in view
                and returned.get(neg_name, view[neg_name]) is not view[neg_name]
            ):
                negatives[k] = returned[neg_name]
        return pack(*positives), (pack(*negatives) if negatives is not None else None)


def pack_conditioning(
    cond_parts, uncond_parts, adapted: list[bool], names=(), negative_names=None, concat_cfg: bool = True
) -> PackedConditioning:
    """Pack the conditioning tensors (tokens, pooled embedding, attention mask, ...) so the loop adapts one tensor;
    `adapted[k]` says whether DATE may move part k (the norm then spans exactly the adapted parts)."""
    cond = pack(*cond_parts)
    uncond = pack(*uncond_parts) if uncond_parts is not None else None
    mask = None
    if not all(adapted):
        mask = torch.cat(
            [
                torch.full((1, p[0].numel()), float(a), dtype=cond.dtype, device=cond.device)
                for p, a in zip(cond_parts, adapted)
            ],
            dim=1,
        )
    names = tuple(names) or tuple(f"part_{k}" for k in range(len(cond_parts)))
    negative_names = tuple(negative_names) if negative_names is not None else (None,) * len(names)
    shapes = [tuple(p.shape[1:]) for p in cond_parts]
    uncond_shapes = [tuple(p.shape[1:]) for p in uncond_parts] if uncond_parts is not None else None
    uncond_shapes = uncond_shapes if uncond_shapes != shapes else None
    return PackedConditioning(cond, uncond, mask, shapes, names, negative_names, concat_cfg, uncond_shapes)
