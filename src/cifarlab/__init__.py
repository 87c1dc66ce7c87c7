"""cifarlab: a reproducible small-image classification experiment series on Keras 3.

Importing it changes nothing in the environment: the command line chooses the Keras
backend explicitly (cifarlab.backend).
"""

__version__ = "0.1.0"
