"""What a GPU is handed on this host: the airbench batches' images/s alone and through a
JAX ``fit`` whose step costs almost nothing (BENCHMARKS.md, "the input pipeline against
GPU training rates"; issue 31).

    KERAS_BACKEND=jax python benchmarks/host_pipeline.py

Prints one JSON line: the batches alone (gather, alternating flips, 2-pixel
reflect-padded crops, batch 512, uint8; one thread, the best of 3 passes over 102,400
random images), the rate ``fit`` consumes them at (its PyDataset workers and Keras'
loop; the last of 3 epochs timed), and the machine's float32 matmul rate beside them.
"""

from __future__ import annotations

import json
import time

import keras
import numpy as np

from cifarlab import hardware
from cifarlab.data.batches import Batches


class EpochClock(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds = time.perf_counter() - self.start


def main(images: int = 102_400, batch_size: int = 512) -> dict:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (images, 32, 32, 3), dtype=np.uint8)
    y = keras.utils.to_categorical(np.arange(images) % 100, 100)
    seq = Batches(
        x, y, batch_size, 0, x_mirror=x[:, :, ::-1].copy(), alternate=True, shift=2,
        drop_last=True,
    )  # fmt: skip
    shown = len(seq) * batch_size
    best = 0.0
    for _ in range(3):
        start = time.perf_counter()
        for i in range(len(seq)):
            seq[i]
        best = max(best, shown / (time.perf_counter() - start))
    model = keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(100, activation="softmax"),
        ]
    )
    model.compile("sgd", "categorical_crossentropy")
    clock = EpochClock()
    model.fit(seq, epochs=3, verbose=0, callbacks=[clock], shuffle=False)
    return {
        "backend": keras.backend.backend(),
        "batches_images_per_s_one_thread": round(best),
        "fit_images_per_s": round(shown / clock.seconds),
        "matmul_gflops": round(hardware.matmul_gflops(), 1),
    }


if __name__ == "__main__":
    print(json.dumps(main()), flush=True)
