"""Evaluation on the untouched test set: predictions from the saved models
(:mod:`~cifarlab.evaluation.inference`, :mod:`~cifarlab.evaluation.predict`), the metrics and
tables (:mod:`~cifarlab.evaluation.evaluate`), the figures
(:mod:`~cifarlab.evaluation.figures`) and what the networks learned
(:mod:`~cifarlab.evaluation.visualize`).
"""
