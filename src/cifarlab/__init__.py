"""cifarlab: a reproducible small-image classification experiment series on Keras 3."""

__version__ = "0.1.0"
