"""Draw what the few-shot training augmentations do to a few built-in glyphs.

    .venv/bin/python scripts/plot_augmentations.py docs/img/augment_examples.png

Row 1: the original glyphs; rows 2-5: each distorted with the settings of
benchmarks/fewshot_omniglot.sh (``--augment-shift 2 --augment-rotate 15 --augment-scale 0.2
--augment-shear 15``), a new random draw per row.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mtl.data import make_glyphs, random_affine, random_shift  # noqa: E402


def main(out: str) -> None:
    data = make_glyphs(8, samples_per_class=1, seed=0)
    images = data.images[:8]
    g = torch.Generator().manual_seed(0)
    rows = [images] + [random_shift(random_affine(images, g, degrees=15, scale=0.2, shear=15), 2, g)
                       for _ in range(4)]
    fig, axes = plt.subplots(len(rows), len(images), figsize=(len(images) * 0.9, len(rows) * 0.95))
    for r, row in enumerate(rows):
        for c, img in enumerate(row):
            ax = axes[r, c]
            ax.imshow(img[0].numpy(), cmap="gray_r", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel("original" if r == 0 else f"draw {r}", fontsize=8)
    fig.suptitle("rotate 15, scale 0.2, shear 15, shift 2 (built-in glyphs)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "augment_examples.png")
