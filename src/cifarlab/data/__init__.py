"""The data, in the order it flows: dataset archives and image folders read safely
(:mod:`~cifarlab.data.archives`, :mod:`~cifarlab.data.images`), a dataset loaded, cached,
split and normalised (:mod:`~cifarlab.data.datasets`), and the training batches
(:mod:`~cifarlab.data.batches`). The dataset API is named here.
"""

from cifarlab.data.datasets import (
    Dataset,
    Split,
    cache_dir,
    channel_stats,
    dataset_path,
    load_dataset,
    prepare,
    source_checksum,
    split_train_val,
    stratified_subset,
)

__all__ = [
    "Dataset", "Split", "cache_dir", "channel_stats", "dataset_path", "load_dataset",
    "prepare", "source_checksum", "split_train_val", "stratified_subset",
]  # fmt: skip
