"""Write scikit-learn's handwritten digits (1,797 8x8 images, shipped inside scikit-learn)
as PNG files in one folder per site, one subfolder per digit: `data/site-<k>/<digit>/<i>.png`.

The digits are split across 5 sites non-IID: each digit's images are divided among the sites
in proportions drawn from Dirichlet(0.3) (seed 0), so each site sees a few digits often and
the others rarely, as hospitals or schools with different populations do.

    python examples/digits_images/prepare_data.py [--sites 5] [--alpha 0.3] [--out DIR]
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

HERE = Path(__file__).resolve().parent


def write_sites(out: Path, sites: int = 5, alpha: float = 0.3, seed: int = 0) -> dict[str, int]:
    """Write the image folders; returns the images per site."""
    digits = load_digits()
    rng = np.random.default_rng(seed)
    owner = np.empty(len(digits.target), dtype=int)
    for label in np.unique(digits.target):
        idx = rng.permutation(np.flatnonzero(digits.target == label))
        shares = rng.dirichlet([alpha] * sites)
        cuts = (np.cumsum(shares)[:-1] * len(idx)).astype(int)
        for site, part in enumerate(np.split(idx, cuts)):
            owner[part] = site
    if out.exists():
        shutil.rmtree(out)
    counts = {}
    for site in range(sites):
        mine = np.flatnonzero(owner == site)
        counts[f"site-{site}"] = len(mine)
        for i in mine:
            folder = out / f"site-{site}" / str(digits.target[i])
            folder.mkdir(parents=True, exist_ok=True)
            pixels = np.round(digits.images[i] * 255 / 16).astype(np.uint8)  # 0..16 -> 0..255
            Image.fromarray(pixels).save(folder / f"{i}.png")
    return counts


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sites", type=int, default=5)
    p.add_argument("--alpha", type=float, default=0.3)
    p.add_argument("--out", type=Path, default=HERE / "data")
    args = p.parse_args()
    counts = write_sites(args.out, args.sites, args.alpha)
    print(f"wrote {sum(counts.values())} images to {args.out}: {counts}")


if __name__ == "__main__":
    main()
