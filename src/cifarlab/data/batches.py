"""In-memory arrays fed to Keras in batches, the same way on every backend.

Every ``fit`` of the project (training, the search, the notebooks) takes its training and
validation data from :class:`Batches` instead of handing NumPy arrays to Keras:

- the order of each epoch depends only on the seed and the epoch, so a resumed run sees
  the epochs an uninterrupted one would have seen, on TensorFlow, JAX and torch alike;
- :func:`fit_data` hands them to ``fit`` the fastest way each backend has: under
  TensorFlow as a tf.data pipeline without autotuning (cifarlab.data._tf_data says why: with
  NumPy arrays, a new epoch's first step waited 27-48 s in 5 of the 15 epochs of the
  CIFAR-100 baseline), elsewhere as this PyDataset, gathered by two threads;
- with ``x_mirror`` (inputs computed once for the mirrored images, such as cached VGG16
  features), each epoch shows every image once, as itself or as its mirror image (a fair
  coin per image): flips for free where the inputs cannot be flipped;
- with ``alternate`` too (airbench's alternating flips), the coin is tossed once, in the
  first epoch, and every image is shown mirrored in every other epoch from then on: over
  two epochs each image is seen both ways, fewer repeats than fresh coins give;
- with ``shift`` (airbench's translation), each image of an epoch is cropped from its copy
  reflect-padded by ``shift`` pixels, at an offset drawn uniformly from the
  (2 shift + 1)^2 whole-pixel ones: every output pixel is an input pixel;
- with ``drop_last`` (airbench's), an epoch leaves out its last, partial batch: every
  step trains on a full batch (a small last batch, trained at the full rate just before
  validation, moved the batch-norm statistics that validation uses: RESULTS.md);
- with ``low_res`` (size, epochs), the batches of the first ``epochs`` epochs are shrunk
  to size x size pixels after their flips and shifts (:func:`downsample`: area averages,
  the same float32 numbers on every backend), the later ones stay as they are.
"""

from __future__ import annotations

import keras
import numpy as np

from cifarlab.config import steps_per_epoch

#: Threads that gather batches. Two keep the next batch ready on any machine; a gather
#: of a batch from memory costs far less than a training step.
WORKERS = 2


def one_hot(y: np.ndarray, n: int) -> np.ndarray:
    return np.eye(n, dtype="float32")[y]


def batch_rows(order: np.ndarray, i: int, batch_size: int) -> np.ndarray:
    """Rows of batch ``i`` of an epoch shown in ``order`` (sorted: a gather reads forward)."""
    return np.sort(order[i * batch_size : (i + 1) * batch_size])


class Batches(keras.utils.PyDataset):
    """``(x, y)`` batches of arrays held in memory.

    ``seed``: None keeps the order (validation, prediction); a number shuffles every epoch
    with ``numpy.random.default_rng([seed, epoch])``. ``first_epoch``: the epoch a resumed
    run starts at. ``y`` may be None (inputs only).
    """

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray | None,
        batch_size: int,
        seed: int | None = None,
        first_epoch: int = 0,
        x_mirror: np.ndarray | None = None,
        alternate: bool = False,
        shift: int = 0,
        drop_last: bool = False,
        low_res: tuple[int, int] = (0, 0),
    ):
        super().__init__(workers=WORKERS, use_multiprocessing=False, max_queue_size=4)
        if batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {batch_size}")
        if y is not None and len(x) != len(y):
            raise ValueError(f"{len(x)} inputs but {len(y)} targets")
        if x_mirror is not None and x_mirror.shape != x.shape:
            raise ValueError("the mirror images' inputs must have the images' shape")
        if x_mirror is not None and seed is None:
            raise ValueError("mirror images are drawn at random: give a seed")
        if alternate and x_mirror is None:
            raise ValueError("alternating flips need the mirror images' inputs (x_mirror)")
        if shift and (seed is None or x.ndim != 4 or min(x.shape[1:3]) <= shift):
            raise ValueError("shifts are drawn at random on images (N, H, W, C): give a seed")
        self.alternate, self.shift, self.drop_last = alternate, int(shift), drop_last
        self.low_res, self.low_res_epochs = (int(v) for v in low_res)
        if self.low_res_epochs and (x.ndim != 4 or self.low_res >= min(x.shape[1:3])):
            raise ValueError(f"low_res {self.low_res}: smaller than the images (N, H, W, C)")
        self.x, self.y, self.x_mirror = x, y, x_mirror
        # shifted crops are cut from copies reflect-padded once (a row's slices, no
        # per-pixel gather: BENCHMARKS.md, "the input pipeline against GPU training rates")
        self.padded = [reflect_pad(a, self.shift) for a in (x, x_mirror) if a is not None]
        self.batch_size, self.seed = batch_size, seed
        self.epoch = first_epoch
        self._draw()

    def epoch_order(self, epoch: int) -> tuple[np.ndarray, np.ndarray | None]:
        """The rows of ``epoch`` in the order it shows them, and which are mirrored."""
        n = len(self.x)
        if self.seed is None:
            return np.arange(n), None
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(n)
        if self.x_mirror is None:
            return order, None
        if self.alternate and epoch > 0:  # the first epoch's coins, flipped every other epoch
            return order, self.epoch_order(0)[1] ^ bool(epoch % 2)
        return order, rng.random(n) < 0.5

    def epoch_shifts(self, epoch: int) -> np.ndarray | None:
        """Each row's (down, right) offset in ``epoch``, in [-shift, shift] (None: none).
        Their own random stream: the order and the mirror choices do not depend on them."""
        if not self.shift:
            return None
        rng = np.random.default_rng([self.seed, epoch, 1])
        return rng.integers(-self.shift, self.shift + 1, size=(len(self.x), 2))

    def shrink_weights(self) -> tuple[np.ndarray, np.ndarray]:
        """The area weights (:func:`area_matrix`) that shrink the rows and the columns of
        these images to ``low_res`` pixels."""
        h, w = self.x.shape[1:3]
        return area_matrix(h, self.low_res), area_matrix(w, self.low_res)

    def shrunk(self, epoch: int) -> bool:
        """Whether ``epoch``'s batches are shrunk to ``low_res`` pixels."""
        return epoch < self.low_res_epochs

    def _draw(self) -> None:
        self.order, self.mirrored = self.epoch_order(self.epoch)
        self.shifts = self.epoch_shifts(self.epoch)

    def __len__(self) -> int:
        return steps_per_epoch(len(self.x), self.batch_size, self.drop_last)

    def indices(self, i: int) -> np.ndarray:
        """The rows of batch ``i`` of the current epoch."""
        return batch_rows(self.order, i, self.batch_size)

    def crops(self, idx: np.ndarray) -> np.ndarray:
        """Rows ``idx`` of the current epoch, each (or its mirror image, where the epoch
        mirrors it) moved by its whole-pixel ``(down, right)`` shift, the border
        reflected: a slice of the padded copy per image."""
        h, w = self.x.shape[1:3]
        out = np.empty((len(idx), h, w, *self.x.shape[3:]), self.x.dtype)
        top, left = (self.shift - self.shifts[idx]).T.tolist()
        mirror = np.zeros(len(idx), bool) if self.mirrored is None else self.mirrored[idx]
        for k, (row, t, c, m) in enumerate(zip(idx.tolist(), top, left, mirror.tolist())):
            out[k] = self.padded[m][row, t : t + h, c : c + w]
        return out

    def __getitem__(self, i: int):
        if not 0 <= i < len(self):
            raise IndexError(f"batch {i} of {len(self)}")
        idx = self.indices(i)
        if self.shifts is not None:
            batch = self.crops(idx)
        else:
            batch = self.x[idx]
            if self.mirrored is not None:  # one gather, then the mirrored rows replaced
                pick = self.mirrored[idx]
                batch[pick] = self.x_mirror[idx[pick]]
        if self.shrunk(self.epoch):
            batch = downsample(batch, self.low_res)
        return batch if self.y is None else (batch, self.y[idx])

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self._draw()

    def plan(self, epochs: int = 1) -> tuple[np.ndarray, ...]:
        """``epochs`` epochs from the current one on, batch after batch: the rows of each
        batch (zero-padded to the batch size), its size, which rows are mirrored, their
        shifts (zeros without) and whether it is shrunk (:meth:`shrunk`)."""
        bs, steps = self.batch_size, len(self)
        rows = np.zeros((epochs * steps, bs), dtype=np.int64)
        sizes = np.zeros(epochs * steps, dtype=np.int64)
        flips = np.zeros((epochs * steps, bs), dtype=bool)
        offsets = np.zeros((epochs * steps, bs, 2), dtype=np.int64)
        shrunk = np.repeat([self.shrunk(self.epoch + e) for e in range(epochs)], steps)
        for e in range(epochs):
            order, mirrored = self.epoch_order(self.epoch + e)
            shifts = self.epoch_shifts(self.epoch + e)
            for i in range(steps):
                idx = batch_rows(order, i, bs)
                rows[e * steps + i, : len(idx)] = idx
                sizes[e * steps + i] = len(idx)
                if mirrored is not None:
                    flips[e * steps + i, : len(idx)] = mirrored[idx]
                if shifts is not None:
                    offsets[e * steps + i, : len(idx)] = shifts[idx]
        return rows, sizes, flips, offsets, shrunk


def area_matrix(size: int, out: int) -> np.ndarray:
    """(out, size) weights that shrink ``size`` pixels to ``out``: each output pixel the
    average of the input span it covers, the pixels cut by its edges in proportion."""
    edges = np.arange(out + 1) * size / out
    pixel = np.arange(size)
    overlap = np.minimum(edges[1:, None], pixel + 1) - np.maximum(edges[:-1, None], pixel)
    return (np.clip(overlap, 0, None) * out / size).astype(np.float32)


def downsample(batch: np.ndarray, size: int) -> np.ndarray:
    """``batch`` (B, H, W, C) shrunk to (B, size, size, C) float32 by area averages
    (:func:`area_matrix` along the height, then the width)."""
    rows, cols = area_matrix(batch.shape[1], size), area_matrix(batch.shape[2], size)
    x = np.einsum("oh,bhwc->bowc", rows, batch.astype(np.float32))
    return np.einsum("pw,bowc->bopc", cols, x)


def reflect_pad(x: np.ndarray, shift: int) -> np.ndarray | None:
    """Images ``x`` (N, H, W, C) with ``shift`` pixels on each side reflected (NumPy's and
    TensorFlow's "reflect": the edge pixel is not repeated); None without shifts."""
    if not shift:
        return None
    return np.pad(x, ((0, 0), (shift, shift), (shift, shift), (0, 0)), mode="reflect")


def training_batches(x, y, cfg, seed: int, first_epoch: int = 0, x_mirror=None) -> Batches:
    """The training split as :class:`Batches` for the config ``cfg``: one-hot targets,
    its batch size, and with ``cfg.flip_mode == "alternate"`` the mirror images made
    here (the model then has no flip layer, cifarlab.models); with ``cfg.pixel_shifts``
    the whole-pixel shifts of up to ``cfg.translate`` of the size (the model then has no
    translation layer); with ``cfg.drop_last`` only full batches; with ``cfg.low_res``
    the first ``cfg.low_res_epochs`` epochs shrunk."""
    alternate = cfg.flip and cfg.flip_mode == "alternate"
    shift = batch_shift(cfg, x.shape[1])
    if alternate and x_mirror is None:
        x_mirror = np.ascontiguousarray(x[:, :, ::-1])
    targets = one_hot(y, cfg.stats.num_classes)
    return Batches(
        x, targets, cfg.batch_size, seed, first_epoch, x_mirror, alternate, shift, cfg.drop_last,
        (cfg.low_res, cfg.low_res_epochs),
    )  # fmt: skip


def batch_shift(cfg, size: int = 32) -> int:
    """The whole pixels the batches shift images of ``size`` by (0: none, or the model
    interpolates its own shifts)."""
    return round(cfg.translate * size) if cfg.pixel_shifts else 0


def fit_data(train: Batches, val: Batches | None, epochs: int) -> dict:
    """``fit``'s data arguments for training on ``train`` up to ``epochs`` (from its
    current epoch on) and validating on ``val``: tf.data pipelines under TensorFlow
    (cifarlab.data._tf_data, one iterator for the whole training), the PyDatasets elsewhere."""
    if keras.backend.backend() == "tensorflow":
        from cifarlab.data import _tf_data

        return dict(
            x=_tf_data.dataset(train, epochs - train.epoch),
            steps_per_epoch=len(train),
            validation_data=None if val is None else _tf_data.dataset(val),
            shuffle=False,  # the pipeline holds each epoch's seeded order
        )
    return dict(x=train, validation_data=val, shuffle=False)
