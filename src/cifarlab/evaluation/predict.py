"""`cifarlab predict`: top-k classes of image files with a saved model.

Images are converted exactly as the training data were (cifarlab.data.images.image_to_array);
class names come from the model's saved metadata, never from a guess.
"""

from __future__ import annotations

import numpy as np

from cifarlab.data.images import load_image_file
from cifarlab.errors import CifarlabError
from cifarlab.evaluation.inference import load_model, predict_proba


def predict_files(images: list[str], model_path: str, top_k: int = 5) -> list[dict]:
    if top_k < 1:
        raise CifarlabError(f"--top-k must be at least 1, got {top_k}")
    x = np.stack([load_image_file(p) for p in images])  # all read before the model loads
    model, meta = load_model(model_path)
    names = meta["class_names"]
    if model.output_shape[-1] != len(names):
        raise CifarlabError(
            f"{model_path}: {model.output_shape[-1]} outputs but {len(names)} class names"
        )
    probs = predict_proba(model, x, tta_flip=meta["config"].get("tta_flip", False))
    k = min(top_k, len(names))
    results = []
    for path, p in zip(images, probs):
        order = np.argsort(-p)[:k]
        results.append(
            {
                "image": str(path),
                "model": str(model_path),
                "top_k": [
                    {"class": names[i], "index": int(i), "probability": float(p[i])} for i in order
                ],
            }
        )
    return results
