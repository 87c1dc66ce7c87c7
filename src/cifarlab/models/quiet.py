"""``model.predict`` without TensorFlow's "retracing" warning.

A series predicts one model after another (the plan's timing, the evaluation): each gets
its own predict function, as it should, and TensorFlow's logger warns of retracing after
five. Not the reader's concern; on JAX and torch nothing is logged either way.
"""

from __future__ import annotations

import logging

import numpy as np


def predict(model, x: np.ndarray, batch_size: int) -> np.ndarray:
    """``model.predict(x, batch_size=batch_size, verbose=0)``, that warning left out."""
    tf_log = logging.getLogger("tensorflow")
    level = tf_log.level
    tf_log.setLevel(logging.ERROR)
    try:
        return model.predict(x, batch_size=batch_size, verbose=0)
    finally:
        tf_log.setLevel(level)
