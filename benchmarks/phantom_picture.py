"""docs/phantom_vs_real.png: phantom slices beside a real CT's, in one soft-tissue window.

A picture for people, not a measure: the real scan (``--reference-scan``, e.g. ../shared/realct) is
shown as it is and never feeds the phantom. Each phantom case is drawn at 512 x 512 with its own
random acquisition; its rows show the level where its spleen is largest and one 40 mm lower.

    python benchmarks/phantom_picture.py --reference-scan ../shared/realct --out docs/phantom_vs_real.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

WINDOW = (-160.0, 240.0)  # W400 / L40


def _axial(volume: np.ndarray, k: int) -> np.ndarray:
    """Slice k of an RAS (x, y, z) volume in radiological view (patient right on the left, anterior up)."""
    return np.fliplr(np.flipud(volume[:, :, k].T))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reference-scan", default=str(Path(__file__).resolve().parents[2] / "shared" / "realct"))
    p.add_argument("--out", default="docs/phantom_vs_real.png")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 9])
    p.add_argument("--slices", type=int, default=96, help="phantom slices per case (its spacing is drawn)")
    a = p.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from keras_unet3plus.data.phantom import generate_case
    from keras_unet3plus.workflows.reference_scan import find_reference_scan, read_scan

    scan, _ = find_reference_scan(a.reference_scan)
    real = read_scan(scan)
    nz = real.image.shape[2]
    columns = [("real CT", [(_axial(real.image, k), f"z index {k}") for k in (nz // 4, 3 * nz // 4)])]
    for seed in a.seeds:
        c = generate_case(seed, shape=(512, 512, a.slices), organ="spleen")
        area = c.spleen.sum(axis=(0, 1))
        k = int(area.argmax())
        k2 = max(0, k - int(round(40 / c.spacing[2])))
        hu = c.hu.astype(np.float32)
        head = f"phantom seed {seed} ({c.phase}), {c.spacing[0]:.2f} mm, slice {c.spacing[2]:.1f} mm"
        columns.append((head, [(_axial(hu, k), f"z index {k}"), (_axial(hu, k2), f"z index {k2} (40 mm lower)")]))
    fig, axes = plt.subplots(2, len(columns), figsize=(3.6 * len(columns), 7.4))
    for j, (head, rows) in enumerate(columns):
        for i, (img, sub) in enumerate(rows):
            ax = axes[i, j]
            ax.imshow(np.clip(img, *WINDOW), cmap="gray", vmin=WINDOW[0], vmax=WINDOW[1])
            ax.set_title(f"{head}\n{sub}" if i == 0 else sub, fontsize=8)
            ax.axis("off")
    fig.suptitle(
        "Window W400/L40, radiological view (patient right on the left). Left: real CT; right: phantom", fontsize=9
    )
    fig.tight_layout()
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(a.out, dpi=80)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
