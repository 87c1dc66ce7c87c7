"""When each epoch's first step can start, per input path: what the library's batches save
against NumPy arrays handed to ``fit`` (BENCHMARKS.md, "epoch starts")."""

from __future__ import annotations

import time

import keras
import numpy as np

from cifarlab.data.batches import Batches, fit_data


def epoch_starts(epochs: int = 5, steps: int = 300, step_s: float = 0.1) -> dict:
    """Seconds from each epoch's start to its first step's end, per input path, on the
    backend this process runs.

    "arrays": NumPy arrays handed to ``fit`` (under TensorFlow, Keras builds an autotuned
    tf.data pipeline from them); "batches": the same arrays as the library trains on them
    (:func:`cifarlab.data.batches.fit_data`). The model is so small that a step costs nothing; a fixed
    pause after every step (``step_s``) gives epochs as long as real ones (the delay grows
    with the epoch's length), so the row measures the input path alone.
    """

    class Clock(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.waits: list[float] = []

        def on_epoch_begin(self, epoch, logs=None):
            self.t0, self.first = time.perf_counter(), True

        def on_train_batch_end(self, batch, logs=None):
            if self.first:
                self.waits.append(time.perf_counter() - self.t0)
                self.first = False
            time.sleep(step_s)

    rng = np.random.default_rng(0)
    bs = 128
    x = rng.integers(0, 256, (steps * bs, 32, 32, 3), dtype=np.uint8)
    y = keras.utils.to_categorical(rng.integers(0, 10, len(x)), 10)
    xv, yv = x[: 10 * bs], y[: 10 * bs]
    waits = {}
    for path in ("arrays", "batches"):
        keras.utils.set_random_seed(0)
        model = keras.Sequential(
            [
                keras.Input((32, 32, 3)),
                keras.layers.Rescaling(1 / 255),
                keras.layers.Conv2D(4, 3, strides=4),
                keras.layers.GlobalAveragePooling2D(),
                keras.layers.Dense(10, activation="softmax"),
            ]
        )
        model.compile("sgd", "categorical_crossentropy")
        clock = Clock()
        if path == "arrays":
            data = dict(x=x, y=y, batch_size=bs, validation_data=(xv, yv), shuffle=True)
        else:
            data = fit_data(Batches(x, y, bs, seed=0), Batches(xv, yv, bs), epochs)
        model.fit(**data, epochs=epochs, callbacks=[clock], verbose=0)
        waits[path] = clock.waits
    return {
        "backend": keras.backend.backend(),
        "epochs": epochs,
        "steps_per_epoch": steps,
        "step_pause_s": step_s,
        "waits_s": waits,
    }
