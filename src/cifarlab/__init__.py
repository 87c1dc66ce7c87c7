"""cifarlab: a reproducible small-image classification experiment series on Keras 3."""

__version__ = "0.1.0"

import sys as _sys

if "keras" not in _sys.modules:  # Keras fixes its backend when first imported
    from cifarlab.hardware import choose_backend as _choose_backend

    _choose_backend()
