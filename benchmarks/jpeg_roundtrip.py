"""A copy of CIFAR-100 (official python layout) whose every image went through JPEG.

What does the lossy CIFAR-10 copy (../shared/data/cifar10-jpg.tar.gz: baseline JPEG,
quality 75, 4:2:0 chroma subsampling, PIL's defaults) cost a model? No lossless CIFAR-10
exists offline, but lossless CIFAR-100 does: this writes CIFAR-100 with each image
encoded and decoded the same way, in the same files, order and split, so that training
the same recipe on both (``CIFARLAB_DATA_DIR=<out> cifarlab ...`` against
``CIFARLAB_DATA_DIR=../shared/data``) differs only in the pixels.

    python benchmarks/jpeg_roundtrip.py ../shared/data /tmp/c100jpg --quality 75
"""

from __future__ import annotations

import argparse
import io
import pickle
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image


def roundtrip(rows: np.ndarray, quality: int) -> tuple[np.ndarray, float]:
    """``rows`` (N, 3072 as R, G, B planes) through JPEG; returns the decoded rows and
    the mean absolute change per pixel value."""
    images = rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    out = np.empty_like(images)
    for i, img in enumerate(images):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=quality)
        out[i] = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    change = float(np.abs(out.astype(np.int16) - images).mean())
    return out.transpose(0, 3, 1, 2).reshape(len(rows), -1), change


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data_dir", help="folder holding cifar-100-python/ (lossless)")
    p.add_argument("out_dir", help="where to write cifar-100-python/ (JPEG round-tripped)")
    p.add_argument("--quality", type=int, default=75)
    a = p.parse_args(argv)
    src = Path(a.data_dir) / "cifar-100-python"
    dst = Path(a.out_dir) / "cifar-100-python"
    if not (src / "train").is_file():
        print(f"error: no CIFAR-100 in {src}", file=sys.stderr)
        return 2
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src / "meta", dst / "meta")
    for part in ("train", "test"):
        with open(src / part, "rb") as f:
            d = pickle.load(f, encoding="bytes")
        d[b"data"], change = roundtrip(d[b"data"], a.quality)
        with open(dst / part, "wb") as f:
            pickle.dump(d, f, protocol=2)
        print(f"{part}: {len(d[b'data']):,} images, mean |change| {change:.2f} / 255")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
