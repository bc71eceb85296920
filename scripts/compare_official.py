"""Compare the project's OpenCLIP-format rewards and HPS with what the official code recorded
(`scripts/record_official.py`): token ids, preprocessed pixels, and the cosine of every (prompt, image) pair.

    python scripts/compare_official.py tests/official            # the tests' records (tiny models)
    python scripts/compare_official.py /tmp/fresh --markdown      # a full-size record, as a markdown table

Runs in the project's environment (no open_clip, no torchvision): the weights and images are rebuilt from the
record (`tests/official/inputs.py`) and loaded through the project's own loading code. Prints, per model, the
largest |ours - official| cosine for each image shape (over all prompts) and for each prompt (over all shapes).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from official.ours import clip_tokenizer, compare_models, images01, load_record  # noqa: E402


def token_report(record, tokenizer) -> list[str]:
    from date_diffusion.rewards.openclip import openclip_tokenize

    ours = openclip_tokenize(tokenizer, record["prompts"], 77).tolist()
    lines = []
    for source, ids in record["tokens"].items():
        same = sum(a == b for a, b in zip(ours, ids))
        lines.append(f"token ids equal to {source}'s for {same} of {len(ids)} prompts")
    return lines


def pixel_report(record, pixels) -> list[str]:
    from date_diffusion.rewards.openclip import ResizeCropNormalizer, ResizePadNormalizer

    lines = []
    for kind, pre in (("hps", ResizePadNormalizer(224)), ("openclip", ResizeCropNormalizer(224))):
        for (h, w), img in zip(record["shapes"], images01(record)):
            ref = pixels.get(f"{kind}/{h}x{w}")
            if ref is not None:
                diff = np.abs(pre(img)[0].numpy() - ref)
                lines.append(f"{kind} pixels {w}x{h}: max |ours - official| {diff.max():.4f}, mean {diff.mean():.5f}")
    return lines


def table(comparisons, record, markdown: bool) -> list[str]:
    shapes = [f"{w}x{h}" for h, w in record["shapes"]]
    rows = [["model", "architecture", *shapes, "all"]]
    for c in comparisons:
        rows.append([c.name, c.arch, *(f"{v:.1e}" for v in c.diff.max(axis=0)), f"{c.diff.max():.1e}"])
    prompts = [["prompt", *(c.name for c in comparisons)]]
    for i, prompt in enumerate(record["prompts"]):
        shown = prompt if len(prompt) <= 48 else prompt[:45] + "..."
        prompts.append([repr(shown), *(f"{c.diff[i].max():.1e}" for c in comparisons)])
    out = []
    for t in (rows, prompts):
        if markdown:
            out += ["| " + " | ".join(t[0]) + " |", "|" + "---|" * len(t[0])]
            out += ["| " + " | ".join(r) + " |" for r in t[1:]]
        else:
            widths = [max(len(r[k]) for r in t) for k in range(len(t[0]))]
            out += ["  ".join(cell.ljust(wd) for cell, wd in zip(r, widths)) for r in t]
        out.append("")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("records", nargs="+", help="folders written by scripts/record_official.py")
    p.add_argument("--markdown", action="store_true", help="tables in markdown")
    args = p.parse_args(argv)
    tokenizer = clip_tokenizer()
    for folder in args.records:
        record, pixels = load_record(folder)
        print(f"# {folder}: official {', '.join(f'{k} {v}' for k, v in record['versions'].items())}\n")
        for line in token_report(record, tokenizer) + pixel_report(record, pixels):
            print(line)
        print("\nlargest |ours - official| cosine (HPS: score / 100), per image shape (W x H) and per prompt:\n")
        print("\n".join(table(compare_models(record, tokenizer), record, args.markdown)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
